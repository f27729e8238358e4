"""Offline regression problems generated from formulas (deterministic per seed)."""

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_oscillator", "make_peaks", "peaks"]


def peaks(x, y):
    """MATLAB's ``peaks`` function (the slimTrain paper's section 4.1).

    .. math::

        3(1-x)^2 e^{-x^2-(y+1)^2} - 10(x/5 - x^3 - y^5) e^{-x^2-y^2}
        - \\tfrac13 e^{-(x+1)^2-y^2}
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (
        3 * (1 - x) ** 2 * np.exp(-(x**2) - (y + 1) ** 2)
        - 10 * (x / 5 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1) ** 2) - y**2) / 3
    )


def make_peaks(n_samples=2000, *, noise=0.0, random_state=None):
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


def make_oscillator(n_samples=500, *, n_times=32, final_time=5.0, noise=0.0, random_state=None):
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
