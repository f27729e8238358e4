"""Input checks that scikit-learn's ``validate_data`` does not make (before any training work)."""

import functools
import inspect
import math
import warnings
from contextlib import contextmanager
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import torch
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import _check_sample_weight, _get_feature_names, validate_data

from ._device import dtype_name, resolve_dtype
from ._extractors import ResNetFeatures

__all__ = [
    "FROZEN_PARAMS",
    "PARAMETER_CONSTRAINTS",
    "FitInput",
    "NumberInterval",
    "check_extractor_output",
    "check_fit_input",
    "check_input_scale",
    "check_magnitude",
    "check_optimizer",
    "check_predictions",
    "check_sample_weight",
    "check_training_data",
    "check_unchanged_params",
    "check_validation_set",
    "frozen_params",
    "holdout",
    "input_names_kept_on_error",
    "is_builtin_network",
    "weighted_rows",
]

class NumberInterval(Interval):
    """An :class:`~sklearn.utils._param_validation.Interval` without the booleans.

    ``True`` is an Integral and a Real to scikit-learn: ``ridge=True`` reads as "ridge
    on" but would silently swap sGCV for a fixed ridge of 1, and ``memory_depth=True``
    as "memory on" but would keep one batch (``None`` keeps all).  No numeric
    parameter takes a boolean.
    """

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


# SlimTrainRegressor._parameter_constraints: checked by fit (and by partial_fit on every call).
PARAMETER_CONSTRAINTS = {
    "feature_extractor": [None, callable],
    "head": [None, torch.nn.Module],
    "learning_rate": [NumberInterval(Real, 0, None, closed="neither")],
    "optimizer": [StrOptions({"adam", "sgd"}), type, functools.partial],
    "alpha": [NumberInterval(Real, 0, None, closed="left")],
    "memory_depth": [NumberInterval(Integral, 0, None, closed="left"), None],
    "batch_size": [NumberInterval(Integral, 1, None, closed="left")],
    "max_iter": [NumberInterval(Integral, 1, None, closed="left")],
    "shuffle": ["boolean"],
    "ridge": [StrOptions({"sgcv"}), NumberInterval(Real, 0, None, closed="neither")],
    "ridge_init": [NumberInterval(Real, 0, None, closed="neither")],
    "ridge_max_change": [NumberInterval(Real, 0, None, closed="right")],
    "refit_head": ["boolean"],
    "fit_intercept": ["boolean"],
    "device": [str, torch.device],
    "dtype": [StrOptions({"float32", "float64"}), Options(torch.dtype, {torch.float32, torch.float64})],
    "head_dtype": [StrOptions({"float32", "float64"}), Options(torch.dtype, {torch.float32, torch.float64})],
    "early_stopping": ["boolean"],
    "validation_fraction": [NumberInterval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [NumberInterval(Integral, 1, None, closed="left")],
    "tol": [NumberInterval(Real, 0, None, closed="left")],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
}

# Parameters that define the fitted state (the network, its optimizer, the head's
# layout, memory and ridge rule, the dtypes): a continued fit cannot change them.
# The others act on the next call (learning_rate, alpha, batch_size, ridge_max_change,
# shuffle, max_iter, the stopping parameters, refit_head, verbose, device: the model
# moves) or only at initialisation (ridge_init, random_state).
FROZEN_PARAMS = ("feature_extractor", "head", "optimizer", "memory_depth", "ridge", "fit_intercept", "dtype",
                 "head_dtype")


def _peak(values: np.ndarray) -> float:
    """``max |values|`` without a temporary copy of the array (predict may see 10^6+ rows).

    Of a float array: booleans and unsigned integers would not negate.
    """
    return float(max(values.max(), -values.min()))


def check_magnitude(values: np.ndarray, name: str, dtype: torch.dtype, *, squared: bool,
                    parameter: str = "dtype") -> float:
    """Raise a ValueError when ``values`` overflow ``dtype`` (or their squares would); returns ``max |values|``.

    X only has to fit the extractor's dtype.  y enters the training loss and the
    head's normal equations squared and summed over a batch: ``|y|`` above
    ``sqrt(max) * 1e-3`` (1.8e16 in float32) would overflow them; the factor 1e-3
    leaves room for batch sums of up to 1e6 squared residuals.  ``parameter`` names
    the parameter that set ``dtype`` in the message.
    """
    if values.size == 0:
        return 0.0
    peak = _peak(values)
    limit = math.sqrt(float(torch.finfo(dtype).max)) * 1e-3 if squared else float(torch.finfo(dtype).max)
    if peak > limit:
        wider = f", or use {parameter}='float64'" if dtype != torch.float64 else ""
        raise ValueError(
            f"{name} has values of magnitude up to {peak:.3g}, too large for {parameter}={dtype_name(dtype)!r} "
            f"(limit {limit:.3g}). {_SCALE_Y if squared else _SCALE_X}{wider}."
        )
    return peak


_SCALE_Y = "Scale the targets, e.g. TransformedTargetRegressor(SlimTrainRegressor(), transformer=StandardScaler())"
_SCALE_X = "Scale the inputs, e.g. make_pipeline(StandardScaler(), SlimTrainRegressor())"


def _narrower(dtype: torch.dtype, head_dtype: torch.dtype) -> tuple[torch.dtype, str]:
    """The narrower of the two dtypes the targets meet, and the parameter that set it."""
    return min((dtype, "dtype"), (head_dtype, "head_dtype"), key=lambda d: torch.finfo(d[0]).max)


def check_ridge_range(est, head_dtype: torch.dtype) -> None:
    """The fixed ``ridge`` (or, with sGCV, ``ridge_init``) must lie in ``[tiny, sqrt(max)]`` of ``head_dtype``.

    Below ``tiny`` the cast to the head's dtype makes it 0 (an unregularised head that reports
    ``ridge_ = 0``), above ``max`` it is inf, which the fit reported as a divergence to be cured
    by a lower learning rate; ``sqrt(max)`` (1.8e19 in float32, 1.3e154 in float64) leaves
    room for the cumulative ridge, a sum of one such value per step, which overflowed for
    ``ridge=1e306`` after 300 steps in float64 (a bug hunt).
    """
    name = "ridge_init" if est.ridge == "sgcv" else "ridge"
    value = float(getattr(est, name))
    info = torch.finfo(head_dtype)
    if not info.tiny <= value <= math.sqrt(info.max):
        raise ValueError(
            f"{name}={value:.3g} is outside the range a ridge can take with head_dtype={dtype_name(head_dtype)!r}: "
            f"[{info.tiny:.3g}, {math.sqrt(info.max):.3g}]."
        )


def check_training_data(X: np.ndarray, y2: np.ndarray, dtype: torch.dtype, head_dtype: torch.dtype) -> None:
    """What ``validate_data`` lets through: non-numeric y, overflowing values.

    Large y is checked against the narrower of the extractor's and the head's dtypes
    (the head solves in ``head_dtype``; the loss reaches the extractor in ``dtype``).
    Non-zero y all below ``sqrt(tiny) * 1e3`` of the head's dtype (1.1e-16 in
    float32, 1.5e-151 in float64) is refused: its squares lie within a factor 1e6 of
    the smallest normal number, so the head's sums lose their digits to underflow and
    the fit would predict zeros.  (Targets far below 1 also slow the extractor's
    training, as for any network trained by Adam, whose ``eps`` then dominates its
    step; the user guide's scale convention says so.)
    """
    if hasattr(y2, "toarray"):  # validate_data lets a sparse y through with multi_output=True
        raise TypeError("Sparse data was passed for y, but dense data is required. Use '.toarray()' to convert "
                        "to a dense numpy array.")
    if y2.dtype.kind not in "biuf":
        raise ValueError(f"y must hold numbers (regression targets); got an array of dtype {y2.dtype}.")
    if not np.isfinite(y2).all():  # None in an object y becomes NaN after validate_data's own check
        raise ValueError("Input y contains NaN.")
    check_magnitude(X, "X", dtype, squared=False)
    narrow, parameter = _narrower(dtype, head_dtype)
    peak = check_magnitude(y2, "y", narrow, squared=True, parameter=parameter)
    floor = math.sqrt(float(torch.finfo(head_dtype).tiny)) * 1e3
    if 0 < peak < floor:
        raise ValueError(
            f"y has values of magnitude at most {peak:.3g}, too small for head_dtype={dtype_name(head_dtype)!r} "
            f"(smallest peak {floor:.3g}). {_SCALE_Y}, or use head_dtype='float64'."
        )


@contextmanager
def input_names_kept_on_error(est, fitted: bool):
    """Bad input leaves a fitted model whole: ``validate_data(reset=True)`` has already
    replaced ``n_features_in_`` and ``feature_names_in_`` when a later check fails."""
    names = ("n_features_in_", "feature_names_in_")
    kept = {k: v for k, v in vars(est).items() if k in names}
    try:
        yield
    except BaseException:
        if fitted:
            for name in names:
                vars(est).pop(name, None)
            vars(est).update(kept)
        raise


def check_predictions(out: np.ndarray) -> None:
    """Never return NaN silently: non-finite predictions are an error naming the rows."""
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise ValueError(
            f"The predictions for {int(bad.sum())} of {len(out)} rows of X are not finite (first: row "
            f"{int(np.argmax(bad))}): the feature extractor overflowed on them. Check the scale of X.")


def optimizer_class(optimizer):
    """The class of an ``optimizer`` parameter that is a class or a ``functools.partial`` of one; else None."""
    cls = optimizer.func if isinstance(optimizer, functools.partial) else optimizer
    return cls if isinstance(cls, type) else None


def check_optimizer(optimizer) -> None:
    """``optimizer`` is "adam", "sgd", a ``torch.optim.Optimizer`` subclass or a partial of one (keywords only)."""
    if isinstance(optimizer, str) and optimizer in ("adam", "sgd"):
        return
    cls = optimizer_class(optimizer)
    if not (cls is not None and issubclass(cls, torch.optim.Optimizer)):
        raise TypeError(
            "optimizer must be 'adam', 'sgd', a torch.optim.Optimizer subclass or a functools.partial of one; "
            f"got {optimizer!r}."
        )
    if isinstance(optimizer, functools.partial) and (optimizer.args or {"params", "lr"} & set(optimizer.keywords)):
        raise ValueError(
            f"optimizer={optimizer!r}: a partial may set the optimizer's keywords, by keyword, other than lr (e.g. "
            "functools.partial(torch.optim.SGD, momentum=0.9)); the parameters are the extractor's and lr is "
            "learning_rate."
        )
    optimizer = cls
    if issubclass(optimizer, torch.optim.SparseAdam):  # a valid class of the wrong kind, as LBFGS below
        raise ValueError(  # noqa: TRY004
            "optimizer=SparseAdam takes sparse gradients only (of embedding layers with sparse=True); the "
            "feature extractor's are dense. Use 'adam' or torch.optim.Adam."
        )
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ValueError(
            f"optimizer={optimizer.__name__} needs a closure that re-evaluates the loss (as LBFGS does); "
            "SlimTrainRegressor takes one gradient step per mini-batch. Use an optimizer whose step() "
            "takes no closure, e.g. torch.optim.Adam or torch.optim.SGD."
        )


# A column of X whose root-mean-square reaches this is reported: the built-in network's
# tanh units saturate on it.  Measured by benchmarks/input_scale.py (peaks, the default
# fit, test R2, mean of 3 seeds; docs/bench_peers.md): standardised columns times 1, 3,
# 10, 30, 100 give 0.998, 0.995, 0.978, 0.829, 0.528, and shifted by 3, 10, 30 (RMS 3.2,
# 10, 30) 0.950, 0.754, 0.272.  In the peers suite's raw inputs 10 flags the physical
# units of borehole, OTL circuit, piston and wing weight (RMS 187 to 1e5) and none of the
# other 8 functions (RMS 0.29 to 3.6: [-0.5, 0.5] to [0, 2 pi]).
COLUMN_RMS_LIMIT = 10.0
# Small inputs are reported only when all of X is below this, because no warning could
# say whether they hurt: they keep the tanh units near their linear range, a bias towards
# a linear model that costs nonlinear targets (same script: peaks times 0.1, 0.03, 0.01
# gives 0.968, 0.510, 0.391) and helps nearly linear ones (load_diabetes's columns as
# shipped, RMS 0.048: 0.425 against 0.380 standardised).  Below 1e-4 the pre-activations
# are the biases to about 4 digits: the features are constant whatever the data.
PEAK_MIN = 1e-4


def is_builtin_network(feature_extractor) -> bool:
    """Whether ``feature_extractor`` gives the built-in ResNet: None, an instance, the class or a partial of it."""
    if isinstance(feature_extractor, functools.partial):
        feature_extractor = feature_extractor.func
    return (feature_extractor is None or feature_extractor is ResNetFeatures
            or isinstance(feature_extractor, ResNetFeatures))


def _column_rms(X: np.ndarray, column_peaks: np.ndarray) -> np.ndarray:
    """Root-mean-square of each column, in float64 by blocks of rows (no copy of X).

    Each column is divided by its largest magnitude ``column_peaks`` first, so that
    values near the float64 limit do not overflow their squares.
    """
    scale = np.where(column_peaks == 0, 1.0, column_peaks).astype(np.float64)
    total = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], 1 << 15):
        block = X[start:start + (1 << 15)] / scale
        total += np.einsum("ij,ij->j", block, block)
    return scale * np.sqrt(total / max(X.shape[0], 1))


def check_input_scale(X: np.ndarray) -> bool:
    """Warn when X is far from unit scale, which the built-in tanh ResNet cannot use; True if it warned.

    Its opening layer (PyTorch's default init, weights ~ U(-1/sqrt(n), 1/sqrt(n)))
    keeps the scale of X, so a column of root-mean-square ``COLUMN_RMS_LIMIT`` or
    more (a raw physical unit, or an offset far from zero) saturates the tanh
    units, and values all below ``PEAK_MIN`` leave only the biases (see the
    constants for the measurements).
    """
    if not X.size:
        return False
    column_peaks = np.maximum(X.max(axis=0), -X.min(axis=0))  # one pass each, no copy (as _peak)
    rms = _column_rms(X, column_peaks)
    large = np.flatnonzero(rms >= COLUMN_RMS_LIMIT)
    peak = float(column_peaks.max())
    if large.size:
        worst = int(large[np.argmax(rms[large])])
        others = f" ({large.size} of {X.shape[1]} columns are {COLUMN_RMS_LIMIT:g} or more)" if large.size > 1 else ""
        what = f"Column {worst} of X has root-mean-square {rms[worst]:.3g}{others}"
    elif 0.0 < peak < PEAK_MIN:
        what = f"X has values of magnitude up to {peak:.3g}"
    else:
        return False
    warnings.warn(
        f"{what}; the built-in tanh ResNet needs inputs of order 1 "
        "(it saturates or sees constants otherwise). Standardize X, e.g. "
        "make_pipeline(StandardScaler(), SlimTrainRegressor()).",
        UserWarning,
        # check_input_scale < check_fit_input < _fit < fit (or partial_fit) < _fit_context < caller
        stacklevel=6,
    )
    return True


def check_extractor_output(out, n_rows: int, n_features_in: int, dense: bool = True) -> None:
    """The probe forward pass must give a finite, floating tensor with one row per input row.

    2-D for the dense head; a layer ``head`` takes whatever shape it accepts.
    """
    shape = "a 2-D tensor of shape (n, n_features_out)" if dense else "a tensor of shape (n, ...) for head"
    expected = f"feature_extractor must map a tensor of shape (n, {n_features_in}) to {shape}"
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{expected}; it returned a {type(out).__name__}.")
    if (out.ndim != 2 if dense else out.ndim < 2) or out.shape[0] != n_rows:
        hint = " (features of another shape need a layer as head, e.g. a convolution)" if dense and out.ndim > 2 else ""
        raise ValueError(f"{expected}; for n={n_rows} it returned shape {tuple(out.shape)}{hint}.")
    if 0 in out.shape[1:]:  # a solve over no features: NumPy's "zero-size array" errors deep in the step
        raise ValueError(f"{expected} with at least one feature; for n={n_rows} it returned shape {tuple(out.shape)}.")
    if not out.is_floating_point():
        raise ValueError(f"{expected} of floats; it returned dtype {out.dtype}.")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            "feature_extractor returned non-finite values (NaN or inf) on the first rows of X; "
            "check the module and the scale of X."
        )


def check_sample_weight(sample_weight, X: np.ndarray, name: str = "sample_weight") -> np.ndarray | None:
    """None, or float64 weights of shape ``(n_samples,)``: finite, non-negative, not all zero."""
    if sample_weight is None:
        return None
    try:
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    except ValueError as exc:  # scikit-learn's message, naming this parameter
        if name == "sample_weight":
            raise
        message = str(exc).replace("sample_weight", name)
        if name not in message:  # e.g. "Sample weights must contain at least one non-zero number."
            message = f"{name}: {message}"
        raise ValueError(message) from None
    with np.errstate(over="ignore"):
        total = sw.sum()
    if not np.isfinite(total):  # huge weights whose sum overflows
        raise ValueError(f"{name} must be finite, with a finite sum; got values up to {sw.max():.3g}.")
    if not (sw > 0).any():
        raise ValueError(f"{name} must contain at least one non-zero number; all {len(sw)} weights are zero.")
    return sw


def weighted_rows(sample_weight, X: np.ndarray, y2: np.ndarray):
    """``(X, y2, sw)``: checked weights (None without them), rows of weight zero removed."""
    sw = check_sample_weight(sample_weight, X)
    if sw is None or (sw > 0).all():
        return X, y2, sw
    keep = sw > 0  # a row of weight zero is as if absent (exactly: tests/test_sample_weight.py)
    return X[keep], y2[keep], sw[keep]


def _n_held_out(fraction: float, n: int) -> int:
    """``ceil(fraction n)`` rows, and at least 2: R2 is undefined on one row."""
    return max(2, math.ceil(fraction * n))


def holdout(rng, fraction: float, X: np.ndarray, y2: np.ndarray, sw: np.ndarray | None):
    """Random ``max(2, ceil(fraction n))`` rows held out for early stopping: ``((X, y2, sw), (X_val, y_val, sw_val))``."""
    order = rng.permutation(X.shape[0])
    n_val = _n_held_out(fraction, X.shape[0])
    held, kept = order[:n_val], order[n_val:]
    return (X[kept], y2[kept], None if sw is None else sw[kept]), (X[held], y2[held], None if sw is None else sw[held])


def check_validation_set(est, X, y2, X_val, y_val, early, dtype, head_dtype, sample_weight_val=None, n_given=None):
    """Checked explicit validation set ``(X_val, y_val, sw_val)`` (or None), before any training work.

    ``X`` holds the rows of non-zero weight; ``n_given`` is the number of rows passed to ``fit``.
    """
    if sample_weight_val is not None and X_val is None:
        raise ValueError("sample_weight_val is passed to fit without X_val and y_val.")
    if X_val is None and y_val is None:
        n = X.shape[0]
        if early and _n_held_out(est.validation_fraction, n) > n - 1:
            zeros = "" if n_given in (None, n) else f" ({n_given - n} of the {n_given} rows have sample_weight 0)"
            raise ValueError(
                f"early_stopping needs at least one training row besides the validation_fraction="
                f"{est.validation_fraction} held out (at least 2 rows: R2 is undefined on one); got "
                f"n_samples={n}{zeros}.")
        return None
    if X_val is None or y_val is None:
        raise ValueError("X_val and y_val must be given together.")
    if not est.early_stopping:
        raise ValueError("X_val and y_val are passed to fit while early_stopping is False.")
    given = X_val
    X_val = check_array(X_val, dtype=(np.float64, np.float32), input_name="X_val", estimator=est)  # named errors
    if X_val.shape[1] != est.n_features_in_:
        raise ValueError(f"X_val has {X_val.shape[1]} features, but X has {est.n_features_in_}.")
    # the feature names, checked as X's (scikit-learn's words, said of X_val; without
    # warnings.catch_warnings, whose state is process-wide and fits may run in threads)
    names, fitted_names = _get_feature_names(given), getattr(est, "feature_names_in_", None)
    if (names is None) != (fitted_names is None):
        warnings.warn(f"X_val {'does not have valid' if names is None else 'has'} feature names, but "
                      f"{type(est).__name__} was fitted with{'' if names is None else 'out'} feature names",
                      UserWarning, stacklevel=6)  # < check_fit_input < _fit < fit < _fit_context < caller
    elif names is not None:
        try:
            validate_data(est, given, reset=False, skip_check_array=True)  # raises, never warns, here
        except ValueError as exc:
            raise ValueError(f"X_val: {exc}") from None
    y_val = check_array(y_val, ensure_2d=False, dtype=np.float64, input_name="y_val")
    y_val = y_val.reshape(-1, 1) if y_val.ndim == 1 else y_val
    if X_val.shape[0] < 2:
        raise ValueError(f"X_val must have at least 2 rows (R2 is undefined on one); got {X_val.shape[0]}.")
    if y_val.shape != (X_val.shape[0], y2.shape[1]):
        raise ValueError(
            f"y_val must have shape ({X_val.shape[0]}, {y2.shape[1]}) to match X_val and y; "
            f"got {y_val.shape}.")
    check_magnitude(X_val, "X_val", dtype, squared=False)
    narrow, parameter = _narrower(dtype, head_dtype)
    check_magnitude(y_val, "y_val", narrow, squared=True, parameter=parameter)  # its loss squares it, as y's
    return X_val, y_val, check_sample_weight(sample_weight_val, X_val, "sample_weight_val")


class FitInput(NamedTuple):
    """The checked input of one ``fit`` or ``partial_fit`` call (:func:`check_fit_input`)."""

    X: np.ndarray  # the rows of non-zero weight
    y2: np.ndarray  # y as a 2-D float array
    y_ndim: int  # y's own number of dimensions (1 or 2), for the shape of the predictions
    sw: np.ndarray | None  # their weights (None: unweighted)
    val: tuple | None  # the explicit validation set (X_val, y_val, sw_val), or None
    early: bool  # early stopping in this call (fit only)
    reset: bool  # the call starts a new model (fit without warm start, or the first partial_fit)


def check_fit_input(est, X, y, incremental: bool, sample_weight=None, X_val=None, y_val=None,
                    sample_weight_val=None) -> FitInput:
    """Every check of the input of ``fit`` (``incremental=False``) or ``partial_fit``, before any training work.

    ``validate_data`` (which records ``n_features_in_`` and ``feature_names_in_`` when
    the call starts a new model), the parameters a continued fit may not change, the
    values of y and X, the optimizer, the sample weights and the validation set.  On
    failure an already-fitted model is left whole.
    """
    fitted = hasattr(est, "feature_extractor_")
    reset = not (fitted and (incremental or est.warm_start))
    with input_names_kept_on_error(est, fitted):
        X, y = validate_data(est, X, y, reset=reset, multi_output=True, y_numeric=True, dtype=(np.float64, np.float32))
        y2 = y.reshape(-1, 1) if y.ndim == 1 else y
        if y2.dtype.kind in "biuf" and y2.dtype not in (np.float32, np.float64):  # counts, float16, long double
            y2 = y2.astype(np.float64)
        if incremental and fitted:  # scikit-learn validates partial_fit's parameters on the first call only
            est._validate_params()
        if not reset:
            check_unchanged_params(est, y2)
        dtype = resolve_dtype(est.dtype) if reset else est._dtype
        head_dtype = resolve_dtype(est.head_dtype) if reset else est._head.dtype
        check_training_data(X, y2, dtype, head_dtype)
        check_ridge_range(est, head_dtype)
        # the scale of X for the built-in network, at every call until it has warned once for this
        # model (not at every chunk of a badly scaled partial_fit stream; a later chunk in other
        # units, or a warm start on new data, is still checked)
        if is_builtin_network(est.feature_extractor) and (reset or not getattr(est, "_input_scale_warned", False)):
            est._input_scale_warned = check_input_scale(X)
        check_optimizer(est.optimizer)
        n_given = X.shape[0]
        X, y2, sw = weighted_rows(sample_weight, X, y2)
        early = est.early_stopping and not incremental
        val = check_validation_set(est, X, y2, X_val, y_val, early, dtype, head_dtype, sample_weight_val, n_given)
    return FitInput(X, y2, y.ndim, sw, val, early, reset)


def frozen_params(est) -> dict:
    """The values of :data:`FROZEN_PARAMS` as given, recorded when the model is initialised."""
    return {name: getattr(est, name) for name in FROZEN_PARAMS}


_VALUES = (str, Real, np.bool_)  # compared by value (np.bool_ is no Real: a grid over np.array([True, False]))


def _same(name, old, new) -> bool:
    if name in ("dtype", "head_dtype"):
        return resolve_dtype(old) == resolve_dtype(new)  # "float64" and torch.float64 alike
    if isinstance(old, _VALUES) and isinstance(new, _VALUES):
        return old == new
    return old is new  # a module, callable or class: the same object (an equal copy is another object)


def _describe(value) -> str:
    if value is None or isinstance(value, (*_VALUES, torch.dtype)):
        return repr(value)
    if isinstance(value, type) or inspect.isfunction(value):  # a class or a function: its name
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, functools.partial):  # its function and keywords, and which object it is
        return f"{value!r} at {id(value):#x}"
    return f"{type(value).__name__} object at {id(value):#x}"


def check_unchanged_params(est, y2: np.ndarray) -> None:
    """A continued fit (``partial_fit``, ``warm_start``) must not change what defines the fitted model.

    Neither the number of targets of ``y2`` nor the structural parameters:
    ``set_params`` between calls would otherwise be silently ignored for these.
    A model pickled before the record existed is not checked.
    """
    if y2.shape[1] != est.n_outputs_:
        raise ValueError(
            f"y has {y2.shape[1]} targets, but {type(est).__name__} is expecting {est.n_outputs_} targets as input."
        )
    recorded = getattr(est, "_init_params", None)
    for name, old in (recorded or {}).items():
        new = getattr(est, name)
        if not _same(name, old, new):
            raise ValueError(
                f"{name} was {_describe(old)} when this model was initialised and is now {_describe(new)} "
                f"(modules, callables and classes are compared by identity). "
                f"It defines the fitted model, so partial_fit and warm-started fits cannot change it: fit from "
                f"scratch (warm_start=False) or on a clone. learning_rate, alpha, batch_size, ridge_max_change, "
                f"shuffle and the stopping parameters take effect on the next call."
            )
