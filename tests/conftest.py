import numpy as np
import pytest
import torch

from sklearn_slimtrain.datasets import make_oscillator, make_peaks


@pytest.fixture(scope="session")
def peaks_data():
    X, y = make_peaks(300, random_state=0)
    return X, y


@pytest.fixture(scope="session")
def multi_data():
    X, y = make_oscillator(120, n_times=4, random_state=0)
    return X, y


class FrozenFeatures(torch.nn.Module):
    """Random tanh features with no trainable parameters (a frozen extractor)."""

    def __init__(self, n_in=2, n_out=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("K", torch.randn(n_in, n_out, generator=g, dtype=torch.float64))
        self.register_buffer("c", torch.randn(n_out, generator=g, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(x @ self.K.to(x.dtype) + self.c.to(x.dtype))


@pytest.fixture
def frozen():
    return FrozenFeatures


def tikhonov(Z, Y, lam):
    """Closed form of min (1/N) sum 1/2||W z - y||^2 + lam/2 ||W||^2 (rows z_i of Z)."""
    N, p = Z.shape
    return np.linalg.solve(Z.T @ Z / N + lam * np.eye(p), Z.T @ Y / N)


def with_offset(solve, Z1, Y, *args, weights=None):
    """``solve(Z1, Y, *args)`` as the estimator applies it to a head with an intercept
    (``Z1``'s last column is ones): on the targets centred by their (weighted) mean, whose
    offset then joins the intercept row."""
    offset = np.average(Y, axis=0, weights=weights)
    W = np.array(solve(Z1, Y - offset, *args), dtype=np.float64)
    W[-1] += offset
    return W


def gcv_ridge(Z, Y):
    """Brute-force GCV ridge of the full-data Tikhonov problem over the final head solve's grid.

    GCV of the vectorised system (``N t`` rows, trace ``t tr(infl)``) from explicit
    influence matrices.
    """
    from sklearn_slimtrain._slimtik import FINAL_GRID_SIZE, global_candidates

    (N, p), t = Z.shape, Y.shape[1]
    grid = global_candidates(torch.tensor(Z.T @ Z / N), FINAL_GRID_SIZE).numpy()

    def gcv(lam):
        W = tikhonov(Z, Y, lam)
        infl = Z @ np.linalg.solve(Z.T @ Z / N + lam * np.eye(p), Z.T / N)
        return N * t * np.sum((Z @ W - Y) ** 2) / (N * t - t * np.trace(infl)) ** 2

    return grid[int(np.argmin([gcv(lam) for lam in grid]))]
