"""One step of sampled limited-memory Tikhonov (slimTik) with sGCV ridge choice.

Pure math on small matrices: arrays in, a NamedTuple of new arrays out, inputs
never mutated, no gradients recorded (``no_grad``), no scikit-learn import.  Every function
takes torch tensors or NumPy arrays (not mixed) and answers in the same kind;
the solver uses NumPy views on the CPU, where the per-call overhead is a few times
smaller (see :func:`sklearn_slimtrain._sgcv.array_module`).  The stateful parts (the
ring buffer of recent Gram matrices, the running ridge) live in
:mod:`sklearn_slimtrain._solver`.

Notes
-----
At step ``k`` slimTik solves the paper's (3.7),

.. math::

    W_k = \\arg\\min_W \\Big\\| \\begin{bmatrix} M_k \\\\ A_k \\\\ \\sqrt{S_k} I
    \\end{bmatrix} W - \\begin{bmatrix} M_k W_{k-1} \\\\ B_k \\\\
    S_{k-1} / \\sqrt{S_k}\\, W_{k-1} \\end{bmatrix} \\Big\\|_F^2,
    \\qquad S_k = \\sum_{i \\le k} \\Lambda_i,

whose normal equations, written for the step ``W_k - W_{k-1}``, are the update
form (3.3):

.. math::

    (G_k + S_k I)(W_k - W_{k-1}) = A_k^T (B_k - A_k W_{k-1}) - \\Lambda_k W_{k-1},
    \\qquad G_k = M_k^T M_k + A_k^T A_k.

The memory blocks enter only through ``M_k^T M_k``, so the memory stores the
``p x p`` Gram matrices of the last ``r`` batches, not their features.  One
symmetric eigendecomposition ``G_k = V diag(d) V^T`` per step serves every
candidate ridge and every target; no inverse is formed:
``W_k = W_{k-1} + V [(Q - Lambda_k P) / (d + S_k)]`` with ``Q = V^T A_k^T R``,
``P = V^T W_{k-1}``.  (Without memory, wide heads with few targets take the same
step through a tridiagonal reduction instead: :mod:`sklearn_slimtrain._tridiagonal`.)

Ridge rule (``slimtik_step`` with ``rule="global"``).  The sGCV function of
the step is evaluated on a fixed *global* log-spaced grid of cumulative ridges,
relative to the mean eigenvalue ``g = tr(G_k)/p`` of the Gram matrix
(``S = g 10^e`` for ``e`` in ``[-12, 6]``, 64 points, 0.29 decades apart).  The
cumulative ridge then moves towards the global minimiser with the published
MATLAB code's step bound, ``|Lambda_k| <= max_change S_{k-1}`` (with the default
0.5, ``S`` changes by at most a factor 1.5 up or 2 down per step).  Seeing the whole grid lets the ridge leave
a flat part of the sGCV curve, where the local window search of the MATLAB rule
(``matlab_candidates``: 30 increments each way, ties to the smallest) drifts to
its floor; the bound keeps the head from jumping when the memory holds features
of older extractor weights (``max_change``, 0.5 by default as in the MATLAB code;
``choose_ridge`` raises the result to the grid's floor last).  Ties, which occur on the flat part of the curve
where every candidate gives the same head, go to the larger ridge: the largest
ridge that does not hurt the fit.  The choice is measured against the
alternatives in ``benchmarks/stability.py``.
"""

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._sgcv import Array, array_module, at_least, no_grad, nonnegative, sgcv_factors, sgcv_values

__all__ = [
    "StepResult",
    "TikhonovResult",
    "choose_ridge",
    "global_candidates",
    "matlab_candidates",
    "select_ridge",
    "slimtik_step",
    "slimtik_update",
    "symmetric_eigh",
    "tikhonov_from_gram",
]

# Global sGCV grid, in decades relative to the mean eigenvalue of G.  The lower
# end keeps cond(G + S I) <= 1e12 * p (relative error of the solve up to about
# eps * cond = 2.2e-4 * p in float64, so about 3.7 - log10(p) correct digits even
# at the floor; sGCV's choices lie far above it in practice), and it is applied
# after the step bound, so it always holds; the upper end (1e6) is far beyond the point
# where the head stops moving (S >> ||G||), so the grid brackets every useful
# ridge.  64 points: 0.29 decades apart, a factor 1.9 between neighbours.
GRID_LOG10_LO = -12.0
GRID_LOG10_HI = 6.0
GRID_SIZE = 64
# Relative tolerance for ties between sGCV values: sqrt(float64 eps), i.e.
# values that agree to half the working precision are indistinguishable.
TIE_RTOL = 1.5e-8
# Published MATLAB rule (Meganet.m): 30 increments each way, floor 1e-7.
MATLAB_FLOOR = 1e-7
MATLAB_HALF = 30


# Grid of the one-off full-data solve (``tikhonov_from_gram``): 4x finer, a
# factor 1.18 between neighbours, since it is evaluated once per fit.
FINAL_GRID_SIZE = 253


class TikhonovResult(NamedTuple):
    """Result of a full-data Tikhonov solve."""

    coef: Array  # (p, t)
    ridge: Array  # () the ridge lam of (1/N) sum 1/2||W z - y||^2 + lam/2 ||W||^2


class StepResult(NamedTuple):
    """Result of one slimTik step."""

    coef: Array  # (p, t) the new head W_k
    ridge: Array  # () the new cumulative ridge S_k
    gram: Array  # (p, p) A_k^T A_k, to be pushed into the memory


_UNIT_GRID: dict = {}


def _unit_grid(like, size: int):
    """``(10**linspace(GRID_LOG10_LO, GRID_LOG10_HI, size), tiny)`` for the kind, dtype and device of ``like``.

    ``tiny`` is the dtype's smallest normal number.  Cached per kind, dtype, device and size.
    """
    is_tensor = isinstance(like, Tensor)
    key = (is_tensor, like.dtype, like.device if is_tensor else None, size)
    if key not in _UNIT_GRID:
        grid = torch.pow(10.0, torch.linspace(GRID_LOG10_LO, GRID_LOG10_HI, size, dtype=torch.float64, device="cpu"))
        grid = grid.to(dtype=like.dtype, device=like.device) if is_tensor else grid.numpy().astype(like.dtype)
        _UNIT_GRID[key] = grid, float(array_module(like).finfo(like.dtype).tiny)
    return _UNIT_GRID[key]


@no_grad
def symmetric_eigh(G):
    """``linalg.eigh`` of a tensor or array, with a float64 CPU retry when the solver fails.

    cuSOLVER's ``syevd`` in float32 can fail to converge on an ill-conditioned but
    finite Gram matrix (a ``LinAlgError``, or on CUDA >= 11.5 a plain
    ``RuntimeError`` "cusolver error: CUSOLVER_STATUS_EXECUTION_FAILED", see
    pytorch/pytorch#94772); LAPACK's float64 driver on the symmetrised matrix does
    not in practice.  A non-finite ``G`` (non-finite features) is not retried:
    the error reaches the caller, which treats it as divergence.  NumPy's
    :class:`numpy.linalg.LinAlgError` and cuSOLVER's ``RuntimeError`` are raised
    as :class:`torch.linalg.LinAlgError`, so callers catch one type whichever
    library solved.
    """
    xp = array_module(G)
    try:
        return xp.linalg.eigh(G)
    except (torch.linalg.LinAlgError, np.linalg.LinAlgError, RuntimeError) as error:
        if type(error) is RuntimeError and "cusolver" not in str(error).lower():
            raise
        if not bool(xp.isfinite(G).all()):
            if isinstance(error, torch.linalg.LinAlgError):
                raise
            raise torch.linalg.LinAlgError(str(error)) from error
        G64 = torch.as_tensor(G).detach().to(device="cpu", dtype=torch.float64)
        evals, evecs = torch.linalg.eigh(0.5 * (G64 + G64.T))
        if xp is np:
            return evals.numpy().astype(G.dtype), evecs.numpy().astype(G.dtype)
        return evals.to(device=G.device, dtype=G.dtype), evecs.to(device=G.device, dtype=G.dtype)


def global_candidates(gram: Array, size: int = GRID_SIZE) -> Array:
    """Global log-spaced grid of cumulative ridges, relative to ``tr(G)/p``."""
    unit, tiny = _unit_grid(gram, size)
    return at_least(gram.trace() / gram.shape[0], tiny) * unit


@no_grad
def matlab_candidates(ridge_prev: Array) -> Array:
    """The published MATLAB rule: ``S +- logspace(-16, log10(S/2), 30)``, ``S >= 1e-7``.

    The cumulative ridge can move by at most a factor 1.5 up or 2 down per step.
    """
    xp = array_module(ridge_prev)
    s = at_least(ridge_prev, MATLAB_FLOOR)
    unit = (torch.linspace(0.0, 1.0, MATLAB_HALF, dtype=s.dtype, device=s.device) if xp is torch
            else np.linspace(0.0, 1.0, MATLAB_HALF, dtype=s.dtype))
    steps = 10.0 ** (-16.0 + unit * (xp.log10(s / 2) + 16.0))
    cands = xp.concatenate((s - xp.flip(steps, (0,)), s.reshape(1), s + steps))
    return at_least(cands, MATLAB_FLOOR)


@no_grad
def select_ridge(values: Array, candidates: Array, *, smallest: bool = False) -> Array:
    """Index-free argmin of the sGCV values, ties broken towards the larger ridge.

    ``smallest=True`` breaks ties towards the smaller ridge instead, as MATLAB's
    ``min`` does on the published rule's increasing candidates.  Stays on the
    device (no host synchronisation).
    """
    xp = array_module(values)
    values = xp.where(xp.isnan(values), math.inf, values)
    vmin = values.min()
    tied = values <= vmin + TIE_RTOL * abs(vmin)
    # Largest (smallest) candidate among the ties (candidates need not be sorted).
    if smallest:
        return xp.where(tied, candidates, math.inf).min()
    return xp.where(tied, candidates, -math.inf).max()


def choose_ridge(values_at, G: Array, ridge_prev: Array, ridge_ref: Array, *, max_change: float,
                 rule: str) -> Array:
    """The step's cumulative ridge ``S_k`` by the sGCV rule, for any evaluation of sGCV.

    ``values_at(candidates)`` returns the sGCV values at the candidate
    cumulative ridges.  ``rule="global"``: the minimiser on the global grid of
    ``G``, clipped to ``[(1 - max_change) S_ref, (1 + max_change) S_ref]`` and then
    raised to the grid's floor if below it, with ``S_ref`` the previous ridge (``ridge_ref`` before the
    first step); ``rule="matlab"``: the minimiser on the published window around
    ``S_ref``.  Stays on the device.
    """
    xp = array_module(G)
    ref = xp.where(ridge_prev > 0, ridge_prev, ridge_ref)
    if rule == "matlab":
        cands = matlab_candidates(ref)
        values = values_at(cands)
        chosen = select_ridge(values, cands, smallest=True)
    else:
        cands = global_candidates(G)
        values = values_at(cands)
        best = select_ridge(values, cands)
        # The grid's floor is applied last, so it holds even where the step bound would
        # keep S below it (a ridge_init far below the floor's 1e-12 tr(G)/p).
        bounded = xp.minimum(xp.maximum(best, ref * (1.0 - max_change)), ref * (1.0 + max_change))
        chosen = xp.maximum(bounded, cands[0])
    # A batch that carries no information (G = 0: dead features and no intercept) has a
    # flat sGCV curve; any change of S would only rescale the head by S_{k-1} / S_k
    # (Q = 0), so S stays (Lambda = 0: the head is unchanged).  A step whose sGCV values
    # are all inf is "all tied" and takes the largest ridge the bound allows: when every
    # candidate's residual is below its rounding error (a blown-up network, whose features
    # dwarf the targets), the growing ridge damps the head, and the epoch's loss check then
    # sees a finite but exploded loss (tests/test_estimator.py, the lr=1e12 case).  The same
    # happens when float32 factors overflow (entries grow as |A|^4 |R|^2: features near 1e8
    # with a float32 head), where S then grows by (1 + max_change) per such step.
    return xp.where(G.trace() > 0, chosen, ref)


@no_grad
def slimtik_step(
    A: Array,
    B: Array,
    coef: Array,
    ridge_prev: Array,
    memory_gram: Array,
    *,
    ridge_fixed: float | None,
    ridge_ref: Array,
    max_change: float,
    weight: float = 1.0,
    rule: str = "global",
) -> StepResult:
    """One slimTik step (3.7) with the ridge fixed or chosen by sGCV (3.4), from the batch matrix.

    Forms ``A^T A``, ``R = B - A W_{k-1}``, ``A^T R`` and ``||R||^2`` and calls
    :func:`slimtik_update` (see there for the parameters), passing ``A`` so that
    ``H = U^T U`` is formed from ``U = A V``.

    Parameters
    ----------
    A : array of shape (b, p)
        Scaled features of the current batch (rows divided by ``sqrt(n_batch)``).
    B : array of shape (b, t)
        Scaled targets of the current batch.
    coef, ridge_prev, memory_gram, ridge_fixed, ridge_ref, max_change, weight, rule
        As in :func:`slimtik_update`.

    Returns
    -------
    StepResult
    """
    R = B - A @ coef
    return slimtik_update(
        A.T @ A, A.T @ R, (R * R).sum(), A.shape[0], coef, ridge_prev, memory_gram,
        ridge_fixed=ridge_fixed, ridge_ref=ridge_ref, max_change=max_change, weight=weight, rule=rule, batch=A,
    )


@no_grad
def slimtik_update(
    gram: Array,
    cross: Array,
    rnorm2: Array,
    n_rows: int,
    coef: Array,
    ridge_prev: Array,
    memory_gram: Array | None,
    *,
    ridge_fixed: float | None,
    ridge_ref: Array,
    max_change: float,
    weight: float = 1.0,
    rule: str = "global",
    batch: Array | None = None,
) -> StepResult:
    """One slimTik step (3.7) from the batch's sufficient statistics.

    Parameters
    ----------
    gram : array of shape (p, p)
        ``C = A^T A`` of the scaled batch matrix ``A`` (rows divided by
        ``sqrt(n_batch)``).
    cross : array of shape (p, t)
        ``A^T R`` with ``R = B - A W_{k-1}`` the scaled residual of the
        previous head on the batch.
    rnorm2 : array of shape ()
        ``||R||_F^2``, computed from ``R`` itself (not expanded), so that a
        small residual is not lost to cancellation.
    n_rows : int
        ``b``, the number of rows of ``A`` (for the sGCV count).
    coef : array of shape (p, t)
        Previous head ``W_{k-1}``.
    ridge_prev : array of shape ()
        Previous cumulative ridge ``S_{k-1}`` (0 before the first step).
    memory_gram : array of shape (p, p) or None
        ``M_k^T M_k``, the summed Gram matrices of the blocks in memory (None:
        no memory, ``r = 0``).
    ridge_fixed : float or None
        A fixed per-step ridge ``lam`` (``S_k = S_{k-1} + weight * lam``), or None
        to choose ``S_k`` by sGCV.
    ridge_ref : array of shape ()
        Cumulative ridge to start from at the first step (``S_0 = 0``):
        ``ridge_init`` times the batch fraction.
    max_change : float
        Largest ``|Lambda_k| / S_{k-1}``: the sGCV choice is clipped to
        ``[(1 - max_change) S_{k-1}, (1 + max_change) S_{k-1}]``, then raised to
        the grid's floor if below it; ``inf`` jumps to the sGCV minimiser.
    weight : float, default=1.0
        ``b / n_batch``: the fraction of a full batch in this block.
    rule : {"global", "matlab"}, default="global"
        Candidate set for sGCV: the global grid with bounded steps, or the
        published MATLAB window around ``S_{k-1}`` (for comparison only).
    batch : array of shape (b, p), optional
        ``A`` itself, when it has few rows (a dense head): then ``H = U^T U``
        with ``U = A V``.

    All arrays are torch tensors on one device, or all are NumPy arrays.

    Returns
    -------
    StepResult

    Notes
    -----
    With ``G = M_k^T M_k + C = V diag(d) V^T``, ``H = V^T C V``,
    ``Q = V^T A^T R`` and ``P = V^T W_{k-1}``, the step and its sGCV function
    cost ``O(p^3 + p^2 t)`` whatever the number of rows of ``A`` (a
    convolution's batch matrix has one row per output pixel).  With ``batch``,
    ``H`` is formed as ``U^T U`` instead (``O(b p^2)``): a direction ``v`` in the
    null space of ``A`` then gets ``H_vv ~ eps^2 ||A||^2`` rather than
    ``eps ||A||^2``, which matters for a batch with fewer rows than weights at a
    tiny ridge, where the sGCV denominator nearly vanishes.
    """
    G = gram if memory_gram is None else memory_gram + gram
    evals, evecs = symmetric_eigh(G)
    Q = evecs.T @ cross
    P = evecs.T @ coef
    if ridge_fixed is not None:
        ridge = ridge_prev + weight * ridge_fixed
        evals = nonnegative(evals)
        Q = numerically_null_removed(evals, Q, ridge)
    else:
        if batch is None:
            H = evecs.T @ gram @ evecs
        else:
            U = batch @ evecs
            H = U.T @ U
        factors = sgcv_factors(evals, H, Q, P, rnorm2, n_rows)
        ridge = choose_ridge(lambda cands: sgcv_values(factors, ridge_prev, cands), G, ridge_prev, ridge_ref,
                             max_change=max_change, rule=rule)
        evals = factors.evals  # clipped at 0
    step = evecs @ ((Q - (ridge - ridge_prev) * P) / (evals + ridge)[:, None])
    return StepResult(coef=coef + step, ridge=ridge, gram=gram)


def null_cutoff(evals: Array) -> Array:
    """``p eps d_max``: an eigenvalue of ``G`` at or below it cannot be told from 0.

    A computed eigenvalue is within about ``p eps ||G||`` of the exact one (Weyl:
    the rounding of ``G`` and of its decomposition perturbs it by a matrix of that
    norm).  The same cut-off as NumPy's ``lstsq`` (``max(m, n) eps`` relative).
    """
    return evals.max() * (evals.shape[0] * float(array_module(evals).finfo(evals.dtype).eps))


def numerically_null_removed(evals: Array, Q: Array, ridge: Array) -> Array:
    """``Q`` with zero rows along eigenvalues below :func:`null_cutoff` when the fixed ``ridge`` is below it too.

    Along an exact null direction ``v`` of ``G``, ``Q_v = v^T A^T R`` is 0, and the
    step ``(Q_v - Lambda P_v) / (d_v + S)`` shrinks the head's component as
    Tikhonov does; computed, ``d_v`` and ``Q_v`` are rounding noise, which a
    cumulative ridge ``S`` far below the cut-off amplifies by ``1 / S`` (a bug
    hunt: ``ridge=1e-20`` on features with two duplicated columns gave
    coefficients of 1e17 and a test R2 of -3e10, against 13 and 0.91 for the
    stable least-squares solution).  Zeroing those rows is the pseudo-inverse's
    cut-off.  Above the cut-off ``S`` bounds the noise's effect, ``|Q_v| / S``,
    to about ``||R|| / (p sqrt(d_max))``, and nothing changes: the fixed ridges
    in use give the same heads to the bit.  sGCV's ridges are bounded below by
    ``d_max / (1e12 p)`` and never come here.  Branch-free (``where``): no host
    synchronisation on an accelerator.
    """
    xp = array_module(evals)
    cutoff = null_cutoff(evals)
    return xp.where(((evals > cutoff) | (ridge > cutoff))[:, None], Q, xp.zeros_like(Q))


@no_grad
def tikhonov_from_gram(
    gram: Array, cross: Array, rnorm2: Array, n_rows: int, *, ridge: float | None, coef: Array | None = None
) -> TikhonovResult:
    """Tikhonov head on a whole data set from its sufficient statistics, ridge by GCV.

    Solves ``min_W (1/N) sum_i 1/2 ||W^T z_i - y_i||^2 + lam/2 ||W||_F^2`` (the
    paper's (2.6) on the training set: the variable-projection head for the
    current extractor) from ``gram = Z^T Z / N`` and the statistics of the
    residual ``R = Y - Z W_0`` of a reference head ``W_0`` (``coef``; zero when
    None): ``cross = Z^T R / N`` and ``rnorm2 = ||R||_F^2 / N``, which can be
    accumulated in chunks of rows.  The solution is written as a correction of
    ``W_0``, ``W(lam) = W_0 + V (Q - lam P) / (d + lam)`` with ``G = V diag(d) V^T``,
    ``Q = V^T cross`` and ``P = V^T W_0``: the same head for any ``W_0``, but its
    residual ``||Z W(lam) - Y||^2`` is computed relative to ``||R||^2`` instead of
    ``||Y||^2``.  With a good reference (the last slimTik head) the GCV function
    then keeps its digits where the residual is far below ``||Y||^2`` (targets
    with a large mean, or a close fit: below ``sqrt(p eps)`` relative, every
    small ridge would read as unresolved).
    With ``ridge=None``, ``lam`` minimises the exact GCV function of the
    vectorised system (``N t`` rows, trace ``t sum_j d_j / (d_j + lam)``) over a
    global grid; it is the sGCV kernel with ``A = Z / sqrt(N)``, ``W_prev = W_0``,
    previous ridge 0 (so ``Lambda = lam``) and no memory, where ``H = U^T U = diag(d)``.

    Parameters
    ----------
    gram : array of shape (p, p)
    cross : array of shape (p, t)
    rnorm2 : Array of shape ()
    n_rows : int
        Rows of the stacked system, for the GCV count: ``N`` for a dense head,
        ``N`` times the output positions for a convolution.  The statistics are
        divided by the number of samples ``N`` (the loss is a mean over samples),
        or by the sum of the sample weights (the weighted mean).
    ridge : float or None
        A fixed ``lam``, or None for GCV.
    coef : array of shape (p, t), optional
        The reference head ``W_0`` whose residual ``cross`` and ``rnorm2`` describe.

    Returns
    -------
    TikhonovResult
    """
    xp = array_module(gram)
    evals, evecs = symmetric_eigh(gram)
    evals = nonnegative(evals)
    Q = evecs.T @ cross
    P = xp.zeros_like(Q) if coef is None else evecs.T @ coef
    if ridge is None:
        factors = sgcv_factors(evals, xp.diag(evals), Q, P, rnorm2, n_rows)
        cands = global_candidates(gram, FINAL_GRID_SIZE)
        lam = select_ridge(sgcv_values(factors, xp.zeros_like(rnorm2), cands), cands)
    else:
        lam = (torch.tensor(float(ridge), dtype=gram.dtype, device=gram.device) if xp is torch
               else np.asarray(float(ridge), dtype=gram.dtype))
        Q = numerically_null_removed(evals, Q, lam)
    step = evecs @ ((Q - lam * P) / (evals + lam)[:, None])
    return TikhonovResult(coef=step if coef is None else coef + step, ridge=lam)
