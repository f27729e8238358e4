"""What a model file may hold: the checks :func:`~sklearn_slimtrain._persistence.load_model` makes first.

A model file is data (``json`` and ``torch.load(weights_only=True)``), so it cannot run
code, but an edited or damaged one could still make a model that predicts wrongly or
fails later with a NumPy or torch error (a review found ``_y_ndim=5`` changing the
predictions' shape, an int64 head predicting garbage, an unknown ``fitted`` entry
replacing a method).  :func:`file_problems` lists every entry that is absent, unknown,
of the wrong type or out of range, before anything is built; ``load`` refuses such a
file with a ``ValueError`` naming them.  A file that ``save`` wrote has none.
"""

import inspect
import math
from collections.abc import Callable

import torch

from ._device import DTYPES
from ._extractors import ResNetFeatures

__all__ = ["FITTED_NAMES", "file_problems", "resnet_config_problem", "resnet_keywords_problem"]


def _count(low: int = 0) -> Callable:
    return lambda v: type(v) is int and v >= low


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _numbers(v) -> bool:
    return isinstance(v, list) and all(_number(x) for x in v)


def _scores(v) -> bool:  # a validation epoch whose predictions were not finite records NaN (and -inf)
    return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def _optional(check: Callable) -> Callable:
    return lambda v: v is None or check(v)


def _rng(v) -> bool:  # NumPy's RandomState state without its key array: [name, position, has_gauss, gauss]
    return (isinstance(v, list) and len(v) == 4 and v[0] == "MT19937" and _count()(v[1]) and v[1] <= 624
            and v[2] in (0, 1) and type(v[2]) is int and _number(v[3]))


# The fitted section of model.json: name -> (check, what it must be, required).  Entries
# added in later versions are optional (absent in older files).
_FITTED_SCHEMA = {
    "n_features_in_": (_count(1), "an int >= 1", True),
    "n_outputs_": (_count(1), "an int >= 1", True),
    "_y_ndim": (lambda v: type(v) is int and v in (1, 2), "1 or 2", True),
    "device_": (lambda v: isinstance(v, str), "a str", True),
    "_dtype": (lambda v: v in DTYPES, "'float32' or 'float64'", True),
    "_rng": (_rng, "['MT19937', a position 0-624, 0 or 1, a number]", True),
    "loss_curve_": (_numbers, "a list of numbers", True),
    "n_iter_": (_count(), "an int >= 0", True),
    "t_": (_count(), "an int >= 0", True),
    "refit_ridge_": (lambda v: _number(v) and v >= 0, "a number >= 0", False),
    "validation_scores_": (_optional(_scores), "None or a list of numbers", False),
    "validation_loss_curve_": (_optional(_scores), "None or a list of numbers", False),
    "best_validation_score_": (_optional(_number), "None or a number", False),
    "best_loss_": (_optional(_number), "None or a number", False),
    "_no_improvement_count": (_count(), "an int >= 0", False),
    "_torch_seed": (_count(), "an int >= 0", False),
    "_validation_start": (_count(), "an int >= 0", False),
    "feature_names_in_": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                          "a list of str", False),
}
FITTED_NAMES = tuple(_FITTED_SCHEMA)

# The head's scalars (SlimTikHead.state_dict): name -> (check, what it must be, required).
_HEAD_SCHEMA = {
    "batch_size": (_count(1), "an int >= 1", True),
    "fixed": (_optional(lambda v: _number(v) and 0 < v < math.inf), "None or a finite number > 0", True),
    "max_change": (lambda v: _number(v) and v > 0, "a number > 0", True),
    "rule": (lambda v: v in ("global", "matlab"), "'global' or 'matlab'", True),
    "n_seen": (lambda v: _number(v) and 0 <= v < math.inf, "a finite number >= 0", True),
    "memory_next": (_count(), "an int >= 0", True),
    "memory_depth": (_optional(_count()), "None or an int >= 0", False),
    "pass_ends": (_optional(lambda v: isinstance(v, list) and all(_count()(x) for x in v)),
                  "None or a list of ints >= 0", False),
}

_RESNET_SCHEMA = {
    "n_features_in": _optional(_count(1)), "width": _count(1), "depth": _count(0),
    "final_time": lambda v: _number(v) and 0 < v < math.inf, "pass_inputs": lambda v: isinstance(v, bool),
}
_FLOATS = tuple(DTYPES.values())


def resnet_config_problem(config) -> str | None:
    """Why ``config`` is no :class:`ResNetFeatures` configuration ``save`` writes, or None."""
    if not isinstance(config, dict):
        return f"a configuration must be a dict, not {type(config).__name__}"
    unknown = sorted(set(config) - set(_RESNET_SCHEMA))
    if unknown:
        return f"unknown key(s) {unknown}"
    bad = [key for key, check in _RESNET_SCHEMA.items() if key in config and not check(config[key])]
    missing = [key for key in ("width", "depth", "final_time") if key not in config]
    return f"bad or missing key(s) {sorted(bad + missing)}" if bad or missing else None


# ResNetFeatures's own defaults, which a class or partial parameter's keywords complete
_RESNET_DEFAULTS = {key: param.default for key, param in inspect.signature(ResNetFeatures).parameters.items()
                    if key in ("width", "depth", "final_time")}


def resnet_keywords_problem(keywords) -> str | None:
    """Why ``keywords`` are no keywords of a ``ResNetFeatures`` class parameter ``save`` writes, or None.

    A configuration less ``n_features_in`` (the estimator passes it), the rest defaulted.
    """
    if not isinstance(keywords, dict):
        return f"keywords must be a dict, not {type(keywords).__name__}"
    if "n_features_in" in keywords:
        return "n_features_in is the estimator's to pass"
    return resnet_config_problem({**_RESNET_DEFAULTS, **keywords})


def _section(values, schema, where) -> list:
    if not isinstance(values, dict):
        return [f"{where} (not a dict)"]
    problems = [f"{where}[{name!r}] (unknown)" for name in values if name not in schema]
    for name, (check, what, required) in schema.items():
        if name in values:
            if not check(values[name]):
                problems.append(f"{where}[{name!r}] (must be {what}; got {values[name]!r:.60})")
        elif required:
            problems.append(f"{where}[{name!r}] (absent)")
    return problems


def _param_problems(params, param_names) -> list:
    problems = []
    for name, encoded in params.items():
        where = f"model.json params[{name!r}]"
        if name not in param_names:
            problems.append(f"{where} (unknown)")
        elif not isinstance(encoded, dict) or not (set(encoded) in ({"value"}, {"value", "torch"}, {"resnet"},
                                                                    {"resnet_class"})):
            problems.append(f"{where} (must be {{'value': ...}}, with 'torch', {{'resnet': ...}} or "
                            "{'resnet_class': ...})")
        elif "resnet" in encoded:
            problem = resnet_config_problem(encoded["resnet"])
            if problem or name != "feature_extractor":
                problems.append(f"{where} ({problem or 'only feature_extractor is a ResNetFeatures'})")
        elif "resnet_class" in encoded:
            problem = resnet_keywords_problem(encoded["resnet_class"])
            if problem or name != "feature_extractor":
                problems.append(f"{where} ({problem or 'only feature_extractor is a ResNetFeatures class'})")
        elif encoded.get("torch") == "dtype" and encoded["value"] not in DTYPES:
            problems.append(f"{where} (a dtype must be 'float32' or 'float64')")
        elif "torch" in encoded and (encoded["torch"] not in ("dtype", "device") or not isinstance(encoded["value"], str)):
            problems.append(f"{where} (must hold a dtype or a device by name)")
        elif "torch" not in encoded and not (encoded["value"] is None or isinstance(encoded["value"], (bool, int, float, str))):
            problems.append(f"{where} (a value must be a number, a str, a bool or None)")
    return problems


_TENSOR_ENTRIES = ("extractor", "optimizer", "head", "rng_keys", "y_offset", "param_extractor")


def _tensor_problems(tensors, meta) -> list:
    if not isinstance(tensors, dict):
        return ["tensors.pt (not a dict)"]
    problems = [f"tensors.pt[{name!r}] (unknown)" for name in tensors if name not in _TENSOR_ENTRIES]
    params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    if any(isinstance(e, dict) and "resnet" in e for e in params.values()) and not isinstance(
            tensors.get("param_extractor"), dict):
        problems.append("tensors.pt['param_extractor'] (the ResNetFeatures parameter's weights: absent)")
    extractor = tensors.get("extractor")
    fitted = meta.get("fitted") if isinstance(meta.get("fitted"), dict) else {}
    dtype = DTYPES.get(fitted.get("_dtype"))
    if isinstance(extractor, dict) and dtype is not None and any(
            isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != dtype for v in extractor.values()):
        problems.append(f"tensors.pt['extractor'] (floating tensors other than its _dtype {fitted['_dtype']})")
    keys = tensors.get("rng_keys")
    if not (isinstance(keys, torch.Tensor) and keys.shape == (624,) and keys.dtype == torch.int64):
        problems.append("tensors.pt['rng_keys'] (must be 624 int64 values)")
    if not isinstance(tensors.get("extractor"), dict):
        problems.append("tensors.pt['extractor'] (must be a state dict)")
    if not isinstance(tensors.get("optimizer"), (dict, type(None))):
        problems.append("tensors.pt['optimizer'] (must be a state dict or None)")
    head = tensors.get("head")
    if not isinstance(head, dict):
        return [*problems, "tensors.pt['head'] (not a dict)"]
    coef = head.get("coef")
    if not (isinstance(coef, torch.Tensor) and coef.dim() == 2 and coef.dtype in _FLOATS
            and bool(torch.isfinite(coef).all())):
        return [*problems, "tensors.pt head['coef'] (must be a finite 2-D float32 or float64 tensor)"]
    shapes = {"ridge": 0, "per_step": 0, "path": 1, "memory": 3}
    for name, dim in shapes.items():
        value = head.get(name)
        dtype = torch.float64 if name == "path" else coef.dtype
        if not (isinstance(value, torch.Tensor) and value.dim() == dim and value.dtype == dtype):
            problems.append(f"tensors.pt head[{name!r}] (must be a {dim}-D {dtype} tensor)")
    return problems


def file_problems(meta: dict, tensors, cls) -> list:
    """Every entry of a read model file that ``load`` cannot take, as ``"where (why)"`` strings."""
    param_names = set(cls._get_param_names())
    problems = []
    if meta.get("class", cls.__name__) != cls.__name__:
        problems.append(f"model.json['class'] (a {meta.get('class')!r}, loaded as {cls.__name__})")
    params = meta.get("params")
    problems += (["model.json['params'] (not a dict)"] if not isinstance(params, dict)
                 else _param_problems(params, param_names))
    required = meta.get("params_to_pass_at_load")
    if not (isinstance(required, list) and all(name in param_names for name in required)):
        problems.append("model.json['params_to_pass_at_load'] (must be a list of parameter names)")
    if not isinstance(meta.get("optimizer_class"), (str, type(None))):
        problems.append("model.json['optimizer_class'] (must be a class name or None)")
    extractor = meta.get("extractor")
    if extractor is not None and resnet_config_problem(extractor):
        problems.append(f"model.json['extractor'] ({resnet_config_problem(extractor)})")
    problems += _section(meta.get("head"), _HEAD_SCHEMA, "model.json head")
    fitted = meta.get("fitted")
    problems += _section(fitted, _FITTED_SCHEMA, "model.json fitted")
    if isinstance(fitted, dict) and isinstance(fitted.get("feature_names_in_"), list) and _count(1)(
            fitted.get("n_features_in_")) and len(fitted["feature_names_in_"]) != fitted["n_features_in_"]:
        problems.append("model.json fitted['feature_names_in_'] (not one name per feature)")
    return problems + _tensor_problems(tensors, meta)
