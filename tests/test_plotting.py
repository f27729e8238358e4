"""Plots are checked by their contents (axes data), with the Agg backend."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.plotting import plot_loss_curve, plot_predictions, plot_ridge_path


@pytest.fixture(scope="module")
def fitted(peaks_data):
    X, y = peaks_data
    return make_pipeline(StandardScaler(), SlimTrainRegressor(batch_size=50, max_iter=3, random_state=0)).fit(X, y)


def test_loss_curve(fitted):
    ax = plot_loss_curve(fitted)
    x, yv = ax.lines[0].get_data()
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_array_equal(yv, fitted[-1].loss_curve_)
    assert len(ax.lines) == 1  # no validation curve without early stopping
    plt.close("all")


def test_loss_curve_with_validation(peaks_data):
    X, y = peaks_data
    model = SlimTrainRegressor(early_stopping=True, max_iter=4, random_state=0).fit(X, y)
    ax = plot_loss_curve(model)
    _train, val, kept = ax.lines
    np.testing.assert_array_equal(val.get_data()[1], model.validation_loss_curve_)
    best = int(np.argmax(model.validation_scores_)) + 1
    assert list(kept.get_xdata()) == [best, best] and f"epoch {best}" in kept.get_label()
    plt.close("all")


def test_ridge_path_heatmap_and_line(fitted, peaks_data):
    path = fitted[-1].ridge_path_
    ax = plot_ridge_path(fitted)
    image = ax.images[0].get_array()
    assert image.shape == (6, 3)  # 300 rows / 50 = 6 iterations x 3 epochs
    np.testing.assert_allclose(image[:, 1], np.log10(path[6:12]))
    ax = plot_ridge_path(fitted, kind="line")
    np.testing.assert_array_equal(ax.lines[0].get_data()[1], path)
    with pytest.raises(ValueError, match="kind"):
        plot_ridge_path(fitted, kind="bars")
    X, y = peaks_data
    search = GridSearchCV(SlimTrainRegressor(max_iter=1, random_state=0), {"memory_depth": [0, 1]}, cv=2).fit(X, y)
    assert plot_ridge_path(search, kind="line").lines[0].get_data()[1].shape == search.best_estimator_.ridge_path_.shape
    plt.close("all")


def test_ridge_path_of_unequal_calls_is_drawn_as_a_line(peaks_data):
    # partial_fit calls of 2 and 7 steps: no grid has the calls as its columns
    X, y = peaks_data
    model = SlimTrainRegressor(batch_size=32, random_state=0)
    for rows in (slice(0, 64), slice(64, 300)):
        model.partial_fit(X[rows], y[rows])
    with pytest.warns(UserWarning, match="9 steps over 2 epochs or partial_fit calls of unequal length"):
        ax = plot_ridge_path(model)
    assert not ax.images
    np.testing.assert_array_equal(ax.lines[0].get_data()[1], model.ridge_path_)
    assert plot_ridge_path(model, steps_per_epoch=3).images[0].get_array().shape == (3, 3)  # on request
    for bad in (0, -1, 10, 2.5, True):
        with pytest.raises(ValueError, match=rf"steps_per_epoch must be an int in \[1, 9\].*got {bad!r}"):
            plot_ridge_path(model, steps_per_epoch=bad)
    # an early-stopped fit's path ends at its best epoch: one column per epoch up to there
    stopped = SlimTrainRegressor(early_stopping=True, n_iter_no_change=2, max_iter=30, random_state=0).fit(X, y)
    best = int(np.argmax(stopped.validation_scores_)) + 1
    assert best < stopped.n_iter_
    image = plot_ridge_path(stopped).images[0].get_array()
    assert image.shape == (8, best)  # 270 training rows / 32 = 8 steps per epoch
    np.testing.assert_allclose(image[:, -1], np.log10(stopped.ridge_path_[-8:]))
    plt.close("all")


def test_predictions(fitted, peaks_data, multi_data):
    X, y = peaks_data
    ax = plot_predictions(fitted, X, y)
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], y)
    np.testing.assert_allclose(offsets[:, 1], fitted.predict(X))
    assert ax.get_title().startswith("R2 = ")
    Xm, Ym = multi_data
    m = SlimTrainRegressor(max_iter=1, random_state=0).fit(Xm, Ym)
    ax = plot_predictions(m, Xm, Ym, target=2)
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 0], Ym[:, 2])
    with pytest.raises(TypeError, match="SlimTrainRegressor"):
        plot_predictions(StandardScaler().fit(X), X, y)
    plt.close("all")


def test_ridge_path_detects_unequal_calls_with_a_divisible_path(peaks_data):
    # calls of 3 and 9 steps: 12 steps over 2 calls would divide into a 6 x 2 grid whose
    # columns mix the calls; the recorded steps per call show they are unequal
    X, y = peaks_data
    model = SlimTrainRegressor(batch_size=32, random_state=0)
    model.partial_fit(X[:96], y[:96])
    model.partial_fit(X[:288], y[:288])
    np.testing.assert_array_equal(model._head.pass_lengths(), [3, 9])
    with pytest.warns(UserWarning, match="unequal length"):
        ax = plot_ridge_path(model)
    assert not ax.images
    # a warm-started fit that changes batch_size: 3 epochs of 9 steps, then 3 of 4
    warm = SlimTrainRegressor(batch_size=32, max_iter=3, warm_start=True, random_state=0).fit(X, y)
    warm.set_params(batch_size=64).fit(X, y)
    np.testing.assert_array_equal(warm._head.pass_lengths(), [9, 9, 9, 4, 4, 4])
    with pytest.warns(UserWarning, match="unequal length"):
        plot_ridge_path(warm)
    plt.close("all")


def test_pass_lengths_survive_pickle_and_model_files(tmp_path, peaks_data):
    import pickle

    X, y = peaks_data
    model = SlimTrainRegressor(batch_size=50, max_iter=2, random_state=0).fit(X, y)
    for copy in (pickle.loads(pickle.dumps(model)), (model.save(tmp_path / "m.zip"),
                                                     SlimTrainRegressor.load(tmp_path / "m.zip"))[1]):
        np.testing.assert_array_equal(copy._head.pass_lengths(), [6, 6])
        assert plot_ridge_path(copy).images[0].get_array().shape == (6, 2)
    plt.close("all")


def test_loss_curve_after_warm_started_early_stopping(peaks_data):
    # loss_curve_ keeps every epoch; the validation curve belongs to the last fit's epochs
    X, y = peaks_data
    model = SlimTrainRegressor(early_stopping=True, max_iter=3, warm_start=True, random_state=0).fit(X, y)
    model.fit(X, y)
    assert len(model.loss_curve_) == 6 and len(model.validation_loss_curve_) == 3
    _train, val, kept = plot_loss_curve(model).lines
    np.testing.assert_array_equal(val.get_xdata(), [4, 5, 6])
    best = 3 + int(np.argmax(model.validation_scores_)) + 1
    assert list(kept.get_xdata()) == [best, best]
    plt.close("all")


def test_plots_find_the_model_inside_a_target_transformer(peaks_data, multi_data):
    from sklearn.compose import TransformedTargetRegressor

    X, y = peaks_data
    wrapped = TransformedTargetRegressor(SlimTrainRegressor(max_iter=1, random_state=0),
                                         transformer=StandardScaler()).fit(X, y)
    np.testing.assert_array_equal(plot_loss_curve(wrapped).lines[0].get_ydata(), wrapped.regressor_.loss_curve_)
    ax = plot_predictions(wrapped, X, y.reshape(-1, 1))  # a 1-column y for a 1-D model is accepted
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 1], wrapped.predict(X))
    Xm, Ym = multi_data
    multi = SlimTrainRegressor(max_iter=1, random_state=0).fit(Xm, Ym)
    assert plot_predictions(multi, Xm, Ym, target=1).get_title().startswith("target 1: R2 = ")
    with pytest.raises(ValueError, match=r"y has shape \(\d+,\), but the model predicts 4 target"):
        plot_predictions(multi, Xm, Ym[:, 0])
    for bad in (5, 1.5, True):  # a float or a bool used to reach NumPy's indexing
        with pytest.raises(ValueError, match=rf"target must be an int in \[0, 3\] .*; got {bad!r}"):
            plot_predictions(multi, Xm, Ym, target=bad)
    with pytest.raises(ValueError, match=r"target must be an int in \[0, 0\] \(the model predicts 1 target"):
        plot_predictions(wrapped, X, y, target=3)  # was ignored for a single target
    plt.close("all")


def test_loss_curve_after_early_stopping_then_partial_fit(peaks_data):
    # partial_fit adds to loss_curve_ but not to the validation lists of the fit before it
    X, y = peaks_data
    model = SlimTrainRegressor(early_stopping=True, max_iter=3, random_state=0).fit(X, y)
    model.partial_fit(X, y)
    model.partial_fit(X, y)
    _train, val, kept = plot_loss_curve(model).lines
    np.testing.assert_array_equal(val.get_xdata(), [1, 2, 3])
    best = int(np.argmax(model.validation_scores_)) + 1
    assert list(kept.get_xdata()) == [best, best]
    plt.close("all")


def test_plots_of_models_saved_before_the_epochs_were_recorded(tmp_path, peaks_data):
    # a head pickled or saved without the epoch ends, and a model without _validation_start:
    # the plots fall back to inferring them (equal epochs here, so the same pictures)
    import pickle

    X, y = peaks_data
    model = SlimTrainRegressor(batch_size=50, max_iter=2, early_stopping=True, random_state=0).fit(X, y)
    old = pickle.loads(pickle.dumps(model))
    del old._head._ends, old._validation_start
    assert old._head.pass_lengths() is None
    old.partial_fit(X[:270], y[:270])  # continuing does not start recording half-way
    assert old._head.pass_lengths() is None
    assert plot_ridge_path(old).images[0].get_array().shape == (5, 3)  # 270 rows / 50, 3 epochs
    tensors, scalars = model._head.state_dict()
    del scalars["pass_ends"]
    loaded = type(model._head).from_state_dict(tensors, scalars, model._head.coef.device, model._head.layout)
    assert loaded.pass_lengths() is None
    _train, val, _kept = plot_loss_curve(old).lines
    np.testing.assert_array_equal(val.get_xdata(), [2, 3])  # inferred: the last epochs
    plt.close("all")


def test_plot_predictions_rejects_rows_of_other_lengths(fitted, peaks_data):
    X, y = peaks_data
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        plot_predictions(fitted, X[:100], y[:50])
    plt.close("all")
