"""SlimTrainRegressor on a real Dask cluster (the ``dask`` extra; see docs/scaling.md).

One ``LocalCluster`` of two worker *processes* serves the whole module, so every model
and every fold is pickled to another interpreter and back, as on a real cluster.
"""

import numpy as np
import pytest
import torch

distributed = pytest.importorskip("dask.distributed")
pytest.importorskip("dask_ml")

import dask
import dask.array as da
import joblib
from dask_ml.model_selection import HyperbandSearchCV
from dask_ml.wrappers import Incremental
from sklearn.model_selection import GridSearchCV

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks

GRID = {"learning_rate": [1e-3, 1e-2], "memory_depth": [0, 2]}


@pytest.fixture(scope="module")
def client():
    # 2 worker processes with 1 thread each (the nanny also sets OMP_NUM_THREADS=1 there)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(autouse=True)
def one_torch_thread():
    # The workers run torch on one thread (the nanny sets OMP_NUM_THREADS=1); the local
    # reference runs do the same, so both sides make the same floating-point operations in
    # the same order (and tiny models are also much faster on a busy machine that way).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _search():
    est = SlimTrainRegressor(max_iter=2, batch_size=16, random_state=0)
    return GridSearchCV(est, GRID, cv=2)


def test_grid_search_on_dask_matches_local(client):
    X, y = make_peaks(200, random_state=0)
    local = _search().set_params(n_jobs=1).fit(X, y)
    with distributed.get_task_stream(client) as tasks, joblib.parallel_backend("dask"):
        remote = _search().fit(X, y)

    assert len(tasks.data) >= 8  # the 2 folds x 4 candidates ran on the workers
    assert remote.cv_results_["params"] == local.cv_results_["params"]
    # Every fit is a function of (random_state, fold) only: the same seeds, the same rows in
    # the same order, one torch thread on both sides, the same machine. The scores are then
    # equal to the bit in practice; 1e-12 (R2 values are O(1)) leaves room only for a
    # library picking another kernel in another process, nothing a wrong seed, fold or
    # parameter could hide in (those change the scores in the second decimal).
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], rtol=1e-12, atol=0)
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(remote.predict(X[:20]), local.predict(X[:20]), rtol=1e-12, atol=1e-12)


def test_incremental_streams_blocks(client):
    # Blocks of 192 rows, a multiple of batch_size: a block whose last mini-batch is
    # shorter than the head's width (here 17) ends partial_fit on an under-determined head
    # solve, and the streamed model then predicts erratically (docs/scaling.md).
    X, y = make_peaks(1152, random_state=0)
    X_test, y_test = make_peaks(400, random_state=1)
    Xd, yd = da.from_array(X, chunks=(192, 2)), da.from_array(y, chunks=192)
    assert Xd.numblocks == (6, 1)
    est = SlimTrainRegressor(learning_rate=1e-2, batch_size=16, random_state=0)

    one = Incremental(est, shuffle_blocks=False).fit(Xd[:192], yd[:192])
    inc = Incremental(est, shuffle_blocks=False).fit(Xd, yd)
    model = inc.estimator_
    assert model.n_iter_ == 6 and model.t_ == 1152  # one partial_fit per block
    assert one.estimator_.n_iter_ == 1 and one.estimator_.t_ == 192
    assert inc.score(X_test, y_test) > one.score(X_test, y_test) + 0.3

    # The model went from worker to worker between blocks (pickled with its optimizer
    # state, head, memory and rng): it is the same as partial_fit over the blocks here
    # (same tolerance argument as above).
    ref = SlimTrainRegressor(learning_rate=1e-2, batch_size=16, random_state=0)
    for start in range(0, 1152, 192):
        ref.partial_fit(X[start : start + 192], y[start : start + 192])
    np.testing.assert_allclose(model.ridge_path_, ref.ridge_path_, rtol=1e-12)
    np.testing.assert_allclose(model.predict(X_test), ref.predict(X_test), rtol=1e-12, atol=1e-12)

    # Incremental.partial_fit continues from estimator_ (a second pass over the blocks)
    inc.partial_fit(Xd, yd)
    assert inc.estimator_.n_iter_ == 12 and inc.estimator_.t_ == 2304

    # the plots find the model inside the wrapper: one heatmap column per block (12 steps each)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sklearn_slimtrain.plotting import plot_ridge_path

    assert plot_ridge_path(inc).images[0].get_array().shape == (12, 12)
    plt.close("all")


def test_hyperband_search_stops_models_early(client):
    X, y = make_peaks(400, random_state=0)
    Xd, yd = da.from_array(X, chunks=(100, 2)), da.from_array(y, chunks=100)
    est = SlimTrainRegressor(batch_size=16, random_state=0)
    search = HyperbandSearchCV(est, GRID, max_iter=3, random_state=0)
    # dask >= 2025.3 refuses the synchronous dask.persist that dask-ml 2025.1 calls inside
    # the client's event loop ("Attempting to use an asynchronous Client in a synchronous
    # context of `dask.compute`"); naming the client's own `get` as the scheduler makes
    # dask.persist hand the work to that client again (docs/scaling.md).
    with dask.config.set(scheduler=client.get):
        search.fit(Xd, yd)

    assert search.best_params_["learning_rate"] in GRID["learning_rate"]
    assert search.best_params_["memory_depth"] in GRID["memory_depth"]
    calls = np.asarray(search.cv_results_["partial_fit_calls"])
    # max_iter=3 (aggressiveness 3): one bracket starts 3 models for 1 call each and keeps
    # the best for 3, the other trains 2 models for 3 calls
    assert calls.max() == 3 and (calls < 3).sum() >= 2
    assert search.metadata_["partial_fit_calls"] == calls.sum()
    assert np.isfinite(search.best_score_)
    assert search.best_estimator_.n_iter_ == 3
