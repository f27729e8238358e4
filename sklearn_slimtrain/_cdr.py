"""A 2-D convection-diffusion-reaction (CDR) solver: our stand-in for the slimTrain CDR data.

The slimTrain paper (Newman, Chung, Chung, Ruthotto, SIAM J. Sci. Comput. 2022, section 4.2)
only states the PDE

.. math::

    \\partial_t u = \\nabla\\cdot(D\\nabla u) - v\\cdot\\nabla u + f + y^\\top r(u),
    \\qquad D\\nabla u\\cdot n = 0 \\text{ on } \\partial\\Omega, \\qquad u(\\cdot, 0) = 0,

with 55 reaction coefficients ``y`` and 72 observations (6 sensors x 12 times).  Its domain,
fields, reaction functions and generator are unpublished; everything below is **our** choice
and the data it produces is *not* the paper's data.

Problem (defaults)
------------------
* Domain ``Omega = (0, 1)^2``, time interval ``(0, T]`` with ``T = 1``.
* Diffusion: constant ``D = 0.02``.
* Velocity: the cellular vortex ``v = (d psi/dx2, -d psi/dx1)`` of the stream function
  ``psi = (a/pi) sin(pi x1) sin(pi x2)``, ``a = 1``, i.e.
  ``v = a (sin(pi x1) cos(pi x2), -cos(pi x1) sin(pi x2))``: divergence-free, tangential on
  the boundary (``psi = 0`` there), counter-clockwise, ``|v| <= a``.
* Source: constant in time, a uniform background plus a Gaussian bump,
  ``f = 10 (0.1 + exp(-|x - (0.25, 0.6)|^2 / (2 * 0.08^2)))``.
* Reactions: ``y^T r(u) = kappa * sum_j s_j y_j g_j(x) phi_{t_j}(u)``, ``kappa = 15``, with
  ``j = 0..54`` laid out on an 11 x 5 grid: column ``c = j % 11``, row ``q = j // 11``,
  footprint ``g_j(x) = exp(-|x - x_j|^2 / (2 * 0.1^2))`` centred at
  ``x_j = ((c + 0.5)/11, (q + 0.5)/5)``, type ``t_j = (c + 3 q) % 11`` and sign
  ``s_j = +1`` (production) for even ``j``, ``-1`` (decay) for odd ``j``.  The 11 types are

  ====  ========================  ======================
  type  ``phi(u)``                 name
  ====  ========================  ======================
  0     ``u``                      linear
  1     ``u / (1 + u)``            Michaelis-Menten
  2     ``u^2 / (1 + u^2)``        Hill, n = 2
  3     ``u^3 / (1 + u^3)``        Hill, n = 3
  4     ``tanh(u)``                tanh saturation
  5     ``1 - exp(-u)``            exponential saturation
  6     ``u exp(-u)``              Ricker
  7     ``u / (1 + u^2)``          substrate inhibition
  8     ``u / (1 + u)^2``          inhibited Michaelis-Menten
  9     ``log(1 + u)``             logarithmic
  10    ``arctan(u)``              arctan saturation
  ====  ========================  ======================

  Every ``phi`` has ``phi(0) = 0`` and ``0 <= phi(u) <= u`` for ``u >= 0``
  (the positivity argument below needs exactly this).

Discretisation
--------------
Cell-centred finite volumes on an ``n x n`` grid (``h = 1/n``; cell ``(i1, i2)`` has centre
``((i1 + 1/2) h, (i2 + 1/2) h)``, fields are flattened in C order, ``k = i1 * n + i2``).

* Diffusion: two-point flux ``D (u_a - u_b) / h`` through each interior face; zero flux
  through boundary faces (homogeneous Neumann).  Second order in space.
* Convection: the conservative form ``div(v u)`` (equal to ``v . grad u`` since ``div v = 0``)
  with first-order upwind face fluxes.  The face-normal velocity is the exact face average
  ``(psi(corner_2) - psi(corner_1)) / h``, so the discrete divergence of every cell is
  exactly zero (a telescoping sum) and boundary fluxes vanish.
* Time: IMEX Euler with ``n_steps`` equal steps ``dt = T / n_steps``,
  ``(I + dt A) u^{m+1} = u^m + dt (f(t_m) + R(u^m))``: diffusion and convection implicit
  (``I + dt A`` factorised once by an exact block-tridiagonal LU, see
  :class:`BlockTridiagonalSolver`; all samples are solved together as one multi-column
  right-hand side), source and reactions explicit.
  First order in time and (through upwinding) first order in space overall.
* Observations: bilinear interpolation of the cell values at the sensors (constant
  extrapolation within half a cell of the boundary, consistent with the Neumann condition).

Properties of the scheme (checked in ``tests/test_cdr.py``)
-----------------------------------------------------------
* **Conservation.**  Every face flux leaves one cell and enters its neighbour, so every
  column of ``A`` sums to zero: ``1^T (I + dt A) = 1^T``, hence
  ``h^2 1^T u^{m+1} = h^2 1^T u^m + dt h^2 1^T (f(t_m) + R(u^m))`` *exactly* (up to round-off):
  the total mass changes by the discrete integral of source plus reaction.
* **Constants are preserved** by ``A`` (zero row sums, because the discrete velocity is
  exactly divergence-free), so spatially constant data with spatially constant reactions
  stay constant: ``u^m = u0 (1 + c dt)^m`` for ``R(u) = c u``.
* **Positivity.**  ``I + dt A`` has positive diagonal, non-positive off-diagonal entries
  (upwinding) and zero column sums plus one on the diagonal, so it is a column diagonally
  dominant M-matrix and ``(I + dt A)^{-1} >= 0`` for *every* ``dt``.  The explicit part is
  non-negative when ``u^m >= 0``, ``f >= 0`` and ``dt * rho(x) <= 1`` with the decay rate
  ``rho(x) = sum_j max(-c_j, 0) g_j(x)``, ``c_j = kappa s_j y_j`` (because
  ``0 <= phi(u) <= u``).  :func:`solve_cdr` checks that step-size condition and raises
  otherwise, so ``u >= 0`` for all computed states when ``u0 >= 0`` and ``f >= 0``.

This module is pure numpy/scipy.
"""

import contextlib
import numbers

import numpy as np
import scipy.sparse as sp

try:  # a scikit-learn dependency; optional here (the module itself only needs numpy/scipy)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = [
    "N_REACTIONS",
    "OBSERVATION_TIMES",
    "REACTION_TYPES",
    "SENSORS",
    "BlockTridiagonalSolver",
    "cdr_operator",
    "cell_centers",
    "interpolation_matrix",
    "min_steps",
    "reaction_layout",
    "reaction_term",
    "solve_cdr",
]

#: number of reaction terms (the paper's 55 parameters)
N_REACTIONS = 55
#: final time of the default problem (our choice)
FINAL_TIME = 1.0
#: 12 observation times t_k = k / 12, k = 1..12 (the paper's 12 times; equispaced is our choice)
OBSERVATION_TIMES = np.arange(1, 13) / 12.0
#: 6 sensor points (the paper's 6; positions are our choice: around the vortex, one at the
#: source, one in the vortex centre, so that early and late times both carry signal)
SENSORS = np.array(
    [
        [0.25, 0.60],  # at the source
        [0.25, 0.30],  # downstream of the source (the vortex turns counter-clockwise)
        [0.50, 0.20],  # bottom of the vortex
        [0.75, 0.40],  # right side, further downstream
        [0.60, 0.80],  # top, furthest downstream
        [0.50, 0.50],  # vortex centre (reached by diffusion only)
    ]
)

#: default constants (our choices; see the module docstring)
# D: cell Peclet number a h / D = 1.6 on the default 32 x 32 grid, so the numerical diffusion of
# upwinding (a h / 2 = 0.016) stays below D; with D = 0.01, a = 2 it was 3x D and the grid-32
# observations were off by up to 17% (measured against grid 64)
DIFFUSION = 0.02
VELOCITY = 1.0  # vortex amplitude a: the plume leaves the source and sweeps downstream by T = 1
SOURCE_AMPLITUDE = 10.0  # A: with SOURCE_BACKGROUND, u = O(0.1) at t_1 and O(1) at T (tuned)
SOURCE_CENTER = (0.25, 0.60)  # left of the vortex centre, upstream of the sensors
SOURCE_WIDTH = 0.08  # bump width, ~ 2.5 cells of the default 32 x 32 grid
SOURCE_BACKGROUND = 0.1  # uniform part of f: every sensor sees signal (and reactions) from t = 0
REACTION_RATE = 15.0  # kappa: tuned so that RidgeCV R^2 ~ 0.8 (clearly nonlinear, still learnable)
REACTION_WIDTH = 0.1  # footprint width: about the spacing of the 11 x 5 centre layout

#: the 11 reaction types (name, phi); each has phi(0) = 0 and 0 <= phi(u) <= u for u >= 0
REACTION_TYPES = (
    ("linear", lambda u: u),
    ("Michaelis-Menten", lambda u: u / (1.0 + u)),
    ("Hill n=2", lambda u: u * u / (1.0 + u * u)),
    ("Hill n=3", lambda u: u**3 / (1.0 + u**3)),
    ("tanh", np.tanh),
    ("exponential saturation", lambda u: -np.expm1(-u)),
    ("Ricker", lambda u: u * np.exp(-u)),
    ("substrate inhibition", lambda u: u / (1.0 + u * u)),
    ("inhibited Michaelis-Menten", lambda u: u / (1.0 + u) ** 2),
    ("logarithmic", np.log1p),
    ("arctan", np.arctan),
)


def reaction_layout():
    """Centres, types and signs of the 55 reaction terms.

    Returns
    -------
    centers : ndarray of shape (55, 2)
        ``x_j = ((j % 11 + 0.5) / 11, (j // 11 + 0.5) / 5)``.
    types : ndarray of shape (55,)
        Index into :data:`REACTION_TYPES`, ``(j % 11 + 3 (j // 11)) % 11`` (the shift by 3 per
        row spreads every type over 5 different columns).
    signs : ndarray of shape (55,)
        ``+1`` (production) for even ``j``, ``-1`` (decay) for odd ``j``.
    """
    j = np.arange(N_REACTIONS)
    col, row = j % 11, j // 11
    centers = np.column_stack([(col + 0.5) / 11.0, (row + 0.5) / 5.0])
    types = (col + 3 * row) % 11
    signs = np.where(j % 2 == 0, 1.0, -1.0)
    return centers, types, signs


def _one_blas_thread():
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def reaction_term(u, C):
    """``R(u) = sum_t C[t] * phi_t(u)`` for coefficient fields ``C[t]`` (one per type ``t``).

    Same values as ``sum(C[t] * REACTION_TYPES[t][1](u))`` but with the shared intermediates
    (``exp(-u)``, ``1/(1+u)``, ``1/(1+u^2)``) computed once: the reactions are the most
    expensive part of a time step.
    """
    inv1 = 1.0 / (1.0 + u)
    u2 = u * u
    inv2 = 1.0 / (1.0 + u2)
    em = np.exp(-u)
    mm = u * inv1
    terms = {
        0: lambda: u,
        1: lambda: mm,
        2: lambda: np.multiply(u2, inv2),
        3: lambda: np.divide(u2 * u, 1.0 + u2 * u),
        4: lambda: np.tanh(u),
        5: lambda: np.negative(np.expm1(-u)),  # not 1 - em: that can exceed u by rounding for small u
        6: lambda: np.multiply(u, em),
        7: lambda: np.multiply(u, inv2),
        8: lambda: np.multiply(mm, inv1),
        9: lambda: np.log1p(u),
        10: lambda: np.arctan(u),
    }
    out = np.zeros_like(u)
    for t, Ct in C.items():
        phi = terms[t]()
        if phi is u or phi is mm:
            phi = phi * Ct
        else:
            phi *= Ct  # in place: phi is a fresh temporary
        out += phi
    return out


class BlockTridiagonalSolver:
    """Exact direct solver for ``M x = r`` with the ``n x n``-block tridiagonal CDR matrix.

    In the C-order numbering ``k = i1 * n + i2`` the matrix ``M = I + dt A`` couples the
    cells of one line ``i1 = const`` tridiagonally (x2-faces) and neighbouring lines through
    *diagonal* blocks (x1-faces).  Block LU without pivoting, ``S_0 = D_0``,
    ``S_i = D_i - diag(l_i) S_{i-1}^{-1} diag(u_{i-1})``, is well defined and stable because
    ``M`` is a column diagonally dominant M-matrix (its Schur complements are too).  The
    ``n`` dense ``n x n`` inverses are formed once; each solve is then ``2 n`` small matrix
    products ``(n x n) @ (n x m)`` over all ``m`` right-hand sides together, which is ~10x
    faster than :func:`scipy.sparse.linalg.splu`'s triangular solves for the 800-sample data
    set (measured on a busy 2-core machine, one BLAS thread, 32 x 32 grid, 800 right-hand
    sides: 0.04-0.07 s per solve vs 0.15 s).
    """

    def __init__(self, M, n):
        M = sp.csr_matrix(M)
        self.n = n
        blocks = [M[i * n : (i + 1) * n] for i in range(n)]
        D = [b[:, i * n : (i + 1) * n].toarray() for i, b in enumerate(blocks)]
        low = [None] + [blocks[i][:, (i - 1) * n : i * n].diagonal() for i in range(1, n)]
        up = [blocks[i][:, (i + 1) * n : (i + 2) * n].diagonal() for i in range(n - 1)] + [None]
        self.low = low
        self.Sinv, self.V = [], []
        S = D[0]
        for i in range(n):
            if i > 0:
                S = D[i] - low[i][:, None] * self.V[i - 1]
            Sinv = np.linalg.inv(S)
            self.Sinv.append(Sinv)
            self.V.append(Sinv * up[i][None, :] if i < n - 1 else None)

    def solve(self, r):
        """Solve for ``r`` of shape ``(n*n,)`` or ``(n*n, m)``."""
        n = self.n
        shape = r.shape
        R = np.asarray(r, dtype=np.float64).reshape(n, n, -1)
        X = np.empty_like(R)
        X[0] = self.Sinv[0] @ R[0]
        for i in range(1, n):  # forward: y_i = S_i^{-1} (r_i - l_i * y_{i-1})
            X[i] = self.Sinv[i] @ (R[i] - self.low[i][:, None] * X[i - 1])
        for i in range(n - 2, -1, -1):  # backward: x_i = y_i - S_i^{-1} diag(u_i) x_{i+1}
            X[i] -= self.V[i] @ X[i + 1]
        return X.reshape(shape)


def _default_stream(amplitude):
    def psi(x1, x2):
        return amplitude / np.pi * np.sin(np.pi * x1) * np.sin(np.pi * x2)

    return psi


def _default_source(amplitude):
    def f(x1, x2, t):
        r2 = (x1 - SOURCE_CENTER[0]) ** 2 + (x2 - SOURCE_CENTER[1]) ** 2
        return amplitude * (SOURCE_BACKGROUND + np.exp(-r2 / (2 * SOURCE_WIDTH**2))) + 0.0 * t

    return f


def _default_footprints(x1, x2):
    centers, _, _ = reaction_layout()
    r2 = (x1[None] - centers[:, 0].reshape((-1,) + (1,) * x1.ndim)) ** 2 + (
        x2[None] - centers[:, 1].reshape((-1,) + (1,) * x2.ndim)
    ) ** 2
    return np.exp(-r2 / (2 * REACTION_WIDTH**2))


def min_steps(grid, *, reaction_rate=REACTION_RATE, final_time=FINAL_TIME, multiple=12):
    """Fewest time steps (a multiple of ``multiple``) that keep ``u >= 0`` for *every* ``y`` in ``[0, 1]^55``.

    The positivity condition ``dt * rho(x) <= 1`` (module docstring) at its worst case over
    the sampled box: every decay coefficient at its largest, ``y_j = 1`` for odd ``j``, so
    ``rho_max = kappa max_x sum_{j odd} g_j(x)`` over the cell centres of ``grid``.  Checking
    the sampled ``y`` instead would make a given ``n_steps`` pass or fail with the seed.
    """
    x1, x2 = cell_centers(int(grid))
    _, _, signs = reaction_layout()
    G = _default_footprints(x1.ravel(), x2.ravel())
    rho_max = reaction_rate * G[signs < 0].sum(axis=0).max()
    return multiple * max(1, int(np.ceil(final_time * rho_max / multiple)))


def _eval_source(f, x1, x2, t, N):
    return np.broadcast_to(np.asarray(f(x1, x2, t), dtype=np.float64), (N,))


def cell_centers(grid):
    """Cell-centre coordinates ``(x1, x2)``, each of shape ``(grid, grid)`` (``indexing='ij'``)."""
    c = (np.arange(grid) + 0.5) / grid
    return np.meshgrid(c, c, indexing="ij")


def cdr_operator(grid, *, diffusion=DIFFUSION, velocity=VELOCITY):
    """Finite-volume matrix ``A`` with ``A u ~ -div(D grad u) + div(v u)`` (zero-flux boundary).

    Parameters
    ----------
    grid : int
        Cells per direction (``h = 1 / grid``).
    diffusion : float
        Constant ``D >= 0``.
    velocity : float or callable
        Amplitude ``a`` of the default vortex stream function, or a stream function
        ``psi(x1, x2)`` (vectorised).  ``v = (d psi/dx2, -d psi/dx1)``; boundary fluxes are
        set to zero, so ``psi`` should be constant on the boundary for ``div v = 0``.

    Returns
    -------
    A : scipy.sparse.csc_matrix of shape (grid**2, grid**2)
    """
    n = int(grid)
    h = 1.0 / n
    psi = velocity if callable(velocity) else _default_stream(float(velocity))
    idx = np.arange(n * n).reshape(n, n)
    nodes = np.arange(n + 1) * h
    # interior faces normal to x1: between cells (i1, i2) and (i1 + 1, i2), at x1 = (i1+1) h
    a1, b1 = idx[:-1, :].ravel(), idx[1:, :].ravel()
    X1, X2lo = np.meshgrid(nodes[1:-1], nodes[:-1], indexing="ij")
    _, X2hi = np.meshgrid(nodes[1:-1], nodes[1:], indexing="ij")
    w1 = ((psi(X1, X2hi) - psi(X1, X2lo)) / h).ravel()  # face average of v1 = d psi / dx2
    # interior faces normal to x2: between cells (i1, i2) and (i1, i2 + 1), at x2 = (i2+1) h
    a2, b2 = idx[:, :-1].ravel(), idx[:, 1:].ravel()
    X1lo, Y2 = np.meshgrid(nodes[:-1], nodes[1:-1], indexing="ij")
    X1hi, _ = np.meshgrid(nodes[1:], nodes[1:-1], indexing="ij")
    w2 = (-(psi(X1hi, Y2) - psi(X1lo, Y2)) / h).ravel()  # face average of v2 = -d psi / dx1
    a = np.concatenate([a1, a2])
    b = np.concatenate([b1, b2])
    w = np.concatenate([w1, w2])  # normal velocity, positive from a to b
    d = float(diffusion) / h**2
    wp = np.maximum(w, 0.0) / h  # upwind: a -> b transport of u_a
    wm = np.minimum(w, 0.0) / h  # upwind: b -> a transport of u_b (wm <= 0)
    rows = np.concatenate([a, a, b, b])
    cols = np.concatenate([a, b, b, a])
    vals = np.concatenate([d + wp, -d + wm, d - wm, -d - wp])
    return sp.csc_matrix((vals, (rows, cols)), shape=(n * n, n * n))


def interpolation_matrix(grid, points):
    """Sparse bilinear interpolation from cell centres to ``points`` (shape (p, 2)).

    Points within half a cell of the boundary use constant extrapolation in that direction.
    """
    n = int(grid)
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    s = np.clip(pts * n - 0.5, 0.0, n - 1.0)  # position in cell-centre index units
    lo = np.minimum(np.floor(s).astype(int), n - 2) if n > 1 else np.zeros_like(s, dtype=int)
    frac = s - lo
    rows, cols, vals = [], [], []
    for di in (0, 1):
        for dj in (0, 1):
            wgt = (frac[:, 0] if di else 1 - frac[:, 0]) * (frac[:, 1] if dj else 1 - frac[:, 1])
            rows.append(np.arange(len(pts)))
            cols.append(np.minimum(lo[:, 0] + di, n - 1) * n + np.minimum(lo[:, 1] + dj, n - 1))
            vals.append(wgt)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(pts), n * n))


def _integral(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_) and np.isfinite(value)


def _check_solver_arguments(grid, n_steps, final_time, diffusion, velocity, source, reaction_rate, chunk_size):
    """ValueError/TypeError naming the argument, before any of them reaches numpy or scipy."""
    for name, value, low in (("grid", grid, 2), ("n_steps", n_steps, 1), ("chunk_size", chunk_size, 1)):
        if not _integral(value) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not _real(final_time) or final_time <= 0:
        raise ValueError(f"final_time must be a finite number > 0, got {final_time!r}")
    if not _real(diffusion) or diffusion < 0:
        raise ValueError(f"diffusion must be a finite number >= 0, got {diffusion!r}")
    if not _real(reaction_rate):
        raise ValueError(f"reaction_rate must be a finite number, got {reaction_rate!r}")
    for name, value in (("velocity", velocity), ("source", source)):
        if not (callable(value) or _real(value)):
            raise TypeError(f"{name} must be a finite number or a callable, got {value!r}")


def solve_cdr(
    y,
    *,
    grid=32,
    n_steps=96,
    final_time=FINAL_TIME,
    diffusion=DIFFUSION,
    velocity=VELOCITY,
    source=SOURCE_AMPLITUDE,
    reaction_rate=REACTION_RATE,
    footprints=None,
    u0=None,
    sensors=SENSORS,
    times=OBSERVATION_TIMES,
    return_fields=False,
    chunk_size=200,
):
    """Solve the CDR problem for one or many reaction-coefficient vectors ``y``.

    Parameters
    ----------
    y : array-like of shape (55,) or (n_samples, 55)
        Reaction coefficients.
    grid : int, default=32
        Cells per direction.
    n_steps : int, default=96
        Time steps on ``(0, final_time]`` (every observation time must be a step time).
    final_time : float, default=1.0
    diffusion : float, default=0.02
    velocity : float or callable, default=1.0
        Vortex amplitude or stream function ``psi(x1, x2)`` (see :func:`cdr_operator`).
    source : float or callable, default=10.0
        Amplitude ``A`` of the default source ``A (0.1 + Gaussian bump)``, or ``f(x1, x2, t)``
        (vectorised).
    reaction_rate : float, default=15.0
        ``kappa``.
    footprints : callable or None, default=None
        ``g(x1, x2) -> array (55, *x1.shape)``; ``None`` gives the Gaussian footprints.
    u0 : None, float, callable or array of shape (grid, grid), default=None
        Initial condition (``None``: zero, as in the paper).
    sensors : array of shape (p, 2), default=SENSORS
        Points in the closed unit square.
    times : array of shape (q,), default=OBSERVATION_TIMES
    return_fields : bool, default=False
        Also return the fields at the observation times and the mass budget.
    chunk_size : int, default=200
        Samples solved together (bounds memory).

    Returns
    -------
    obs : ndarray of shape (n_samples, q * p)
        ``obs[:, k * p + s] = u(sensors[s], times[k])`` (time-major).
    extra : dict, only if ``return_fields``
        ``fields`` (n_samples, q, grid, grid), ``mass`` (n_samples, n_steps + 1) with
        ``mass[:, m] = h^2 sum u^m``, and ``production`` (n_samples, n_steps) with
        ``production[:, m] = dt h^2 sum (f(t_m) + R(u^m))``.

    Raises
    ------
    ValueError
        For a non-finite ``y``, a ``grid`` below 2, a non-positive ``n_steps``,
        ``final_time`` or ``chunk_size``, a negative ``diffusion``, sensors outside the
        unit square, observation times that are not step times, or a step too long for the
        positivity condition ``dt * rho <= 1`` (module docstring).
    TypeError
        For a ``velocity`` or ``source`` that is neither a finite number nor a callable.
    """
    y = np.asarray(y, dtype=np.float64)
    single = y.ndim == 1
    Y = np.atleast_2d(y)
    if Y.ndim != 2 or Y.shape[1] != N_REACTIONS or Y.shape[0] == 0:
        raise ValueError(f"y must have shape ({N_REACTIONS},) or (n_samples, {N_REACTIONS}), got {y.shape}")
    if not np.isfinite(Y).all():
        raise ValueError("y must be finite, got NaN or infinity")
    _check_solver_arguments(grid, n_steps, final_time, diffusion, velocity, source, reaction_rate, chunk_size)
    sensors = np.asarray(sensors, dtype=np.float64)
    if sensors.ndim != 2 or sensors.shape[1] != 2 or not ((sensors >= 0) & (sensors <= 1)).all():
        raise ValueError(f"sensors must be an array of shape (p, 2) with points in [0, 1]^2, got {sensors!r}")
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or not np.isfinite(times).all():
        raise ValueError(f"times must be a non-empty 1-D array of finite values, got {times!r}")
    n = int(grid)
    N = n * n
    dt = final_time / n_steps
    steps = np.asarray(times, dtype=np.float64) / dt
    obs_steps = np.rint(steps).astype(int)
    # 1e-9: round-off slack when checking that t_k / dt is an integer
    if np.any(np.abs(steps - obs_steps) > 1e-9) or np.any(obs_steps < 0) or np.any(obs_steps > n_steps):
        raise ValueError("every observation time must be a multiple of final_time / n_steps in [0, final_time]")
    x1, x2 = cell_centers(n)
    x1f, x2f = x1.ravel(), x2.ravel()
    f = source if callable(source) else _default_source(float(source))
    G = (footprints or _default_footprints)(x1f, x2f).reshape(N_REACTIONS, N)
    _, types, signs = reaction_layout()
    # coefficients c_j = kappa s_j y_j, grouped by type: C_t = c[:, type t] @ G[type t]
    coef = reaction_rate * signs * Y
    decay = np.maximum(-coef, 0.0) @ G  # rho(x) per sample, shape (n_samples, N)
    if dt * decay.max(initial=0.0) > 1.0:
        raise ValueError("dt * (decay rate) > 1: the explicit reaction step may lose positivity; increase n_steps")
    M = sp.identity(N, format="csr") + dt * cdr_operator(n, diffusion=diffusion, velocity=velocity)
    # one BLAS thread: the many small (n x n) @ (n x m) products were ~50x slower with
    # OpenBLAS threads on a busy 2-core machine (measured)
    with _one_blas_thread():
        solver = BlockTridiagonalSolver(M, n)
        P = interpolation_matrix(n, sensors)
        p, q = P.shape[0], len(obs_steps)
        if u0 is None:
            u_init = np.zeros(N)
        elif callable(u0):
            u_init = np.asarray(u0(x1, x2), dtype=np.float64).ravel()
        else:
            u_init = np.broadcast_to(np.asarray(u0, dtype=np.float64), (n, n)).ravel()
        f_const = None if callable(source) else _eval_source(f, x1f, x2f, 0.0, N)  # default is time-independent
        n_samples = Y.shape[0]
        obs = np.empty((n_samples, q, p))
        if return_fields:
            fields = np.empty((n_samples, q, n, n))
            mass = np.empty((n_samples, n_steps + 1))
            production = np.empty((n_samples, n_steps))
        h2 = 1.0 / N
        for start in range(0, n_samples, chunk_size):
            sl = slice(start, min(start + chunk_size, n_samples))
            m = sl.stop - sl.start
            # coefficient fields, (N, m) per used type (columns = samples)
            C = {t: (coef[sl][:, types == t] @ G[types == t]).T.copy() for t in np.unique(types)}
            u = np.repeat(u_init[:, None], m, axis=1)
            for k in np.flatnonzero(obs_steps == 0):
                obs[sl, k] = (P @ u).T
                if return_fields:
                    fields[sl, k] = u.T.reshape(m, n, n)
            if return_fields:
                mass[sl, 0] = h2 * u.sum(axis=0)
            for step in range(n_steps):
                t = step * dt
                fv = f_const if f_const is not None else _eval_source(f, x1f, x2f, t, N)
                rhs = reaction_term(u, C)
                rhs += fv[:, None]
                if return_fields:
                    production[sl, step] = dt * h2 * rhs.sum(axis=0)
                rhs *= dt
                rhs += u
                u = solver.solve(rhs)
                if return_fields:
                    mass[sl, step + 1] = h2 * u.sum(axis=0)
                for k in np.flatnonzero(obs_steps == step + 1):
                    obs[sl, k] = (P @ u).T
                    if return_fields:
                        fields[sl, k] = u.T.reshape(m, n, n)
    out = obs.reshape(n_samples, q * p)
    if single:
        out = out[0]
    if return_fields:
        extra = {"fields": fields, "mass": mass, "production": production}
        if single:
            extra = {key: val[0] for key, val in extra.items()}
        return out, extra
    return out
