"""SlimTrainRegressor: invariants of the method and scikit-learn behaviour."""

import copy
import functools
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
from sklearn_slimtrain._persistence import move_model
from sklearn_slimtrain.datasets import make_peaks
from tests.conftest import FrozenFeatures, gcv_ridge, tikhonov, with_offset

# The default extractor runs in float32: BLAS results then depend on how many
# rows are multiplied together at the 1e-7 relative level, above the rtol=1e-7
# of this one check.  The same check passes with dtype="float64" (second entry).
_FLOAT32_XFAIL = {
    "check_methods_subset_invariance": "float32 BLAS rounding depends on the batch composition (~1e-7 relative)"
}


# sample_weight acts through the ratios of the weights: sGCV and the final GCV count
# rows, not weights, so the chosen ridge does not change when every weight is scaled.
# Integer weights therefore equal repeated rows only with a fixed ridge, and only where the
# batches do not matter: float64 and either shuffle=False or a frozen extractor (repeating rows
# changes the shuffled batches and the extractor's steps); a review ran the check with
# ridge=1e-3 and the default float32 shuffled fit, which still fails.  tests/test_sample_weight.py
# checks the conditions under which it holds.
_WEIGHT_XFAIL = {
    "check_sample_weight_equivalence_on_dense_data":
        "sGCV counts rows; repeated rows also change the batches (equivalence tested where it holds)"
}


def _expected_failed(est):
    return {**_WEIGHT_XFAIL, **(_FLOAT32_XFAIL if est.dtype == "float32" else {})}


# Some of scikit-learn's checks fit on X ~ N(100, 1) (check_fit_check_is_fitted,
# check_n_features_in, ...), which the input-scale warning rightly reports; it is tested
# on its own (test_input_scale_warning_names_the_column_in_raw_units).
@pytest.mark.filterwarnings("ignore:Column .* of X has root-mean-square:UserWarning")
@parametrize_with_checks(
    [SlimTrainRegressor(max_iter=2, random_state=0), SlimTrainRegressor(max_iter=2, random_state=0, dtype="float64")],
    expected_failed_checks=_expected_failed,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _design(extractor, X, fit_intercept=True):
    Z = extractor(torch.tensor(X, dtype=torch.float64)).numpy()
    return np.hstack([Z, np.ones((len(Z), 1))]) if fit_intercept else Z


@pytest.mark.parametrize("n_samples, batch_size", [(60, 10), (67, 10), (30, 30)])
@pytest.mark.parametrize("lam", [1e-3, 0.5])
@pytest.mark.parametrize("unlimited", [False, True])
def test_one_epoch_full_memory_is_the_tikhonov_solution(n_samples, batch_size, lam, unlimited):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_samples, 2))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    ext = FrozenFeatures()
    model = SlimTrainRegressor(
        ext, ridge=lam, memory_depth=None if unlimited else n_samples, batch_size=batch_size, max_iter=1,
        shuffle=False, dtype="float64", refit_head=False, random_state=0,
    ).fit(X, y)
    W = with_offset(tikhonov, _design(ext, X), y, lam)
    got = np.append(model.coef_, model.intercept_)
    assert np.linalg.norm(got - W) / np.linalg.norm(W) < 1e-8
    # a fixed ridge is reported as such at every step
    assert np.allclose(model.ridge_path_, lam, rtol=1e-12) and model.ridge_ == pytest.approx(lam)
    assert len(model.ridge_path_) == n_samples // batch_size  # a remainder joins the last batch


def test_unlimited_memory_stays_the_tikhonov_solution_over_epochs_and_a_stream():
    # sTik (memory_depth=None) on a frozen extractor: every later epoch adds the same
    # data and the same ridge share again, so the minimiser does not move; a stream of
    # partial_fit chunks gives the solution on all rows seen, whatever their split
    rng = np.random.default_rng(3)
    X = rng.standard_normal((90, 2))
    y = np.cos(X[:, 0]) * X[:, 1]
    ext = FrozenFeatures()
    W = with_offset(tikhonov, _design(ext, X), y, 0.01)
    kw = dict(ridge=0.01, memory_depth=None, batch_size=8, dtype="float64", refit_head=False, random_state=0)
    fit = SlimTrainRegressor(ext, max_iter=3, **kw).fit(X, y)  # shuffled epochs
    stream = SlimTrainRegressor(ext, **kw)
    for rows in np.array_split(np.arange(90), [25, 31]):
        stream.partial_fit(X[rows], y[rows])
    # a stream centres the targets by the first chunk's mean (all it has seen then)
    first = y[:25].mean()
    W_stream = tikhonov(_design(ext, X), y - first, 0.01)
    W_stream[-1] += first
    for model, expected in ((fit, W), (stream, W_stream)):
        got = np.append(model.coef_, model.intercept_)
        assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-10
    assert fit._head.memory._buffer.shape[0] == 2  # a sum and its compensation, not 33 blocks


@pytest.mark.parametrize("width", [80, 150])
def test_unlimited_memory_on_a_wide_head(width):
    # wide heads take other step paths (NumPy up to HOST_MAX_WEIGHTS, then torch; without
    # memory the tridiagonal one): memory_depth=None must keep its memory on each
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 2))
    y = np.sin(X[:, 0]) * X[:, 1]
    ext = FrozenFeatures(n_out=width)
    model = SlimTrainRegressor(ext, ridge=0.05, memory_depth=None, batch_size=100, max_iter=1, shuffle=False,
                               dtype="float64", refit_head=False).fit(X, y)
    W = with_offset(tikhonov, _design(ext, X), y, 0.05)
    assert np.linalg.norm(np.append(model.coef_, model.intercept_) - W) / np.linalg.norm(W) < 1e-9


def test_unlimited_memory_equals_a_memory_deeper_than_the_fit():
    # None and a depth that never drops a batch are the same method (to rounding:
    # a compensated running sum against a re-summed buffer), with a trained extractor
    X, y = make_peaks(200, random_state=0)
    kw = dict(max_iter=3, batch_size=16, dtype="float64", random_state=0)
    a = SlimTrainRegressor(memory_depth=None, **kw).fit(X, y)
    b = SlimTrainRegressor(memory_depth=1000, **kw).fit(X, y)
    # measured: 7e-15 and 8e-12 (the step's rounding, amplified by 36 Adam steps)
    np.testing.assert_allclose(a.ridge_path_, b.ridge_path_, rtol=1e-11)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-9, atol=1e-10)
    c = SlimTrainRegressor(memory_depth=5, **kw).fit(X, y)  # and a limited memory is not
    assert np.abs(c.predict(X) - a.predict(X)).max() > 1e-3


def test_limited_memory_is_not_the_tikhonov_solution():
    # the invariant above needs the memory: with r=0 the answer differs
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 2))
    y = X[:, 0] ** 3
    ext = FrozenFeatures()
    model = SlimTrainRegressor(ext, ridge=1e-3, memory_depth=0, batch_size=10, max_iter=1,
                               shuffle=False, dtype="float64", refit_head=False).fit(X, y)
    W = with_offset(tikhonov, _design(ext, X), y, 1e-3)
    assert np.linalg.norm(np.append(model.coef_, model.intercept_) - W) / np.linalg.norm(W) > 1e-4


def test_multi_target_equals_per_target_fits_for_fixed_ridge():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 2))
    Y = np.column_stack([np.sin(X[:, 0]), X[:, 1] ** 2, X[:, 0] * X[:, 1]])
    kw = dict(ridge=1e-2, memory_depth=3, batch_size=8, max_iter=2, dtype="float64", refit_head=False,
              random_state=0)
    joint = SlimTrainRegressor(FrozenFeatures(), **kw).fit(X, Y)
    for j in range(3):
        single = SlimTrainRegressor(FrozenFeatures(), **kw).fit(X, Y[:, j])
        np.testing.assert_allclose(joint.coef_[j], single.coef_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(joint.predict(X)[:, j], single.predict(X), rtol=1e-10, atol=1e-12)


def test_refit_head_is_the_full_data_tikhonov_or_gcv_solution():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90, 2))
    Y = np.column_stack([np.sin(X[:, 0]), X[:, 1] ** 2]) + 0.05 * rng.standard_normal((90, 2))
    ext = FrozenFeatures(n_out=7)
    Z = _design(ext, X)
    fixed = SlimTrainRegressor(ext, ridge=0.02, batch_size=16, max_iter=2, dtype="float64").fit(X, Y)
    W = with_offset(tikhonov, Z, Y, 0.02)
    got = np.hstack([fixed.coef_, fixed.intercept_[:, None]]).T
    np.testing.assert_allclose(got, W, rtol=1e-9)
    assert fixed.refit_ridge_ == 0.02
    auto = SlimTrainRegressor(ext, batch_size=16, max_iter=1, dtype="float64").fit(X, Y)
    best = gcv_ridge(Z, Y - Y.mean(0))  # brute-force GCV of the vectorised full-data system over the same grid
    assert auto.refit_ridge_ == pytest.approx(best, rel=1e-12)
    got = np.hstack([auto.coef_, auto.intercept_[:, None]]).T
    np.testing.assert_allclose(got, with_offset(tikhonov, Z, Y, best), rtol=1e-8)
    # partial_fit never refits
    assert not hasattr(SlimTrainRegressor(ext).partial_fit(X, Y), "refit_ridge_")


@pytest.mark.parametrize("head_dtype, offset", [("float32", 1e4), ("float64", 1e8)])
def test_refit_head_gcv_keeps_its_digits_for_targets_with_a_large_mean(head_dtype, offset):
    # The final GCV solve corrects the last slimTik head: its residual is measured
    # relative to ||Y - Z W_k||^2, not to ||Y||^2, which a mean of 1e4 (float32) or
    # 1e8 (float64) would swamp (every small ridge unresolved: 20x the error before).
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (400, 2))
    ext = FrozenFeatures(n_out=8)
    with torch.no_grad():
        Z = ext(torch.tensor(X)).numpy()
    noise = 0.01 if head_dtype == "float32" else 1.0
    y = Z @ rng.standard_normal(8) + offset + noise * rng.standard_normal(400)
    model = SlimTrainRegressor(ext, batch_size=32, max_iter=2, dtype="float64", head_dtype=head_dtype,
                               random_state=0).fit(X, y)
    Z1 = np.hstack([Z, np.ones((400, 1))])
    best = tikhonov(Z1, y[:, None], gcv_ridge(Z1, y[:, None]))  # float64 brute force
    rmse = np.sqrt(np.mean((model.predict(X) - y) ** 2))
    # float32 solves a Gram matrix of condition ~1e5 to eps32 * 1e5 ~ 1 % of the head's
    # correction (measured 4.5x the float64 optimum; 2,300x before the fix)
    assert rmse <= (10.0 if head_dtype == "float32" else 1.05) * np.sqrt(np.mean((Z1 @ best - y[:, None]) ** 2))


def test_refit_head_improves_the_final_head(peaks_data):
    X, y = peaks_data
    kw = dict(batch_size=5, learning_rate=1e-2, max_iter=5, random_state=0)
    plain = SlimTrainRegressor(refit_head=False, **kw).fit(X, y)
    refit = SlimTrainRegressor(**kw).fit(X, y)
    assert refit.score(X, y) > plain.score(X, y)
    np.testing.assert_array_equal(refit.ridge_path_, plain.ridge_path_)  # same training


def test_sgcv_ridge_path_is_cumulative_ridge_per_step(peaks_data):
    X, y = peaks_data
    model = SlimTrainRegressor(batch_size=50, max_iter=2, random_state=0).fit(X, y)
    path = model.ridge_path_
    assert path.shape == (12,) and np.all(path > 0)
    assert model.ridge_ == path[-1]
    # ridge_path_ is S_k / k with full batches; S_k moves by at most |Lambda_k| <= S_{k-1} / 2
    S = path * np.arange(1, 13)
    ratios = S[1:] / S[:-1]
    assert np.all(ratios <= 1.5 * (1 + 1e-9)) and np.all(ratios >= 0.5 * (1 - 1e-9))
    assert 0.5e-3 <= path[0] <= 1.5e-3  # starts from ridge_init=1e-3


def test_sgcv_selects_larger_ridge_when_underdetermined(frozen):
    # noisy targets, 30 features: a batch of 3 rows is far underdetermined
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 2))
    y = np.sin(2 * X[:, 0]) + 0.3 * rng.standard_normal(600)
    kw = dict(max_iter=1, random_state=0, ridge_max_change=np.inf)
    small = SlimTrainRegressor(frozen(n_out=30), batch_size=3, memory_depth=0, **kw).fit(X, y)
    large = SlimTrainRegressor(frozen(n_out=30), batch_size=3, memory_depth=100, **kw).fit(X, y)
    assert np.median(small.ridge_path_[-50:]) > 10 * np.median(large.ridge_path_[-50:])


def test_training_improves_and_extractor_is_updated(peaks_data):
    X, y = peaks_data
    ext = ResNetFeatures(2, width=8)
    before = copy.deepcopy(ext.state_dict())
    model = SlimTrainRegressor(ext, learning_rate=1e-2, max_iter=30, random_state=0).fit(X, y)
    assert model.loss_curve_[-1] < 0.2 * model.loss_curve_[0]
    assert model.score(X, y) > 0.85
    # the user's module is deep-copied, never mutated
    for k, v in ext.state_dict().items():
        assert torch.equal(v, before[k])
    assert any(not torch.equal(v, before[k]) for k, v in model.feature_extractor_.state_dict().items())


def test_fitted_attributes(multi_data):
    X, Y = multi_data
    m = SlimTrainRegressor(ResNetFeatures(4, width=5), max_iter=2, random_state=0).fit(X, Y)
    assert m.coef_.shape == (4, 5) and m.intercept_.shape == (4,)
    assert m.n_outputs_ == 4 and m.n_features_in_ == 4 and m.n_iter_ == 2 and m.t_ == 2 * len(X)
    assert len(m.loss_curve_) == 2 and m.device_ == "cpu"
    assert m.predict(X).shape == Y.shape and m.predict(X).dtype == np.float64
    m1 = SlimTrainRegressor(max_iter=1, fit_intercept=False, random_state=0).fit(X, Y[:, 0])
    assert m1.coef_.shape == (16,) and m1.intercept_ == 0.0 and m1.predict(X).shape == (len(X),)
    assert not hasattr(SlimTrainRegressor(), "coef_")


def test_random_features_module_trains_head_only(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(FrozenFeatures(n_out=40), memory_depth=10, max_iter=2, random_state=0).fit(X, y)
    assert m._optimizer is None and m.score(X, y) > 0.3


def test_callable_feature_extractor(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(lambda n: ResNetFeatures(n, width=4, depth=2), max_iter=1).fit(X, y)
    assert m.coef_.shape == (4,)


def test_lazy_builtin_extractor(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(ResNetFeatures(width=6), max_iter=1, random_state=0).fit(X, y)
    assert m.coef_.shape == (6,)


def test_pass_inputs_puts_the_inputs_ahead_of_the_features(peaks_data):
    X, y = peaks_data
    torch.manual_seed(0)
    plain = ResNetFeatures(2, width=6)
    both = ResNetFeatures(2, width=6, pass_inputs=True)
    both.load_state_dict(plain.state_dict())  # the same network, its inputs passed on
    x = torch.as_tensor(X[:7], dtype=torch.float32)
    out = both(x)
    assert out.shape == (7, 8)
    assert torch.equal(out[:, :2], x) and torch.equal(out[:, 2:], plain(x))
    lazy = ResNetFeatures(width=6, pass_inputs=True)
    assert lazy(x).shape == (7, 8)
    # a network pickled before the option existed has no such attribute: it reads False
    old = pickle.loads(pickle.dumps(plain))
    del old.__dict__["pass_inputs"]
    assert not old.pass_inputs and torch.equal(old(x), plain(x))
    m = SlimTrainRegressor(ResNetFeatures(width=6, pass_inputs=True), max_iter=1, random_state=0).fit(X, y)
    assert m.coef_.shape == (8,)
    # a target linear in the inputs is the head's to fit: near-exact after one epoch
    lin = X @ np.array([3.0, -2.0]) + 1.0
    fit = SlimTrainRegressor(ResNetFeatures(2, width=4, pass_inputs=True), max_iter=1, random_state=0).fit(X, lin)
    assert fit.score(X, lin) > 0.999


@pytest.mark.parametrize(
    "extractor, match",
    [
        (lambda n: torch.nn.Flatten(0), "2-D tensor"),
        (lambda n: torch.nn.Unflatten(1, (n, 1)), "2-D tensor"),
        (lambda n: "not a module", "torch.nn.Module"),
    ],
)
def test_bad_feature_extractor_errors(peaks_data, extractor, match):
    X, y = peaks_data
    with pytest.raises((ValueError, TypeError), match=match):
        SlimTrainRegressor(extractor, max_iter=1).fit(X, y)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"memory_depth": -1}, "memory_depth"),
        ({"batch_size": 0}, "batch_size"),
        ({"ridge": -1.0}, "ridge"),
        ({"ridge": "gcv"}, "ridge"),
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"optimizer": dict}, "optimizer"),
        ({"device": "tpu"}, "device"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_invalid_parameters(peaks_data, params, match):
    X, y = peaks_data
    with pytest.raises((ValueError, TypeError), match=match):
        SlimTrainRegressor(max_iter=1, **params).fit(X, y)


def test_failed_first_fit_leaves_an_unfitted_estimator(peaks_data):
    from sklearn.exceptions import NotFittedError

    X, y = peaks_data
    m = SlimTrainRegressor(lambda n: torch.nn.Flatten(0), max_iter=1)
    with pytest.raises(ValueError, match="2-D tensor"):
        m.fit(X, y)
    with pytest.raises(NotFittedError):
        m.predict(X)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_clear_error(peaks_data):
    X, y = peaks_data
    with pytest.raises(ValueError, match="device.*CUDA is not available"):
        SlimTrainRegressor(device="cuda", max_iter=1).fit(X, y)


def test_partial_fit_streams_and_continues_state(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(batch_size=20, memory_depth=2, learning_rate=1e-2, random_state=0)
    m.partial_fit(X[:150], y[:150])  # works right after construction / clone
    first_path = m.ridge_path_.copy()
    adam_steps = m._optimizer.state_dict()["state"][0]["step"].item()
    for epoch in range(15):
        for chunk in np.array_split(np.arange(len(X)), 3):
            m.partial_fit(X[chunk], y[chunk])
    assert m.n_iter_ == 46 and m.t_ == 150 + 15 * len(X)
    np.testing.assert_array_equal(m.ridge_path_[: len(first_path)], first_path)
    assert m._optimizer.state_dict()["state"][0]["step"].item() > adam_steps
    early = np.mean(m.loss_curve_[1:4])
    assert np.mean(m.loss_curve_[-3:]) < 0.5 * early
    with pytest.raises(ValueError, match="X has 3 features, but SlimTrainRegressor is expecting 2 features"):
        m.partial_fit(np.ones((5, 3)), np.ones(5))
    with pytest.raises(ValueError, match="y has 2 targets, but SlimTrainRegressor is expecting 1 targets"):
        m.partial_fit(X[:5], np.ones((5, 2)))


def test_partial_fit_after_clone_and_no_hidden_split(peaks_data):
    X, y = peaks_data
    m = clone(SlimTrainRegressor(batch_size=16, random_state=0)).partial_fit(X[:40], y[:40])
    assert m.t_ == 40 and len(m.ridge_path_) == 2  # 40 rows -> batches of 16 and 16 + 8


def test_warm_start_continues(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(max_iter=2, warm_start=True, random_state=0).fit(X, y)
    m.fit(X, y)
    assert m.n_iter_ == 4 and len(m.loss_curve_) == 4
    cold = SlimTrainRegressor(max_iter=2, random_state=0).fit(X, y).fit(X, y)
    assert cold.n_iter_ == 2


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(memory_depth=5), "memory_depth was 0 when this model was initialised and is now 5"),
        (dict(ridge=1e-3), "ridge was 'sgcv' when this model was initialised and is now 0.001"),
        (dict(optimizer=torch.optim.SGD), "optimizer was 'adam' when .* now torch.optim.sgd.SGD"),
        (dict(fit_intercept=False), "fit_intercept was True"),
        (dict(head_dtype="float32"), "head_dtype was 'float64'"),
        (dict(feature_extractor=lambda n: torch.nn.Linear(n, 4)),
         r"feature_extractor was None .* now \S*test_estimator.<lambda> \(modules, callables and classes are compared by identity\)\."),
    ],
)
@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
def test_continued_fit_refuses_a_changed_structural_parameter(peaks_data, change, message, how):
    X, y = peaks_data
    m = SlimTrainRegressor(max_iter=1, warm_start=how == "warm_start", random_state=0)
    m = m.partial_fit(X, y) if how == "partial_fit" else m.fit(X, y)
    before = pickle.dumps(m)
    m.set_params(**change)
    with pytest.raises(ValueError, match=message):
        m.partial_fit(X, y) if how == "partial_fit" else m.fit(X, y)
    assert m.n_iter_ == 1 and m.t_ == len(X)  # nothing was trained
    # the message's advice works: a clone, or a fit from scratch, which then continues
    clone(m).fit(X, y)
    m.set_params(warm_start=False).fit(X, y)
    m.partial_fit(X, y)
    assert m.t_ == 2 * len(X)
    pickle.loads(before).partial_fit(X, y)  # unchanged parameters: continues, also after pickling


def test_continued_fit_accepts_equivalent_and_live_parameters(peaks_data):
    X, y = peaks_data
    extractor = ResNetFeatures(2, width=4)
    m = SlimTrainRegressor(extractor, dtype="float32", random_state=0).partial_fit(X, y)
    m = pickle.loads(pickle.dumps(m))  # the parameter and its record stay one object
    m.set_params(dtype=torch.float32, feature_extractor=m.feature_extractor, batch_size=64, alpha=1e-4)
    m.partial_fit(X, y)
    assert m.t_ == 2 * len(X)
    # NumPy booleans (a grid over np.array([True, False])) are compared by value, as bools
    m.set_params(fit_intercept=np.bool_(True)).partial_fit(X, y)
    with pytest.raises(ValueError, match=r"fit_intercept was True when .* and is now (np\.False_|False) \("):
        m.set_params(fit_intercept=np.bool_(False)).partial_fit(X, y)
    m.set_params(fit_intercept=True)
    with pytest.raises(ValueError, match="feature_extractor was ResNetFeatures object"):
        m.set_params(feature_extractor=copy.deepcopy(extractor)).partial_fit(X, y)


def test_ridge_max_change_takes_effect_on_the_next_call():
    X, y = make_peaks(320, random_state=1)  # 10 full batches of 32 per call
    m = SlimTrainRegressor(batch_size=32, shuffle=False, random_state=0).partial_fit(X, y)
    m.set_params(ridge_max_change=0.01)
    m.partial_fit(X, y)
    # cumulative ridge S_k = per-step ridge * k (k full batches seen so far); the bound
    # applies from the first step of the second call (S[10] / S[9]) on
    S = m.ridge_path_ * np.arange(1, 21)
    ratios = S[10:] / S[9:-1]
    assert np.all(ratios <= 1.01 + 1e-12) and np.all(ratios >= 0.99 - 1e-12)
    assert np.abs(S[1:10] / S[:9] - 1).max() > 0.01  # the default bound (0.5) let it move more before


def test_grid_search_cross_val_and_pipeline(peaks_data):
    X, y = peaks_data
    grid = GridSearchCV(
        SlimTrainRegressor(max_iter=2, random_state=0),
        {"learning_rate": [1e-3, 1e-2], "memory_depth": [0, 5]},
        cv=3,
        n_jobs=2,
    ).fit(X, y)
    assert sorted(grid.cv_results_["rank_test_score"]) == [1, 2, 3, 4]
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    scores = cross_val_score(make_pipeline(StandardScaler(), SlimTrainRegressor(max_iter=3, random_state=0)), X, y, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))


@pytest.mark.parametrize("memory_depth", [3, None])
def test_pickle_and_deepcopy_round_trip(multi_data, memory_depth):
    X, Y = multi_data
    m = SlimTrainRegressor(max_iter=2, memory_depth=memory_depth, random_state=0).fit(X, Y)
    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        np.testing.assert_array_equal(other.predict(X), m.predict(X))
        np.testing.assert_array_equal(other.ridge_path_, m.ridge_path_)
    # training continues from a copy exactly as from the original (optimizer state, memory, RNG kept)
    a, b = pickle.loads(pickle.dumps(m)), copy.deepcopy(m)
    expected = m.partial_fit(X, Y).predict(X)
    np.testing.assert_array_equal(a.partial_fit(X, Y).predict(X), expected)
    np.testing.assert_array_equal(b.partial_fit(X, Y).predict(X), expected)


def test_unpickling_without_the_training_device_falls_back_to_cpu(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(max_iter=1, random_state=0).fit(X, y)
    state = m.__getstate__()
    state["device_"] = "cuda:7"  # as if fitted on a GPU machine
    other = SlimTrainRegressor.__new__(SlimTrainRegressor)
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    with pytest.warns(UserWarning, match="not available here"):
        other.__setstate__(state)
    assert other.device_ == "cpu"
    np.testing.assert_array_equal(other.predict(X), m.predict(X))


def test_move_model_takes_every_piece_of_training_state(peaks_data):
    # No accelerator here: the meta device (shapes, no data) shows that the move reaches
    # the extractor, Adam's moments, the head and its memory, and the recorded device.
    X, y = peaks_data
    m = SlimTrainRegressor(max_iter=1, memory_depth=2, random_state=0).fit(X, y)
    move_model(m, torch.device("meta"))
    assert m.device_ == "meta"
    assert all(p.device.type == "meta" for p in m.feature_extractor_.parameters())
    moments = [v for s in m._optimizer.state_dict()["state"].values() for k, v in s.items() if k != "step"]
    assert moments and all(v.device.type == "meta" for v in moments)
    head = m._head
    assert {t.device.type for t in (head.coef, head.ridge, head.per_step, head.memory._buffer)} == {"meta"}
    assert head._solve_on_host is None  # the step's path is chosen again for the new device


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_continued_fit_follows_device_and_rejects_missing_one(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(max_iter=1, random_state=0).fit(X, y)
    before = m.predict(X)
    m.set_params(device="cuda")
    for call in (lambda: m.partial_fit(X, y), lambda: m.set_params(warm_start=True).fit(X, y)):
        with pytest.raises(ValueError, match="'device' parameter of SlimTrainRegressor is 'cuda'"):
            call()
        assert m.n_iter_ == 1 and m.device_ == "cpu"
        np.testing.assert_array_equal(m.predict(X), before)
    # a model unpickled away from its GPU continues on the CPU once told so, as a CPU model would
    state = pickle.loads(pickle.dumps(m)).__getstate__()  # a copy: m keeps its own tensors
    state["device_"] = "cuda:0"
    other = SlimTrainRegressor.__new__(SlimTrainRegressor)
    with pytest.warns(UserWarning, match="not available here"):
        other.__setstate__(state)
    with pytest.raises(ValueError, match="CUDA is not available"):
        other.partial_fit(X, y)
    reference = pickle.loads(pickle.dumps(m)).set_params(device="cpu").partial_fit(X, y)
    other.set_params(device="auto").partial_fit(X, y)
    assert other.device_ == "cpu" and other.n_iter_ == 2
    np.testing.assert_array_equal(other.predict(X), reference.predict(X))


def test_mps_is_used_only_without_float64(monkeypatch):
    # No Apple GPU here: pretend one is present.  MPS has no float64, and head_dtype is
    # float64 by default, so "auto" skips MPS then and an explicit "mps" says what to change.
    from sklearn_slimtrain import _device

    monkeypatch.setattr(_device, "_mps_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = SlimTrainRegressor(device="auto")
    assert auto._device_from_params().type == "cpu"
    assert auto.set_params(dtype="float32", head_dtype="float32")._device_from_params().type == "mps"
    assert auto.set_params(dtype="float64")._device_from_params().type == "cpu"
    with pytest.raises(ValueError, match="is 'mps', but MPS has no float64: set dtype='float32' and head_dtype"):
        SlimTrainRegressor(device="mps")._device_from_params()


def test_a_failed_initialisation_leaves_the_model_unfitted(peaks_data, monkeypatch):
    # e.g. the device refusing the head's dtype, or running out of memory for the memory
    import sklearn_slimtrain._estimator as estimator_module

    def refuse(*args, **kwargs):
        raise TypeError("Cannot convert a MPS Tensor to float64 dtype")

    X, y = peaks_data
    model = SlimTrainRegressor(max_iter=1)
    monkeypatch.setattr(estimator_module, "SlimTikHead", refuse)
    with pytest.raises(TypeError, match="float64"):
        model.fit(X, y)
    with pytest.raises(NotFittedError):
        model.predict(X)
    monkeypatch.undo()
    assert model.partial_fit(X, y).n_iter_ == 1  # initialises afresh
    monkeypatch.setattr(estimator_module, "SlimTikHead", refuse)
    with pytest.raises(TypeError, match="float64"):  # a fit from scratch over a fitted model
        model.fit(X, y)
    with pytest.raises(NotFittedError):  # not half of the old model
        model.predict(X)


def test_same_random_state_same_predictions_and_clone_is_unfitted(peaks_data):
    X, y = peaks_data
    a = SlimTrainRegressor(max_iter=2, random_state=3).fit(X, y)
    b = SlimTrainRegressor(max_iter=2, random_state=3).fit(X, y)
    c = SlimTrainRegressor(max_iter=2, random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert not np.array_equal(a.predict(X), c.predict(X))
    assert not hasattr(clone(a), "feature_extractor_")


_SUBPROCESS = """
import numpy as np, sys
from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks
X, y = make_peaks(200, random_state=0)
p = SlimTrainRegressor(max_iter=2, random_state=5).fit(X, y).predict(X)
sys.stdout.write(p.tobytes().hex())
"""


def test_determinism_across_processes():
    runs = [subprocess.run([sys.executable, "-c", _SUBPROCESS], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) > 0


def test_input_types_and_readonly_memmap(tmp_path, peaks_data):
    X, y = peaks_data
    path = tmp_path / "X.npy"
    np.save(path, X)
    Xmm = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "Maximum iterations", ConvergenceWarning)  # max_iter=1 on purpose
        m = SlimTrainRegressor(max_iter=1, random_state=0).fit(Xmm, y)
        p = m.predict(Xmm)
    np.testing.assert_array_equal(p, m.predict(X))
    assert p.dtype == np.float64
    m.fit(X.astype(np.float32), y.astype(np.float32))
    assert m.predict(X.astype(np.float32)).dtype == np.float64
    m.fit(X.round().astype(int), y)
    m.fit(X.tolist(), y.tolist())


def test_float64_input_supported_with_float64_network(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(max_iter=2, dtype="float64", random_state=0).fit(X, y)
    assert next(m.feature_extractor_.parameters()).dtype == torch.float64


def test_learning_rate_change_keeps_optimizer_moments(peaks_data):
    X, y = peaks_data
    m = SlimTrainRegressor(random_state=0).partial_fit(X, y)
    state = m._optimizer.state_dict()["state"][0]["exp_avg"].clone()
    m.set_params(learning_rate=1e-2)
    assert torch.equal(m._optimizer.state_dict()["state"][0]["exp_avg"], state)
    m.partial_fit(X, y)
    assert m._optimizer.param_groups[0]["lr"] == 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_fit_predict_and_pickle_to_cpu(multi_data):
    X, Y = multi_data
    gpu = SlimTrainRegressor(max_iter=2, device="cuda", random_state=0).fit(X, Y)
    cpu = SlimTrainRegressor(max_iter=2, device="cpu", random_state=0).fit(X, Y)
    assert gpu.device_.startswith("cuda")
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-3, atol=1e-3)
    state = pickle.loads(pickle.dumps(gpu)).__getstate__()
    assert all(t.device.type == "cpu" for t in state["feature_extractor_"].state_dict().values())
    np.testing.assert_allclose(pickle.loads(pickle.dumps(gpu)).predict(X), gpu.predict(X), rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_partial_fit_moves_between_cpu_and_cuda(peaks_data):
    X, y = peaks_data
    stay = SlimTrainRegressor(max_iter=1, memory_depth=2, random_state=0).fit(X, y)
    move = pickle.loads(pickle.dumps(stay))
    move.set_params(device="cuda").partial_fit(X, y)
    assert move.device_.startswith("cuda") and move._head.coef.is_cuda and move._head.memory._buffer.is_cuda
    assert all(v.is_cuda for s in move._optimizer.state.values() for k, v in s.items() if k != "step")
    move.set_params(device="cpu").partial_fit(X, y)
    stay.partial_fit(X, y).partial_fit(X, y)
    assert move.device_ == "cpu" and move.n_iter_ == stay.n_iter_ == 3
    np.testing.assert_allclose(move.predict(X), stay.predict(X), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("lr, cause", [
    (1e13, r"the training loss \(4.*e\+11\) exceeds 1e\+06 times that of predicting zeros"),  # finite, blown up
    (1e20, "the training loss or the weights are not finite"),
])
def test_divergence_restores_last_finite_state_and_warns(lr, cause):
    # a linear extractor trained by SGD with an absurd learning rate blows up in its first epoch:
    # at 1e13 the head's grid floor keeps everything finite, but the loss is 7e7 times that of zeros
    # (at 1e12 the first epoch's loss is 2.7e4 times that of zeros and training recovers)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)) * 10
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    m = SlimTrainRegressor(lambda n: torch.nn.Linear(n, 4), optimizer="sgd", learning_rate=lr,
                           batch_size=8, max_iter=20, random_state=0)
    with pytest.warns(ConvergenceWarning, match=f"diverged in epoch 1: {cause}.*restored to its state before"):
        m.fit(X, y)
    assert m.n_iter_ == 0 and len(m.loss_curve_) == 0
    assert np.all(np.isfinite(m.predict(X))) and np.all(np.isfinite(m.coef_))
    assert all(torch.isfinite(p).all() for p in m.feature_extractor_.parameters())
    assert m.score(X, y) > 0  # the restored start, not the blown-up network (R2 -0.63 before it was caught)


def test_a_stream_chunk_of_zero_targets_is_not_divergence(peaks_data):
    X, y = peaks_data
    model = SlimTrainRegressor(random_state=0).partial_fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.partial_fit(X[:64], np.zeros(64))  # its loss is far above 1e6 times zero's
    assert model.n_iter_ == 2


def test_verbose_prints_one_line_per_epoch(peaks_data, capsys):
    X, y = peaks_data
    SlimTrainRegressor(max_iter=2, verbose=1, random_state=0).fit(X, y)
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert len(lines) == 4 and lines[0].split() == ["epoch", "train_loss", "ridge", "dur"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "2"]


def test_verbose_stream_prints_the_header_once(peaks_data, capsys):
    X, y = peaks_data
    model = SlimTrainRegressor(verbose=1, random_state=0)
    for chunk in np.array_split(np.arange(len(X)), 3):
        model.partial_fit(X[chunk], y[chunk])
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert [line.split()[0] for line in lines] == ["epoch", "-------", "1", "2", "3"]


def test_convergence_warning_points_at_the_callers_line(peaks_data):
    X, y = peaks_data
    with pytest.warns(ConvergenceWarning, match="Maximum iterations") as record:
        SlimTrainRegressor(max_iter=1, random_state=0).fit(X, y)
    assert {w.filename for w in record if issubclass(w.category, ConvergenceWarning)} == {__file__}


def test_input_scale_warning_points_at_the_callers_line(peaks_data):
    X, y = peaks_data
    for method in ("fit", "partial_fit"):
        with pytest.warns(UserWarning, match="built-in tanh ResNet needs inputs of order 1") as record:
            getattr(SlimTrainRegressor(max_iter=1, random_state=0), method)(X * 1e5, y)
        assert {w.filename for w in record if "order 1" in str(w.message)} == {__file__}


def _scale_warnings(model, X, y, partial=False):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        (model.partial_fit if partial else model.fit)(X, y)
    return [str(w.message) for w in record if "order 1" in str(w.message)]


def test_input_scale_warning_names_the_column_in_raw_units(peaks_data):
    X, y = peaks_data  # [-3, 3]^2: root-mean-square 1.7, no warning
    one = dict(max_iter=1, random_state=0)
    assert _scale_warnings(SlimTrainRegressor(**one), X, y) == []
    # small inputs are not reported: a bias towards a linear model, which may help or hurt (PEAK_MIN)
    assert _scale_warnings(SlimTrainRegressor(**one), X * 0.03, y) == []
    raw = X * [1.0, 300.0]  # one column in raw units: the peak of X alone would not tell
    (message,) = _scale_warnings(SlimTrainRegressor(**one), raw, y)
    assert message.startswith("Column 1 of X has root-mean-square 5") and "StandardScaler" in message
    (message,) = _scale_warnings(SlimTrainRegressor(ResNetFeatures(width=4), **one), X + 100.0, y)  # an offset
    assert message.startswith("Column ") and "(2 of 2 columns are 10 or more)" in message
    for builtin in (ResNetFeatures, functools.partial(ResNetFeatures, width=4)):  # the class, or a partial of it
        assert len(_scale_warnings(SlimTrainRegressor(builtin, **one), raw, y)) == 1
    # the user's own module may scale its inputs itself: no warning
    custom = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh())
    assert _scale_warnings(SlimTrainRegressor(custom, **one), raw, y) == []
    # once per model: not again at each partial_fit chunk or warm-started fit
    stream = SlimTrainRegressor(**one)
    assert [len(_scale_warnings(stream, raw[i::3], y[i::3], partial=True)) for i in range(3)] == [1, 0, 0]
    warm = SlimTrainRegressor(warm_start=True, **one)
    assert [len(_scale_warnings(warm, raw, y)) for _ in range(2)] == [1, 0]
    # but checked until it has warned: a stream whose later chunk comes in raw units, a warm start on new data
    stream = SlimTrainRegressor(**one)
    chunks = [X[0::4], X[1::4], raw[2::4], raw[3::4]]
    assert [len(_scale_warnings(stream, c, y[i::4], partial=True)) for i, c in enumerate(chunks)] == [0, 0, 1, 0]
    warm = SlimTrainRegressor(warm_start=True, **one)
    assert [len(_scale_warnings(warm, data, y)) for data in (X, raw, raw)] == [0, 1, 0]
    assert len(_scale_warnings(warm.set_params(warm_start=False), raw, y)) == 1  # a fit from scratch: a new model


@pytest.mark.parametrize("streamed", [False, True])
def test_an_offset_in_the_targets_changes_nothing_but_the_intercept(streamed):
    # The head fits targets centred by the first fit's mean: before, the regularised intercept
    # carried the offset, and each move of the cumulative ridge pulled it (peaks + 1e4: test R2
    # 0.70 instead of 0.99 after 20 epochs, a review measured; 0.947 at + 1e3)
    X, y = make_peaks(300, random_state=0)
    kw = dict(max_iter=3, batch_size=32, dtype="float64", random_state=0)

    def fit(targets):
        model = SlimTrainRegressor(**kw)
        if not streamed:
            return model.fit(X, targets)
        for rows in np.array_split(np.arange(300), 4):
            model.partial_fit(X[rows], targets[rows])
        return model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain, shifted = fit(y), fit(y + 1e4)
    # the same training up to the rounding of y + 1e4 (eps * 1e4 ~ 2e-12)
    np.testing.assert_allclose(shifted.predict(X) - 1e4, plain.predict(X), rtol=0, atol=1e-8)
    np.testing.assert_allclose(shifted.ridge_path_, plain.ridge_path_, rtol=1e-6)
    np.testing.assert_allclose(shifted.coef_, plain.coef_, rtol=0, atol=1e-8)
    assert shifted.intercept_ == pytest.approx(plain.intercept_ + 1e4, abs=1e-8)
    # the solved layer carries the offset in its bias: extractor + head_ is the network
    with torch.no_grad():
        net = torch.nn.Sequential(shifted.feature_extractor_, shifted.head_).eval()
        out = net(torch.tensor(X, dtype=torch.float64)).numpy()[:, 0]
    np.testing.assert_allclose(out, shifted.predict(X), rtol=1e-12)
