"""Sampled generalized cross-validation (sGCV) for one slimTik step.

Pure math on small matrices: arrays in, new arrays or a NamedTuple out, inputs
never mutated, no scikit-learn import.  The arrays are torch tensors or NumPy
arrays, never mixed (see :func:`array_module`): the code uses only calls that
the two libraries spell and define alike, so one source serves both.  The layout follows scikit-learn's
``_RidgeGCV``: :func:`sgcv_factors` does the expensive part once per step (after
the one eigendecomposition done by the caller), :func:`sgcv_values` then
evaluates the sGCV function for *all* candidate ridges in one vectorised tensor
operation that stays on the device.

Notes
-----
Notation (one slimTik step ``k``, dense head, see the paper's (3.4)-(3.7)):

* ``A`` (``b x p``): the current batch's features (with the ones column when the
  intercept is fitted), each row divided by ``sqrt(n_batch)``;
* ``R = B - A W_{k-1}`` (``b x t``): the scaled residual of the previous head on
  the current batch, ``t`` targets;
* ``G = sum_{i=k-r}^{k} A_i^T A_i`` (``p x p``): Gram matrix of the current batch
  and the ``r`` blocks in memory, with eigendecomposition ``G = V diag(d) V^T``;
* ``S`` the candidate cumulative ridge ``S_k = S_{k-1} + Lambda``.

The slimTik iterate in update form (3.3) is

.. math::

    W_k(S) = W_{k-1} + V D(S) (Q - \\Lambda P),\\qquad
    D(S) = \\operatorname{diag}(1/(d + S)),\\ Q = U^T R,\\ P = V^T W_{k-1},

with ``U = A V``.  The residual on the current batch is
``A W_k(S) - B = U D X - R`` with ``X = Q - Lambda P``, so

.. math::

    \\|A W_k(S) - B\\|_F^2 = \\|R\\|_F^2 - 2\\sum_j D_j (q_j - \\Lambda m_j)
      + D^T (H \\circ X X^T) D,

where ``H = U^T U = V^T (A^T A) V``, ``q_j = sum_t Q_{jt}^2``, ``m_j = sum_t Q_{jt} P_{jt}`` and
``X X^T = QQ^T - Lambda (QP^T + PQ^T) + Lambda^2 PP^T``.  The three Hadamard
products are formed once, so each candidate costs ``O(p^2)`` independent of the
number of targets and of the batch size.

For ``t`` targets the vectorised system ``(Z^T (x) I_t) vec(W) = vec(C)`` has
``b t`` rows and its influence matrix has trace ``t tr(A T(S) A^T)`` with
``tr(A T(S) A^T) = sum_j D_j H_jj``.  The sGCV function (3.4), counting the
vectorised system's ``b t`` rows (the paper writes ``|T_k| = b``, the same for one
target; the published MATLAB code counts ``b t``), is therefore

.. math::

    \\operatorname{sGCV}(S) = \\frac{b t\\, \\|A W_k(S) - B\\|_F^2}
                                  {(b t - t \\sum_j D_j H_{jj})^2},

which is what the published MATLAB code computes (the published PyTorch
Kronecker solver counts ``b`` rows with a trace for one target).  The two counts
differ by the constant factor ``t`` (``b t (b t - t x)^{-2} = (1/t) b (b - x)^{-2}``
with ``x = sum_j D_j H_jj``), so they choose the same ridge.

Both the numerator and the denominator can vanish: a small ridge lets the head
interpolate a batch of fewer rows than weights (``b <= p``).  Where either falls
below its own rounding error the value is no measurement and the candidate is
discarded (``inf``).  For the residual the bound is that of a sum of products
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., sec. 3.1).  For
the trace ``x = sum_j D_j H_jj``: a backward-stable eigensolver returns each
``d_j`` with an absolute error up to about ``delta = p eps d_max`` (Weyl's
inequality; Golub and Van Loan, *Matrix Computations*, 4th ed., sec. 8.1), and
``H_jj`` carries as much, so a term moves by up to
``delta (D_j + H_jj D_j^2) <= 2 delta D_j``, using ``H_jj <= d_j`` (``G - A^T A`` is
the memory's Gram matrix, positive semidefinite).  The denominator ``b - x`` counts
only where it exceeds ``2 delta sum_j D_j``.  Without this, eigenvalues that are
zero in exact arithmetic but come out as ``+-1e-15 d_max`` made ``b - x`` negative
at ridges near ``1e-11 d_max``.  Its square then read as a large denominator, and
a review found the final head's GCV choosing ``2.7e-11`` where the exact minimiser
is ``0.17`` (40 rows, 61 weights: test R2 0.11 against 0.28).
"""

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["Array", "SGCVFactors", "array_module", "at_least", "no_grad", "nonnegative", "sgcv_factors",
           "sgcv_values", "trace_error_scale"]

# A torch tensor or a NumPy array (the two are never mixed in one call).
Array = Tensor | np.ndarray


def array_module(x):
    """``torch`` for a tensor, ``numpy`` for anything else (an array or a NumPy scalar).

    slimTik's per-step algebra is about a hundred operations on ``p x p`` and
    ``p x t`` matrices.  At the paper's sizes (``p`` = 9 or 17) each costs the
    library's per-call overhead, not arithmetic: about 3-7 us for a CPU tensor
    and about 1 us for a NumPy array, and both call LAPACK for the one
    eigendecomposition.  The solver therefore hands NumPy views of its CPU
    tensors to these functions (``Tensor.numpy()`` shares the memory) and keeps
    tensors on an accelerator, where they never leave the device.  The calls used
    in these modules (``@`` including its batched form, ``.T``, ``.sum(axis)``,
    ``.min()``, ``.max()``, ``.trace()``, ``.reshape``, ``.diagonal(offset)``, ``where``,
    ``maximum``/``minimum`` of two arrays, ``concatenate``/``stack`` with ``axis``,
    ``diag``, ``diagonal``, in-place ``*=`` on a column of a new array,
    ``zeros_like``, ``isnan``, ``isfinite``, ``linalg.eigh``, ``finfo``,
    ``flip`` with a tuple, ``log10``, ``linspace``) have the same signature and
    meaning in NumPy and torch; the two that differ (``clamp_min``) go through
    :func:`at_least`.
    """
    return torch if isinstance(x, torch.Tensor) else np


def at_least(x, floor: float):
    """``max(x, floor)`` elementwise, in the library of ``x``, without a host synchronisation.

    ``numpy.maximum`` takes a scalar, ``torch.maximum`` does not; ``where`` would
    serve both but costs five times NumPy's ``maximum`` on small arrays.
    """
    return x.clamp_min(floor) if isinstance(x, Tensor) else np.maximum(x, floor)


def nonnegative(x):
    """``max(x, 0)`` elementwise, in the library of ``x``."""
    return at_least(x, 0.0)


def no_grad(fn):
    """``@torch.no_grad()`` that enters the context only when gradients are enabled.

    The step's functions call each other; ``torch.no_grad()`` as a decorator
    builds a new context manager at every call (about 14 us on the project's
    CPU, more than the NumPy work of a small function), so the nested calls
    skip it once the outermost one has disabled gradients.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not torch.is_grad_enabled():
            return fn(*args, **kwargs)
        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


class SGCVFactors(NamedTuple):
    """Quantities of one slimTik step that do not depend on the ridge.

    All arrays are of the inputs' library (and device), in their dtype.
    """

    evals: Array  # (p,) eigenvalues of G, clipped at 0
    # (3p + 4, p) rows [H o QQ^T; H o (QP^T + PQ^T); H o PP^T; q; m; diag(H); 2 p t eps d_max] (the last,
    # times D, bounds the rounding error of t tau; see the module's Notes)
    forms: Array
    rnorm2: Array  # () ||R||_F^2
    n_rows: int  # b (rows of the current batch)
    n_targets: int  # t


# Per library, dtype and device: the weights that turn the five terms
# [q0, Lambda q1, Lambda^2 q2, l0, Lambda l1] of sgcv_values into the residual and
# into the sum of their magnitudes (one small matrix product each instead of ten
# operations), the columns that carry a factor Lambda, and the dtype's eps.
_TERM_CONSTANTS: dict = {}


def _term_constants(like):
    is_tensor = isinstance(like, Tensor)
    key = (is_tensor, like.dtype, like.device if is_tensor else None)
    if key not in _TERM_CONSTANTS:
        table = torch.tensor([[1.0, -1.0, 1.0, -2.0, 2.0],  # residual
                              [1.0, 1.0, 1.0, 2.0, 2.0],  # sum of the terms' magnitudes
                              [0.0, 1.0, 1.0, 0.0, 1.0]],  # columns multiplied by Lambda
                             dtype=torch.float64, device="cpu")
        table = table.to(dtype=like.dtype, device=like.device) if is_tensor else table.numpy().astype(like.dtype)
        eps = float((torch if is_tensor else np).finfo(like.dtype).eps)
        _TERM_CONSTANTS[key] = (table[0], table[1], table[2], 1.0 - table[2], eps)
    return _TERM_CONSTANTS[key]


def trace_error_scale(d_max, p: int, n_targets: int, eps: float):
    """``2 p t eps d_max``: ``t`` times the rounding error of ``tau`` per unit of ``sum_j D_j`` (the module's Notes).

    A candidate counts only where the denominator ``b t - t tau`` exceeds this times
    ``sum_j D_j``; ``d_max`` is a scalar or a 0-d array of either library.
    """
    return d_max * (2.0 * p * n_targets * eps)


@no_grad
def sgcv_factors(evals: Array, H: Array, Q: Array, P: Array, rnorm2: Array, n_rows: int) -> SGCVFactors:
    """Factor the sGCV function of one step once, for every candidate ridge.

    Every argument is a small matrix (``p x p`` or ``p x t``) or a scalar: the
    batch enters only through ``A^T A``, ``A^T R`` and ``||R||^2``, so a head
    whose batch matrix ``A`` has many rows (a convolution applied to images)
    costs no more here than a dense one with ``p`` weights.

    Parameters
    ----------
    evals : array of shape (p,)
        Eigenvalues of the memory-plus-batch Gram matrix ``G = V diag(d) V^T``.
    H : array of shape (p, p)
        ``U^T U = V^T (A^T A) V``: the batch's Gram matrix in the eigenbasis of ``G``.
    Q : array of shape (p, t)
        ``U^T R = V^T (A^T R)``.
    P : array of shape (p, t)
        ``V^T W_{k-1}``: the previous head in the eigenbasis.
    rnorm2 : Array of shape ()
        ``||R||_F^2`` with ``R = B - A W_{k-1}`` the scaled residual of the
        previous head on this batch.
    n_rows : int
        ``b``, the number of rows of ``A``.

    Returns
    -------
    SGCVFactors
    """
    xp = array_module(H)
    p = H.shape[0]
    evals = nonnegative(evals)
    # a row that, times D, gives the rounding error of t tau (the denominator is b t - t tau)
    trace_error = xp.ones_like(H[:1]) * trace_error_scale(evals.max(), p, Q.shape[1], _term_constants(H)[-1])
    X = xp.concatenate((Q, P), 0)
    K = X @ X.T  # [[QQ^T, QP^T], [PQ^T, PP^T]] in one product
    QQ, QP, PP = K[:p, :p], K[:p, p:], K[p:, p:]
    # rows: the three Hadamard products (symmetric), then q_j = (QQ^T)_jj, m_j = (QP^T)_jj, H_jj
    forms = xp.concatenate((H * QQ, H * (QP + QP.T), H * PP, K.diagonal()[None, :p], K.diagonal(p)[None],
                            H.diagonal()[None], trace_error), 0)
    return SGCVFactors(
        evals=evals,
        forms=forms,
        rnorm2=rnorm2,
        n_rows=int(n_rows),
        n_targets=Q.shape[1],
    )


@no_grad
def sgcv_values(factors: SGCVFactors, ridge_prev: Array, candidates: Array) -> Array:
    """Evaluate the sGCV function (3.4) at every candidate cumulative ridge.

    Parameters
    ----------
    factors : SGCVFactors
        Output of :func:`sgcv_factors`.
    ridge_prev : array of shape ()
        Cumulative ridge ``S_{k-1}`` of the previous step.
    candidates : array of shape (c,)
        Candidate cumulative ridges ``S_k > 0``.

    Returns
    -------
    values : array of shape (c,)
        ``sGCV(S)`` for every candidate; ``inf`` where the residual or the
        denominator is below its rounding error (a candidate that interpolates
        the batch; see the module's Notes).  Never NaN.
    """
    xp = array_module(candidates)
    to_resid, to_terms, with_lam, without_lam, eps = _term_constants(candidates)
    c, p = candidates.shape[0], factors.evals.shape[0]
    D = 1.0 / (factors.evals + candidates[:, None])  # (c, p)
    Y = D @ factors.forms.T  # (c, 3p + 3)
    quad = Y[:, : 3 * p].reshape(c, 3, p) @ D[:, :, None]  # (c, 3, 1): D^T (H o .) D, three forms
    # [q0, Lambda q1, Lambda^2 q2, l0, Lambda l1] with Lambda = S - S_{k-1} the increment:
    # ||R||^2 - 2 sum_j D_j (q_j - Lambda m_j) + D^T (H o X X^T) D is a polynomial in Lambda
    lam = candidates - ridge_prev
    terms = xp.concatenate((quad[:, :, 0], Y[:, 3 * p : 3 * p + 2]), 1) * (lam[:, None] * with_lam + without_lam)
    terms[:, 2] *= lam
    resid = factors.rnorm2 + terms @ to_resid
    # A residual below the rounding error of its own terms is not a measurement: a
    # sum of p products carries an error up to ~p eps sum|terms| (Higham, Accuracy and
    # Stability of Numerical Algorithms, 2nd ed., sec. 3.1).  It occurs when a small
    # ridge lets the head interpolate the batch (the denominator vanishes too), and
    # its value, 0 or 1e5 depending on rounding, must not pick the ridge.
    resolved = resid > (p * eps) * (factors.rnorm2 + abs(terms) @ to_terms)
    t = factors.n_targets
    n = factors.n_rows * t
    dof = n - t * Y[:, 3 * p + 2]  # Y[:, 3p + 2] = tau = tr(A T(S) A^T)
    resolved = resolved & (dof > Y[:, 3 * p + 3])  # beyond t tau's rounding error (the module's Notes)
    return xp.where(resolved, n * nonnegative(resid) / dof**2, math.inf)
