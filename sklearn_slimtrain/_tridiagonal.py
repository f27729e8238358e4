"""A slimTik step without memory through a tridiagonal reduction (CPU, LAPACK).

Pure math on NumPy arrays: arrays in, a :class:`~sklearn_slimtrain._slimtik.StepResult`
of new arrays out, inputs never mutated, no scikit-learn import.  It computes the
same step as :func:`sklearn_slimtrain._slimtik.slimtik_update` with
``memory_gram=None`` (the default ``memory_depth=0``) for a head with few
targets, at a fraction of the cost: the solver uses it on the CPU, where LAPACK's
pieces are reachable through SciPy; on an accelerator the eigendecomposition
path stays on the device.

Notes
-----
Without memory the step's matrix is the batch's own Gram matrix ``G = A^T A``
(``p x p``, rows of ``A`` divided by ``sqrt(n_batch)``).  Instead of the
eigendecomposition ``G = V diag(d) V^T``, one Householder reduction
``G = Z T Z^T`` (LAPACK ``sytrd``: ``T`` symmetric tridiagonal, ``Z`` orthogonal
and kept as ``p - 1`` reflectors) serves every candidate ridge.  With
``c = Z^T A^T R`` and ``w = Z^T W_{k-1}``, the step (3.3) for a cumulative ridge
``S = S_{k-1} + Lambda`` is

.. math::

    W_k(S) - W_{k-1} = Z x(S),\\qquad (T + S I)\\, x(S) = c - \\Lambda w,

a tridiagonal system: ``O(p t)`` per candidate.  Since ``A^T A = G``, the
residual on the batch is

.. math::

    \\|A W_k(S) - B\\|_F^2 = \\|R\\|_F^2 - 2\\, c^T x + x^T T x,

with ``x^T T x = sum_i T_ii x_i^2 + 2 sum_i T_{i,i+1} x_i x_{i+1}`` formed
directly (no difference of large terms), and the trace of the influence matrix
is ``tr(A (G + S I)^{-1} A^T) = sum_j d_j / (d_j + S)`` with ``d`` the
eigenvalues of ``T`` (LAPACK ``sterf``, root-free QL: ``O(p^2)``, no vectors).
The sGCV function (3.4) is then the one of :mod:`sklearn_slimtrain._sgcv`,
``b t ||A W_k(S) - B||^2 / (b t - t sum_j d_j/(d_j+S))^2``, and the ridge rule
(global grid, step bound, ties to the larger ridge) is the eigendecomposition
step's, :func:`sklearn_slimtrain._slimtik.choose_ridge`.  All candidates are solved
by one call of LAPACK's ``gtsv`` on the block-diagonal system that stacks the
``c`` shifted tridiagonal matrices (a zero off-diagonal between blocks, so no
pivot crosses from one candidate to the next).

Cost: the reduction is ``4 p^3 / 3`` flops; the eigendecomposition adds the
eigenvectors of ``T`` and their back-transformation (LAPACK's ``syevd`` took about
4x the time of the blocked ``sytrd`` at ``p = 257`` on the project's CPU, one
thread: 8.2-9.4 against 2.1-2.2 ms), and the candidates cost ``O(c p t)`` instead
of ``O(c p^2)``.  With many targets the candidates' solves dominate, which is why
the solver keeps the eigendecomposition there (``TRIDIAGONAL_WEIGHTS_PER_TARGET``
in :mod:`sklearn_slimtrain._solver`).  Two
differences from the eigendecomposition path, both at the rounding level: the
eigenvalues enter the trace clipped at zero as there, but the solves use ``T``
itself; and the guard against unresolved residuals (see
:func:`sklearn_slimtrain._sgcv.sgcv_values`) bounds the rounding error by the
magnitudes of the residual's three terms here rather than five.

Any failure of the reduction or of a solve (a non-finite Gram matrix, an exactly
singular shifted matrix) hands the step to the eigendecomposition path, which
raises for non-finite features as before.
"""

import functools
import math

import numpy as np
from scipy.linalg import get_lapack_funcs

from ._sgcv import trace_error_scale
from ._slimtik import StepResult, choose_ridge, slimtik_update

__all__ = ["slimtik_update_tridiagonal"]

# LAPACK's workspace: ``sytrd`` and ``ormqr`` run blocked with ``lwork >= n * nb``;
# 64 is the largest block size their ILAENV returns in reference LAPACK and OpenBLAS.
_BLOCK = 64


@functools.cache
def _lapack(dtype: np.dtype):
    """``(sytrd, ormqr, sterf, gtsv)`` of SciPy's LAPACK for ``dtype`` (float32 or float64)."""
    return get_lapack_funcs(("sytrd", "ormqr", "sterf", "gtsv"), dtype=dtype)


def _apply_z(reflectors, tau, X, trans: bytes, ormqr):
    """``Z^T X`` (``trans=b"T"``) or ``Z X`` (``b"N"``) for the reflectors of ``sytrd(lower=1)``.

    ``Z = diag(1, Z_2)`` where ``Z_2`` is the orthogonal factor of the QR-like
    factorisation stored in ``reflectors[1:, :-1]``, so ``ormqr`` applies it to
    the rows ``1:`` of ``X``.
    """
    tail, _, info = ormqr(b"L", trans, reflectors[1:, :-1], tau, X[1:], lwork=_BLOCK * max(1, X.shape[1]))
    if info:
        return None
    return np.concatenate((X[:1], tail), 0)


def slimtik_update_tridiagonal(
    gram: np.ndarray,
    cross: np.ndarray,
    rnorm2: np.ndarray,
    n_rows: int,
    coef: np.ndarray,
    ridge_prev: np.ndarray,
    *,
    ridge_fixed: float | None,
    ridge_ref: np.ndarray,
    max_change: float,
    weight: float = 1.0,
    rule: str = "global",
) -> StepResult:
    """One slimTik step (3.7) without memory, through ``G = Z T Z^T``.

    The arguments are those of :func:`sklearn_slimtrain._slimtik.slimtik_update`
    with ``memory_gram=None``, as NumPy arrays of one floating dtype (float32 or
    float64); the result is the same step up to rounding.

    Returns
    -------
    StepResult
    """
    p, t = coef.shape
    sytrd, ormqr, sterf, gtsv = _lapack(gram.dtype)

    def eigendecomposition_step():  # for one weight, non-finite features or a LAPACK failure
        return slimtik_update(gram, cross, rnorm2, n_rows, coef, ridge_prev, None, ridge_fixed=ridge_fixed,
                              ridge_ref=ridge_ref, max_change=max_change, weight=weight, rule=rule)

    if p == 1:  # (a 1 x 1 matrix is its own decomposition; LAPACK's wrappers want n >= 2 here)
        return eigendecomposition_step()
    reflectors, diag, off, tau, info = sytrd(gram, lower=1, lwork=_BLOCK * p)
    rhs = None if info or not np.isfinite(diag).all() else _apply_z(
        reflectors, tau, np.concatenate((cross, coef), 1), b"T", ormqr)
    if rhs is None:
        return eigendecomposition_step()
    c, w = rhs[:, :t], rhs[:, t:]
    if ridge_fixed is not None:
        ridge = ridge_prev + weight * ridge_fixed
        if ridge <= p * np.finfo(gram.dtype).eps * np.trace(gram):  # tr(G) >= d_max: at most the eigenvalues'
            return eigendecomposition_step()  # rounding level, where only the decomposition can cut off rounding
    else:
        evals, _ = sterf(diag, off)
        evals = np.maximum(evals, 0.0)
        try:
            ridge = choose_ridge(
                lambda cands: _sgcv_values(cands, diag, off, evals, c, w, rnorm2, ridge_prev, n_rows, gtsv),
                gram, ridge_prev, ridge_ref, max_change=max_change, rule=rule)
        except _SingularShift:
            return eigendecomposition_step()
    *_, x, info = gtsv(off, diag + ridge, off, c - (ridge - ridge_prev) * w)
    step = None if info else _apply_z(reflectors, tau, x, b"N", ormqr)
    if step is None:
        return eigendecomposition_step()
    return StepResult(coef=coef + step, ridge=np.asarray(ridge, dtype=gram.dtype), gram=gram)


class _SingularShift(ArithmeticError):
    """LAPACK's ``gtsv`` met an exactly singular shifted matrix ``T + S I``."""


def _sgcv_values(cands, diag, off, evals, c, w, rnorm2, ridge_prev, n_rows, gtsv):
    """sGCV (3.4) at every candidate cumulative ridge, from ``T``'s diagonals and ``c = Z^T A^T R``, ``w = Z^T W``."""
    (p, t), nc = c.shape, cands.shape[0]
    lam = cands - ridge_prev
    shifted = (c - lam[:, None, None] * w).reshape(nc * p, t)  # candidate j: rows j p .. (j + 1) p - 1
    band = np.zeros((nc, p), dtype=c.dtype)
    band[:, :-1] = off  # zero between blocks
    band = band.ravel()[:-1]
    *_, x, info = gtsv(band, (diag + cands[:, None]).ravel(), band, shifted)
    if info:
        raise _SingularShift
    x = x.reshape(nc, p, t)
    cx = x.reshape(nc, p * t) @ c.ravel()
    xtx = (x * x).sum(2) @ diag + 2.0 * ((x[:, :-1] * x[:, 1:]).sum(2) @ off)
    resid = rnorm2 - 2.0 * cx + xtx
    # A residual below the rounding error of its own terms is not a measurement
    # (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 3.1;
    # as in _sgcv.sgcv_values): it means the candidate interpolates the batch.  Unlike
    # the eigendecomposition path, x comes from a solve: gtsv is backward stable, so
    # ||x - x*|| <= kappa eps ||x|| with kappa = (d_max + S) / (d_min + S) the condition
    # number of T + S I (Higham, sec. 7.1 and 9.13), and the residual, whose gradient
    # in x is 2 (T x - c) = -2 (S x + Lambda w), moves by up to 2 ||S x + Lambda w|| times
    # that.  Without this term a tiny S read as a small, valid residual (a review found
    # 2.6e-5 where the exact value is 1.2e4, features of scale 1e3 and 32 rows for 101
    # weights).
    eps = np.finfo(c.dtype).eps
    d_max = float(evals.max())  # evals are clipped at 0 by the caller
    kappa = (d_max + cands) / (float(evals.min()) + cands)
    grad = np.sqrt(((cands[:, None, None] * x + lam[:, None, None] * w) ** 2).sum((1, 2)))
    solve_error = 2.0 * kappa * eps * grad * np.sqrt((x * x).sum((1, 2)))
    resolved = resid > (p * eps) * (rnorm2 + 2.0 * np.abs(cx) + np.abs(xtx)) + solve_error
    D = 1.0 / (evals + cands[:, None])
    dof = n_rows * t - t * (D @ evals)
    resolved &= dof > trace_error_scale(d_max, p, t, eps) * D.sum(1)  # as in _sgcv (here H = diag(d))
    return np.where(resolved, n_rows * t * np.maximum(resid, 0.0) / dof**2, math.inf)
