"""``sample_weight``: the weighted objective, its invariants and its errors.

References are brute force: the weighted Tikhonov solution from a least-squares
problem on rows scaled by ``sqrt(w_i)``, GCV by explicit influence matrices, and
scikit-learn's own repetition check.
"""

import numpy as np
import pytest
import torch
from sklearn import config_context
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_sample_weight_equivalence_on_dense_data

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks
from tests.conftest import FrozenFeatures, gcv_ridge, tikhonov, with_offset


def _design(extractor, X):
    Z = extractor(torch.tensor(X, dtype=torch.float64)).numpy()
    return np.hstack([Z, np.ones((len(Z), 1))])


def _weighted_tikhonov(Z, Y, w, lam):
    """argmin (1/sum w) sum_i w_i 1/2 ||W z_i - y_i||^2 + lam/2 ||W||^2, by least squares.

    The stacked system [sqrt(w/M) Z; sqrt(lam) I] W = [sqrt(w/M) Y; 0] (no normal equations).
    """
    root = np.sqrt(w / w.sum())[:, None]
    A = np.vstack([root * Z, np.sqrt(lam) * np.eye(Z.shape[1])])
    B = np.vstack([root * Y, np.zeros((Z.shape[1], Y.shape[1]))])
    return np.linalg.lstsq(A, B, rcond=None)[0]


def _data(n=67, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    Y = np.column_stack([np.sin(X[:, 0]) + X[:, 1] ** 2, np.cos(X[:, 1])]) + 0.05 * rng.standard_normal((n, 2))
    w = rng.uniform(0.1, 5.0, n)
    return X, Y, w


@pytest.mark.parametrize("lam", [1e-3, 0.5])
@pytest.mark.parametrize("batch_size", [10, 67])
def test_one_epoch_full_memory_is_the_weighted_tikhonov_solution(lam, batch_size):
    # a frozen extractor, a fixed ridge and a memory holding every batch: one epoch of
    # weighted slimTik solves the weighted Tikhonov problem exactly, whatever the batches
    X, Y, w = _data()
    ext = FrozenFeatures(n_out=7)
    model = SlimTrainRegressor(ext, ridge=lam, memory_depth=10, batch_size=batch_size, max_iter=1, shuffle=False,
                               dtype="float64", refit_head=False, random_state=0).fit(X, Y, sample_weight=w)
    W = with_offset(_weighted_tikhonov, _design(ext, X), Y, w, lam, weights=w)
    np.testing.assert_allclose(np.hstack([model.coef_, model.intercept_[:, None]]).T, W, rtol=1e-9, atol=1e-12)
    unweighted = with_offset(tikhonov, _design(ext, X), Y, lam)
    assert np.abs(W - unweighted).max() > 1e-3  # the weights matter for this data
    if batch_size == len(X):  # one batch: the loss is the final head's weighted mean loss
        resid = model.predict(X) - Y
        assert model.loss_curve_ == [pytest.approx(0.5 * np.average((resid**2).sum(1), weights=w), rel=1e-9)]


def test_refit_head_is_the_weighted_gcv_solution_counting_rows():
    X, Y, w = _data(90, seed=5)
    ext = FrozenFeatures(n_out=7)
    Z = _design(ext, X)
    model = SlimTrainRegressor(ext, batch_size=16, max_iter=1, dtype="float64").fit(X, Y, sample_weight=w)
    # weighted GCV = plain GCV on the rows scaled by sqrt(w_i N / M): N rows, weighted residual and influence
    root = np.sqrt(w * len(w) / w.sum())[:, None]
    best = gcv_ridge(root * Z, root * (Y - np.average(Y, axis=0, weights=w)))
    assert model.refit_ridge_ == pytest.approx(best, rel=1e-12)
    got = np.hstack([model.coef_, model.intercept_[:, None]]).T
    np.testing.assert_allclose(got, with_offset(_weighted_tikhonov, Z, Y, w, best, weights=w), rtol=1e-8, atol=1e-12)


def test_integer_weights_equal_repeated_rows_with_a_fixed_ridge():
    # scikit-learn's repetition check (15 rows, one batch): with a fixed ridge the whole
    # fit, extractor training included, sees the same objective for weights and repeats.
    # With ridge="sgcv" the check fails by design: GCV counts rows (see the user guide).
    model = SlimTrainRegressor(ridge=1e-3, max_iter=2, dtype="float64", random_state=0)
    check_sample_weight_equivalence_on_dense_data("SlimTrainRegressor", model)


def test_zero_weights_remove_rows_exactly():
    X, y = make_peaks(200, random_state=1)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    w[::4] = 0.0
    for kw in ({}, {"early_stopping": True, "validation_fraction": 0.2}):
        est = dict(max_iter=3, batch_size=16, random_state=0, **kw)
        a = SlimTrainRegressor(**est).fit(X, y, sample_weight=w)
        b = SlimTrainRegressor(**est).fit(X[w > 0], y[w > 0], sample_weight=w[w > 0])
        np.testing.assert_array_equal(a.predict(X), b.predict(X))
        assert a.t_ == b.t_ == 3 * (150 if not kw else 120)


def test_weights_act_through_their_ratios_only():
    # scaling every weight by c changes nothing: the head's statistics and its ridge
    # increments scale together, the losses are weighted means, GCV counts rows
    X, y = make_peaks(160, random_state=2)
    w = np.random.default_rng(1).uniform(0.1, 3.0, len(X))
    est = {"max_iter": 3, "batch_size": 16, "memory_depth": 2, "dtype": "float64", "random_state": 0}
    a = SlimTrainRegressor(**est).fit(X, y, sample_weight=w)
    b = SlimTrainRegressor(**est).fit(X, y, sample_weight=1e4 * w)
    np.testing.assert_allclose(b.ridge_path_, a.ridge_path_, rtol=1e-8)
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-8)
    np.testing.assert_allclose(b.predict(X), a.predict(X), rtol=1e-7, atol=1e-10)
    unit = SlimTrainRegressor(max_iter=3, batch_size=16, random_state=0)
    ones = unit.fit(X, y, sample_weight=np.ones(len(X))).predict(X)
    np.testing.assert_allclose(ones, SlimTrainRegressor(**unit.get_params()).fit(X, y).predict(X), rtol=1e-6)
    assert np.abs(a.predict(X) - SlimTrainRegressor(**est).fit(X, y).predict(X)).max() > 1e-3


def test_weighted_validation_set_scores_and_restores_the_best_epoch():
    X, y = make_peaks(260, random_state=3)
    rng = np.random.default_rng(2)
    w, w_val = rng.uniform(0.2, 2.0, 200), rng.uniform(0.2, 2.0, 60)
    model = SlimTrainRegressor(early_stopping=True, n_iter_no_change=2, max_iter=8, random_state=0)
    model.fit(X[:200], y[:200], sample_weight=w, X_val=X[200:], y_val=y[200:], sample_weight_val=w_val)
    pred = model.predict(X[200:])
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.best_validation_score_ == pytest.approx(r2_score(y[200:], pred, sample_weight=w_val), rel=1e-9)
    best = int(np.argmax(model.validation_scores_))
    assert model.validation_loss_curve_[best] == pytest.approx(0.5 * np.average((pred - y[200:]) ** 2, weights=w_val))


def test_pipeline_routes_sample_weight_and_partial_fit_streams_weights(tmp_path):
    X, y = make_peaks(160, random_state=4)
    w = np.random.default_rng(3).uniform(0.1, 3.0, len(X))
    pipe = make_pipeline(StandardScaler(), SlimTrainRegressor(max_iter=2, random_state=0))
    pipe.fit(X, y, slimtrainregressor__sample_weight=w)
    direct = SlimTrainRegressor(max_iter=2, random_state=0).fit(StandardScaler().fit_transform(X), y, w)
    np.testing.assert_array_equal(pipe[-1].predict(pipe[0].transform(X)), direct.predict(pipe[0].transform(X)))
    # streaming: a saved and reloaded model continues exactly (the head counts weight, not rows)
    kw = {"batch_size": 16, "memory_depth": 3, "random_state": 0, "shuffle": False}
    whole = SlimTrainRegressor(**kw).partial_fit(X[:80], y[:80], w[:80]).partial_fit(X[80:], y[80:], w[80:])
    half = SlimTrainRegressor(**kw).partial_fit(X[:80], y[:80], w[:80])
    assert type(half._head.n_seen) is float  # JSON-safe in the model file
    half.save(tmp_path / "m.slimtrain")
    resumed = SlimTrainRegressor.load(tmp_path / "m.slimtrain").partial_fit(X[80:], y[80:], w[80:])
    np.testing.assert_array_equal(resumed.predict(X), whole.predict(X))
    np.testing.assert_array_equal(resumed.ridge_path_, whole.ridge_path_)


def test_metadata_routing_passes_weights_to_fit_and_score():
    # scikit-learn's metadata routing: cross_validate hands each fold its weights
    X, y = make_peaks(120, random_state=5)
    w = np.random.default_rng(4).uniform(0.1, 3.0, len(X))
    params = {"max_iter": 2, "batch_size": 16, "random_state": 0}
    with config_context(enable_metadata_routing=True):
        est = SlimTrainRegressor(**params).set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        got = cross_validate(est, X, y, cv=KFold(2), params={"sample_weight": w})["test_score"]
    expected = [SlimTrainRegressor(**params).fit(X[tr], y[tr], w[tr]).score(X[te], y[te], sample_weight=w[te])
                for tr, te in KFold(2).split(X)]
    np.testing.assert_array_equal(got, expected)
    unweighted = cross_validate(SlimTrainRegressor(**params), X, y, cv=KFold(2))["test_score"]
    assert np.abs(unweighted - got).max() > 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_weighted_fit_on_cuda_matches_cpu():
    X, y = make_peaks(160, random_state=6)
    w = np.random.default_rng(5).uniform(0.1, 3.0, len(X))
    kw = {"max_iter": 2, "batch_size": 16, "memory_depth": 2, "dtype": "float64", "random_state": 0}
    cpu = SlimTrainRegressor(**kw).fit(X, y, sample_weight=w)
    gpu = SlimTrainRegressor(device="cuda", **kw).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(gpu.ridge_path_, cpu.ridge_path_, rtol=1e-6)
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-6, atol=1e-8)
