import numpy as np
import pytest

from sklearn_slimtrain.datasets import load_mnist_sample, make_oscillator, make_peaks, peaks


def test_peaks_formula_and_determinism():
    np.testing.assert_allclose(peaks(0.0, 0.0), 8 / 3 * np.exp(-1), rtol=1e-14)
    X, y = make_peaks(50, random_state=3)
    X2, y2 = make_peaks(50, random_state=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert X.shape == (50, 2) and np.all(np.abs(X) <= 3)
    np.testing.assert_allclose(y, peaks(X[:, 0], X[:, 1]))
    _, noisy = make_peaks(50, noise=0.1, random_state=3)
    assert 0.05 < np.std(noisy - y) < 0.2


def test_oscillator_solves_its_ode():
    n_times, T = 4000, 5.0
    X, Y = make_oscillator(5, n_times=n_times, final_time=T, random_state=0)
    dt = T / n_times
    omega, zeta = X[:, [0]], X[:, [1]]
    d1 = (Y[:, 2:] - Y[:, :-2]) / (2 * dt)
    d2 = (Y[:, 2:] - 2 * Y[:, 1:-1] + Y[:, :-2]) / dt**2
    residual = d2 + 2 * zeta * omega * d1 + omega**2 * Y[:, 1:-1]
    assert np.max(np.abs(residual)) < 1e-3 * np.max(np.abs(d2))
    # x(0) = x0 and x'(0) = v0: extrapolate the first samples back to t = 0
    x_at_0 = 2 * Y[:, 0] - Y[:, 1]
    np.testing.assert_allclose(x_at_0, X[:, 2], atol=1e-3)


@pytest.mark.parametrize(
    ("make", "kwargs", "name"),
    [
        (make_peaks, {"n_samples": -1}, "n_samples"),
        (make_peaks, {"n_samples": 2.5}, "n_samples"),
        (make_peaks, {"n_samples": True}, "n_samples"),  # an Integral to Python, not a count
        (make_oscillator, {"n_samples": True}, "n_samples"),
        (make_oscillator, {"n_times": True}, "n_times"),
        (make_peaks, {"noise": -0.1}, "noise"),
        (make_peaks, {"noise": float("nan")}, "noise"),
        (make_peaks, {"random_state": "seed"}, "random_state"),
        (make_oscillator, {"n_times": 0}, "n_times"),
        (make_oscillator, {"final_time": 0.0}, "final_time"),
        (make_oscillator, {"noise": -1.0}, "noise"),
        (make_peaks, {"noise": True}, "noise"),  # a Real to Python: noise of sd 1, not "noise on"
        (make_oscillator, {"final_time": True}, "final_time"),
    ],
)
def test_generators_reject_bad_parameters(make, kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter of {make.__name__}"):
        make(**{"n_samples": 5, **kwargs})


def test_load_mnist_sample_rejects_a_non_boolean_return_x_y():
    with pytest.raises(ValueError, match="'return_X_y' parameter of load_mnist_sample"):
        load_mnist_sample(return_X_y="yes")  # refused before the file is looked for
