"""The CPU step solved on NumPy views against the same step in torch."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info
from torch import nn

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
from sklearn_slimtrain import _solver as solver
from sklearn_slimtrain._heads import DenseLayout, make_layout
from sklearn_slimtrain._solver import HOST_MAX_WEIGHTS, TRIDIAGONAL_MIN_WEIGHTS, SlimTikHead
from sklearn_slimtrain.datasets import make_peaks

CPU = torch.device("cpu")


def _head(host, q=6, t=2, memory=3, ridge=None, rule="global", dtype=torch.float64, device=CPU, tridiagonal=None,
          batch_size=8):
    return SlimTikHead(DenseLayout(q - 1, t, True), memory_depth=memory, batch_size=batch_size, ridge=ridge,
                       ridge_init=1.0, max_change=0.5, dtype=dtype, device=device, rule=rule, host=host,
                       tridiagonal=tridiagonal)


@pytest.mark.parametrize("ridge, rule", [(None, "global"), (None, "matlab"), (1e-3, "global")])
@pytest.mark.parametrize("memory", [0, 3])
def test_numpy_and_torch_steps_follow_the_same_path(ridge, rule, memory):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 2, generator=g, dtype=torch.float64)
    heads = {host: _head(host, memory=memory, ridge=ridge, rule=rule) for host in (True, False)}
    assert heads[True].on_host and not heads[False].on_host
    for k in range(25):
        n = 8 if k % 5 else 11  # a merged (longer) batch now and then
        Z = torch.randn(n, 5, generator=g, dtype=torch.float64)
        Y = Z @ W + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
        coefs = {host: head.step(Z, Y) for host, head in heads.items()}
        assert isinstance(coefs[True], torch.Tensor) and coefs[True].dtype == torch.float64
        torch.testing.assert_close(coefs[True], coefs[False], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(heads[True].ridge_path(), heads[False].ridge_path(), rtol=1e-9)
    torch.testing.assert_close(heads[True].memory.total(), heads[False].memory.total(), rtol=1e-12, atol=0)
    assert len(heads[True].ridge_path()) == 25


def test_numpy_step_keeps_a_float32_head_in_float32():
    head = _head(True, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        coef = head.step(torch.randn(8, 5, generator=g), torch.randn(8, 2, generator=g))
    assert coef.dtype == torch.float32 and head.ridge.dtype == torch.float32
    assert head.ridge_path().shape == (3,) and np.isfinite(head.ridge_path()).all()


def test_large_heads_and_accelerators_stay_in_torch():
    assert not _head(None, q=HOST_MAX_WEIGHTS + 1).on_host
    assert _head(None, q=HOST_MAX_WEIGHTS + 1, t=1, memory=0).on_host  # ... unless the step is tridiagonal
    assert _head(None, q=HOST_MAX_WEIGHTS).on_host
    # any device but the CPU (the meta device stands in for an accelerator), even when asked
    assert not _head(True, device=torch.device("meta")).on_host


def _numpy_blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in NUMPY_BLAS]


NUMPY_BLAS = {lib["filepath"] for lib in solver._numpy_blas().info()}


class _RecordBlasThreads(nn.Module):
    """Identity-like features that record NumPy's BLAS thread counts during training."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen.append(_numpy_blas_threads())
        return torch.tanh(x * self.scale)


@pytest.mark.skipif(not NUMPY_BLAS, reason="this NumPy does not ship its own BLAS (e.g. conda)")
def test_fit_runs_numpys_blas_on_one_thread_and_restores_it():
    # NumPy's BLAS threads next to torch's OpenMP threads oversubscribe the cores (a step
    # several times slower); the estimator limits them to one for its epochs only.
    X, y = make_peaks(64, random_state=0)
    before = _numpy_blas_threads()
    model = SlimTrainRegressor(_RecordBlasThreads(), batch_size=16, max_iter=2, random_state=0).fit(X, y)
    seen = model.feature_extractor_.seen[-8:]  # the 2 x 4 steps (before them: the set-up probe)
    assert all(counts == [1] * len(before) for counts in seen)
    assert _numpy_blas_threads() == before


class _ProcessWideCount:
    """threadpoolctl's save-on-entry, restore-on-exit limiter over one process-wide count.

    The reference counting alone, whatever the library does with calls from several threads
    (the next test runs the same scenario on NumPy's own OpenBLAS).
    """

    def __init__(self):
        self.threads = 2

    def limit(self, limits):
        controller, saved = self, self.threads

        class Limiter:
            def restore_original_limits(self):
                controller.threads = saved

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.restore_original_limits()

        self.threads = limits
        return Limiter()


def test_overlapping_limits_in_threads_restore_the_thread_count(monkeypatch):
    # fits in threads (joblib's threading backend, Dask workers): each epoch's limit used to
    # save and restore the process-wide count on its own, so when one epoch began while another
    # ran, the later one saved the 1 and restored it last: NumPy's BLAS stayed on one thread
    # for the rest of the process (measured after 4 fits on 2 threads)
    import threading

    blas = _ProcessWideCount()
    monkeypatch.setattr(solver, "_numpy_blas", lambda: blas)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with solver._blas_one_thread():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with solver._blas_one_thread():
            second_in.set()
            first_out.wait(10)
            seen["after the first left"] = blas.threads

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert seen == {"after the first left": 1}  # still limited for the one inside
    assert blas.threads == 2


@pytest.mark.skipif(not NUMPY_BLAS, reason="this NumPy does not ship its own BLAS (e.g. conda)")
def test_overlapping_limits_in_threads_restore_numpys_blas():
    # the same with NumPy's own OpenBLAS, whose 0.3.30-0.3.31 ignore a raise of the count from
    # another thread than the one that lowered it while that one lives (as joblib's workers do):
    # restoring from the last thread to leave left 1 for the process (a review)
    import threading

    before = _numpy_blas_threads()
    first_in, second_in, first_out, done = (threading.Event() for _ in range(4))

    def first():
        with solver._blas_one_thread():
            first_in.set()
            second_in.wait(10)
        first_out.set()
        done.wait(10)  # alive until the end, as a pool's worker

    def second():
        first_in.wait(10)
        with solver._blas_one_thread():
            second_in.set()
            first_out.wait(10)
        assert _numpy_blas_threads() == before
        done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert done.is_set() and _numpy_blas_threads() == before


def test_estimator_results_match_the_torch_step(monkeypatch):
    # The whole fit (extractor updates through the solved head included) follows the
    # torch step to rounding; a float64 network keeps the comparison tight.
    X, y = make_peaks(96, random_state=1)
    preds = {}
    for limit in (HOST_MAX_WEIGHTS, 0):
        monkeypatch.setattr(solver, "HOST_MAX_WEIGHTS", limit)
        torch.manual_seed(0)  # the same initial extractor
        model = SlimTrainRegressor(ResNetFeatures(2, width=6), batch_size=16, max_iter=3, dtype="float64",
                                   memory_depth=2, random_state=0).fit(X, y)
        assert model._head.on_host is (limit > 0)
        preds[limit] = model.predict(X)
    np.testing.assert_allclose(preds[HOST_MAX_WEIGHTS], preds[0], rtol=1e-8, atol=1e-10)


def test_a_head_from_an_older_pickle_finds_its_path():
    # heads pickled before the path was cached lack the attribute: the class default applies
    head = _head(None)
    del head.__dict__["_solve_on_host"]
    g = torch.Generator().manual_seed(2)
    head.step(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64))
    assert head._solve_on_host is True and head.on_host


def test_numpy_batches_share_a_read_only_ones_column():
    layout = DenseLayout(3, 1, True)
    Z = np.arange(12.0).reshape(4, 3)
    A = layout.design(Z)
    np.testing.assert_array_equal(A, np.column_stack([Z, np.ones(4)]))
    A[:, -1] = 7.0  # the batch matrix is a new array: writing to it leaves the cache alone
    np.testing.assert_array_equal(layout.design(Z)[:, -1], np.ones(4))
    assert layout.design(Z[:2]).shape == (2, 4) and layout.design(Z.astype(np.float32)).dtype == np.float32


def test_wide_heads_without_memory_take_the_tridiagonal_step():
    q = TRIDIAGONAL_MIN_WEIGHTS
    assert _head(None, q=q, t=1, memory=0).tridiagonal
    assert _head(None, q=2 * HOST_MAX_WEIGHTS, t=1, memory=0).tridiagonal
    assert _head(None, q=2 * q, t=2, memory=0).tridiagonal
    assert not _head(None, q=q - 1, t=1, memory=0).tridiagonal  # small: the eigendecomposition is as cheap
    assert not _head(None, q=q, t=3, memory=0).tridiagonal  # many targets per weight
    assert not _head(None, q=q, t=1, memory=1).tridiagonal  # memory: G is not the batch's Gram matrix
    assert not _head(False, q=q, t=1, memory=0).tridiagonal  # torch asked for
    assert not _head(None, q=q, t=1, memory=0, device=torch.device("meta")).tridiagonal  # an accelerator
    assert not _head(None, q=q, t=1, memory=0, tridiagonal=False).tridiagonal
    assert _head(None, q=6, t=2, memory=0, tridiagonal=True).tridiagonal


@pytest.mark.parametrize("ridge, rule", [(None, "global"), (None, "matlab"), (1e-3, "global")])
@pytest.mark.parametrize("q, t", [(70, 1), (6, 3)])
def test_tridiagonal_and_eigendecomposition_heads_follow_the_same_path(q, t, ridge, rule):
    g = torch.Generator().manual_seed(3)
    W = torch.randn(q - 1, t, generator=g, dtype=torch.float64)
    heads = {tri: _head(None, q=q, t=t, memory=0, ridge=ridge, rule=rule, tridiagonal=tri, batch_size=40)
             for tri in (True, False)}
    assert heads[True].tridiagonal and not heads[False].tridiagonal
    for k in range(25):
        n = 40 if k % 5 else 23  # a shorter batch now and then
        Z = torch.randn(n, q - 1, generator=g, dtype=torch.float64)
        Y = Z @ W + 0.1 * torch.randn(n, t, generator=g, dtype=torch.float64)
        weights = None if k % 3 else torch.rand(n, generator=g, dtype=torch.float64) + 0.5
        mass = None if weights is None else float(weights.sum())
        with heads[True].stepping():
            coefs = {tri: head.step(Z, Y, weights, mass) for tri, head in heads.items()}
        assert isinstance(coefs[True], torch.Tensor) and coefs[True].dtype == torch.float64
        torch.testing.assert_close(coefs[True], coefs[False], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(heads[True].ridge_path(), heads[False].ridge_path(), rtol=1e-12)


def test_estimator_results_match_without_the_tridiagonal_step(monkeypatch):
    # A default fit (no memory) with a wide network takes the tridiagonal step; the whole
    # fit follows the eigendecomposition step to rounding.
    X, y = make_peaks(96, random_state=2)
    preds, paths = {}, {}
    for limit in (TRIDIAGONAL_MIN_WEIGHTS, 10**9):
        monkeypatch.setattr(solver, "TRIDIAGONAL_MIN_WEIGHTS", limit)
        torch.manual_seed(0)  # the same initial extractor
        model = SlimTrainRegressor(ResNetFeatures(2, width=64, depth=2), batch_size=16, max_iter=3,
                                   dtype="float64", random_state=0).fit(X, y)
        assert model._head.tridiagonal is (limit < 10**9)
        preds[limit], paths[limit] = model.predict(X), model.ridge_path_
    # rounding differences of the head (1e-15) pass through 48 Adam steps on 4,500 weights:
    # measured 2e-9 of the predictions' scale
    scale = np.abs(preds[10**9]).max()
    np.testing.assert_allclose(preds[TRIDIAGONAL_MIN_WEIGHTS], preds[10**9], rtol=0, atol=1e-7 * scale)
    np.testing.assert_allclose(paths[TRIDIAGONAL_MIN_WEIGHTS], paths[10**9], rtol=1e-9)


def test_transposed_convolution_head_without_memory_takes_the_tridiagonal_step():
    # The paper's final layer (257 weights, one channel) with the default memory_depth=0:
    # statistics formed by torch, the step tridiagonal; it follows the torch step.
    g = torch.Generator().manual_seed(4)
    heads = {}
    for tri in (None, False):
        layout = make_layout(nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1), (16, 6, 6), 144, True,
                             torch.float64, CPU)
        heads[tri] = SlimTikHead(layout, memory_depth=0, batch_size=4, ridge=None, ridge_init=0.1, max_change=0.5,
                                 dtype=torch.float64, device=CPU, tridiagonal=tri)
    assert heads[None].tridiagonal and not heads[False].tridiagonal and heads[None].coef.shape == (257, 1)
    for _ in range(6):
        Z = torch.randn(4, 16, 6, 6, generator=g, dtype=torch.float64)
        Y = torch.randn(4, 144, generator=g, dtype=torch.float64)
        with heads[None].stepping():
            coefs = {tri: head.step(Z, Y) for tri, head in heads.items()}
        torch.testing.assert_close(coefs[None], coefs[False], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(heads[None].ridge_path(), heads[False].ridge_path(), rtol=1e-12)
