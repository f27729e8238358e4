"""Plots of a fitted SlimTrainRegressor (needs matplotlib: ``pip install sklearn-slimtrain[plot]``).

Every function accepts the fitted estimator itself or a fitted ``Pipeline``,
``GridSearchCV`` / ``RandomizedSearchCV``, ``TransformedTargetRegressor`` or
dask-ml ``Incremental`` holding one, draws on ``ax`` (a new figure when None) and
returns the matplotlib ``Axes``.
"""

from __future__ import annotations

import warnings
from numbers import Integral
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._validation import NumberInterval

if TYPE_CHECKING:  # matplotlib is an optional dependency
    from matplotlib.axes import Axes

__all__ = ["plot_loss_curve", "plot_predictions", "plot_ridge_path"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "sklearn_slimtrain.plotting needs matplotlib: pip install 'sklearn-slimtrain[plot]'"
        ) from exc
    return plt


def _regressor(estimator):
    """The fitted SlimTrainRegressor inside ``estimator`` (search, pipeline or itself)."""
    from ._estimator import SlimTrainRegressor

    inner = estimator
    for _ in range(8):  # a search holding a pipeline holding the model, and so on
        if isinstance(inner, SlimTrainRegressor):
            check_is_fitted(inner)
            return inner
        if hasattr(inner, "best_estimator_"):
            inner = inner.best_estimator_
        elif hasattr(inner, "steps"):
            inner = inner.steps[-1][1]
        elif hasattr(inner, "regressor_"):  # TransformedTargetRegressor
            inner = inner.regressor_
        elif hasattr(inner, "estimator_"):  # dask-ml Incremental / ParallelPostFit
            inner = inner.estimator_
        else:
            break
    raise TypeError(
        "expected a fitted SlimTrainRegressor, or a fitted Pipeline, search, TransformedTargetRegressor or "
        f"dask-ml Incremental holding one; got {type(estimator).__name__}."
    )


def _axes(ax):
    return _pyplot().subplots()[1] if ax is None else ax


def plot_loss_curve(estimator: BaseEstimator, *, ax: Axes | None = None) -> Axes:
    """Mean training loss per epoch (``loss_curve_``), log scale.

    With early stopping the validation loss (``validation_loss_curve_``) is drawn
    too, with a dotted line at the epoch whose model was kept.  After a
    warm-started fit, ``loss_curve_`` holds every epoch so far and the validation
    curve (reset by each ``fit``, as ``MLPRegressor``'s) is drawn at the epochs of
    the last fit, also when ``partial_fit`` calls followed it.  For a
    ``partial_fit`` stream an "epoch" is one call.

    Parameters
    ----------
    estimator : SlimTrainRegressor, or a fitted meta-estimator holding one
        Fitted model: a Pipeline, a search, a TransformedTargetRegressor or a
        dask-ml Incremental (see the module docstring).
    ax : matplotlib Axes, default=None
        Where to draw.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_slimtrain import SlimTrainRegressor
    >>> from sklearn_slimtrain.datasets import make_peaks
    >>> from sklearn_slimtrain.plotting import plot_loss_curve
    >>> X, y = make_peaks(200, random_state=0)
    >>> model = SlimTrainRegressor(max_iter=3, random_state=0).fit(X, y)
    >>> ax = plot_loss_curve(model)
    >>> ax.get_xlabel(), len(ax.lines[0].get_xdata())
    ('epoch', 3)
    """
    reg = _regressor(estimator)
    ax = _axes(ax)
    epochs = np.arange(1, len(reg.loss_curve_) + 1)
    ax.plot(epochs, reg.loss_curve_, marker="o", markersize=3, label="training loss")
    val = getattr(reg, "validation_loss_curve_", None)
    if val:  # early stopping: the held-out loss and the epoch that was kept
        # epochs before the fit that monitored them (a warm start; partial_fit calls may follow);
        # models saved before it was recorded: the validation epochs are the last ones
        first = getattr(reg, "_validation_start", len(reg.loss_curve_) - len(val))
        ax.plot(epochs[first : first + len(val)], val, marker="s", markersize=3, label="validation loss")
        best = first + int(np.argmax(reg.validation_scores_)) + 1
        ax.axvline(best, color="gray", linestyle=":", label=f"kept (epoch {best})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss  (1/n) sum 1/2 ||W z - y||^2")
    ax.legend()
    return ax


def plot_ridge_path(
    estimator: BaseEstimator,
    *,
    kind: Literal["heatmap", "line"] = "heatmap",
    steps_per_epoch: int | None = None,
    ax: Axes | None = None,
) -> Axes:
    """The ridge chosen at every iteration (``ridge_path_``).

    Parameters
    ----------
    estimator : SlimTrainRegressor, or a fitted meta-estimator holding one
        Fitted model.
    kind : {"heatmap", "line"}, default="heatmap"
        "heatmap": an iterations x epochs image of ``log10(ridge)`` (the paper's
        Figures 4 and 6); "line": the ridge against the iteration, log scale.
    steps_per_epoch : int or None, default=None
        Rows of the heatmap; by default the steps of one epoch, as recorded by
        the fit (the path of an early-stopped fit ends at its best epoch).  When
        the epochs (or ``partial_fit`` calls) made unequal numbers of steps,
        which no grid can show as columns, the default draws the line with a
        warning.  (For a model file or pickle written before the steps per epoch
        were recorded, they are inferred as ``max(rows // batch_size, 1)`` with
        ``rows = t_ / n_iter_``.)
    ax : matplotlib Axes, default=None
        Where to draw.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    A heatmap of 3 epochs of 10 steps, and the same path as a line:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_slimtrain import SlimTrainRegressor, datasets, plotting
    >>> X, y = datasets.make_peaks(200, random_state=0)
    >>> model = SlimTrainRegressor(batch_size=20, max_iter=3, random_state=0).fit(X, y)
    >>> plotting.plot_ridge_path(model).get_ylabel()
    'iteration in epoch'
    >>> plotting.plot_ridge_path(model, kind="line").get_xlabel()
    'iteration'
    """
    reg = _regressor(estimator)
    path = reg.ridge_path_
    if steps_per_epoch is not None and not (
            isinstance(steps_per_epoch, Integral) and not isinstance(steps_per_epoch, bool)
            and 1 <= steps_per_epoch <= len(path)):
        raise ValueError(f"steps_per_epoch must be an int in [1, {len(path)}] (the length of ridge_path_) "
                         f"or None; got {steps_per_epoch!r}.")
    ax = _axes(ax)
    lengths = reg._head.pass_lengths()  # steps of each epoch / call, when recorded
    if lengths is not None:
        unequal = len(set(lengths.tolist())) > 1
        steps = steps_per_epoch or int(lengths[0])
    else:  # older models: infer from the rows per epoch
        rows = reg.t_ / max(reg.n_iter_, 1)
        steps = steps_per_epoch or max(int(rows) // reg.batch_size, 1)
        unequal = rows != int(rows) or len(path) % steps > 0
    if kind == "heatmap" and steps_per_epoch is None and unequal:
        warnings.warn(f"ridge_path_ has {len(path)} steps over {reg.n_iter_} epochs or partial_fit calls of "
                      "unequal length; drawing kind='line' (pass steps_per_epoch for a heatmap).", UserWarning,
                      stacklevel=2)
        kind = "line"
    if kind == "line":
        ax.plot(np.arange(1, len(path) + 1), path)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("ridge per step")
        return ax
    if kind != "heatmap":
        raise ValueError(f"kind must be 'heatmap' or 'line'; got {kind!r}.")
    epochs = len(path) // steps
    image = np.log10(path[: epochs * steps]).reshape(epochs, steps).T
    mesh = ax.imshow(image, aspect="auto", origin="upper", interpolation="nearest",
                     extent=(0.5, epochs + 0.5, steps + 0.5, 0.5))
    ax.figure.colorbar(mesh, ax=ax, label="log10 ridge per step")
    ax.set_xlabel("epoch")
    ax.set_ylabel("iteration in epoch")
    return ax


def plot_predictions(
    estimator: BaseEstimator, X: ArrayLike, y: ArrayLike, *, target: int = 0, ax: Axes | None = None
) -> Axes:
    """Predicted against true values on ``(X, y)``, with the diagonal and R2.

    Parameters
    ----------
    estimator : SlimTrainRegressor, or a fitted meta-estimator holding one
        Fitted model; predictions use ``estimator.predict`` (so a pipeline's
        preprocessing applies).
    X : array-like of shape (n_samples, n_features)
        Inputs.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        True targets.
    target : int, default=0
        Which target to show when ``y`` is 2-D.
    ax : matplotlib Axes, default=None
        Where to draw.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_slimtrain import SlimTrainRegressor
    >>> from sklearn_slimtrain.datasets import make_peaks
    >>> from sklearn_slimtrain.plotting import plot_predictions
    >>> X, y = make_peaks(200, random_state=0)
    >>> model = make_pipeline(StandardScaler(), SlimTrainRegressor(max_iter=3, random_state=0)).fit(X, y)
    >>> ax = plot_predictions(model, X, y)
    >>> ax.get_xlabel(), ax.get_ylabel(), ax.get_title().startswith("R2 = ")
    ('true', 'predicted', True)
    """
    from sklearn.metrics import r2_score
    from sklearn.utils import check_consistent_length

    reg = _regressor(estimator)
    y = np.asarray(y, dtype=np.float64)
    check_consistent_length(X, y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape[1:] != ((reg.n_outputs_,) if reg.n_outputs_ > 1 else ()):
        raise ValueError(f"y has shape {y.shape}, but the model predicts {reg.n_outputs_} target(s).")
    n_targets = reg.n_outputs_
    if not NumberInterval(Integral, 0, n_targets, closed="left").is_satisfied_by(target):
        raise ValueError(f"target must be an int in [0, {n_targets - 1}] (the model predicts {n_targets} "
                         f"target(s)); got {target!r}.")
    pred = np.asarray(estimator.predict(X)).reshape(len(y), -1)
    title = ""
    if y.ndim == 2:
        y, pred, title = y[:, target], pred[:, target], f"target {target}: "
    else:
        pred = pred[:, 0]
    ax = _axes(ax)
    ax.scatter(y, pred, s=8, alpha=0.6)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"{title}R2 = {r2_score(y, pred):.4f}")
    return ax
