"""Persistence of a fitted estimator: device-independent pickles and safe model files.

Two formats:

* **pickle** (what scikit-learn, joblib and the searches use): the whole object,
  with every tensor moved to the CPU.  Unpickling runs code named in the file,
  so load pickles only from people you trust.
* **model file** (:func:`save_model` / :func:`load_model`): a zip archive with
  ``model.json`` (the parameters and the scalar fitted state, readable with
  any zip tool) and ``tensors.pt`` (state dicts written by ``torch.save``).
  Loading uses ``json`` and ``torch.load(weights_only=True)``, which restore
  data only: a model file cannot run code.  The network's *architecture* is
  therefore not in the file: the built-in :class:`ResNetFeatures` is rebuilt
  from its configuration (a ``feature_extractor`` parameter that is the class,
  or a ``functools.partial`` of it with keywords only, from those keywords),
  and a custom ``feature_extractor``, ``head`` layer (or optimizer class) must
  be passed to ``load`` again.
"""

import contextlib
import copy
import functools
import io
import json
import os
import pickle
import shutil
import zipfile
from numbers import Integral, Real
from os import PathLike

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._device import dtype_name, restore_device
from ._extractors import ResNetFeatures
from ._file_schema import FITTED_NAMES, file_problems, resnet_keywords_problem
from ._solver import SlimTikHead
from ._validation import FROZEN_PARAMS, frozen_params, optimizer_class

__all__ = ["cpu_copy", "load_model", "move_model", "pickle_state", "save_model", "to_cpu", "unpickle_state"]

FORMAT = "sklearn-slimtrain-model"
# 2: memory_depth=None (the memory holds a running sum).  A file is written with the lowest
# version that describes it (1 unless memory_depth is None), so that older packages keep
# reading every file they can and refuse the others with the version error.  (Revisions
# before d4021cd, never released, took a finite depth from the memory buffer's length and
# misread a buffer that is not yet full; the version did not change then.)
# 3: the targets' offset (the dense head with an intercept centres the targets; before,
# its files had no offset, which reads as none).
# 4: ResNetFeatures(pass_inputs=True) (a configuration that older packages cannot build;
# files without it do not store the key, which reads as False).
FORMAT_VERSION = 5
_FIRST_FORMAT_VERSION = 1  # what every file without memory_depth=None or an offset still is
# Scalar fitted attributes stored in model.json as they are (the tensors go to tensors.pt;
# _dtype, _rng and feature_names_in_ are encoded); their checks at load are in _file_schema.
_FITTED = tuple(name for name in FITTED_NAMES if name not in ("feature_names_in_", "_dtype", "_rng"))


def to_cpu(obj):
    """Copy of a nested (optimizer) state dict with every tensor on the CPU.

    NumPy scalars become Python numbers: ``torch.load(weights_only=True)`` refuses
    them, and they reach the state through the parameters (a learning rate from
    ``np.logspace`` in a grid search, an optimizer class's NumPy hyper-parameters).
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


# ------------------------------------------------------------------- pickle
def pickle_state(est, state: dict) -> dict:
    """``__getstate__``: tensors on the CPU, the optimizer as its state dict."""
    if "feature_extractor_" not in state:
        return state
    if est.device_ != "cpu":  # store device-independently
        state["feature_extractor_"] = cpu_copy(est.feature_extractor_)
        state["_head"] = copy.deepcopy(est._head).to(torch.device("cpu"))
    optimizer = state.pop("_optimizer")
    state["_optimizer_state"] = None if optimizer is None else to_cpu(optimizer.state_dict())
    return state


def cpu_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` with its parameters and buffers on the CPU.

    Each tensor is copied to the CPU directly (``deepcopy`` finds the copies in
    its memo), not first duplicated on its device: pickling a model fitted on a
    GPU needs no GPU memory beyond the model's own.
    """
    memo = {id(p): torch.nn.Parameter(p.detach().to("cpu", copy=True), requires_grad=p.requires_grad)
            for p in module.parameters()}
    memo.update({id(b): b.detach().to("cpu", copy=True) for b in module.buffers()})
    return copy.deepcopy(module, memo)


def unpickle_state(est, state: dict) -> None:
    """``__setstate__`` after the ``__dict__`` update: back on the saved device if present."""
    optimizer_state = est.__dict__.pop("_optimizer_state", None)
    if "feature_extractor_" not in state:
        return
    _place(est, restore_device(est.device_), optimizer_state)


def move_model(est, device: torch.device) -> None:
    """Move a fitted model to ``device``: extractor, head (memory included) and optimizer state.

    All or nothing: when a move fails (e.g. out of device memory), what was moved
    goes back to ``device_`` before the error propagates.
    """
    optimizer_state = None if est._optimizer is None else est._optimizer.state_dict()
    try:
        _place(est, device, optimizer_state)
    except BaseException:
        _place(est, torch.device(est.device_), optimizer_state)
        raise


# Optimizer states shaped as their parameter (torch's load_state_dict does not compare them).
_PARAMETER_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "acc_delta",
                     "sum", "ax", "prev", "exp_inf", "mu_product")


def _place(est, device, optimizer_state):
    """Put extractor, head and optimizer state on ``device``; ``device_`` is set last."""
    est.feature_extractor_.to(device)
    est._head.to(device)
    est._optimizer = est._make_optimizer(est.feature_extractor_)
    if optimizer_state is not None and est._optimizer is not None:
        est._optimizer.load_state_dict(optimizer_state)
        for param, state in est._optimizer.state.items():
            for key in _PARAMETER_SHAPED:
                value = state.get(key)
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(f"state {key!r} has shape {tuple(value.shape)}, its parameter "
                                     f"{tuple(param.shape)}")
    est.device_ = str(device)


# --------------------------------------------------------------- model file
def _builtin_config(module):
    if type(module) is not ResNetFeatures:
        return None
    n_in = None if isinstance(module.opening, torch.nn.LazyLinear) else module.opening.in_features
    config = {"n_features_in": n_in, "width": module.width, "depth": module.depth, "final_time": module.final_time}
    if module.pass_inputs:  # stored only when set: files of the paper's network stay readable by version 3
        config["pass_inputs"] = True
    return config


def _builtin_factory(value):
    """``ResNetFeatures``, or a ``functools.partial`` of it with keywords only: those keywords as plain
    JSON values (``{}`` for the class); None for anything else, which load must be given again."""
    if value is ResNetFeatures:
        return {}
    if not (isinstance(value, functools.partial) and value.func is ResNetFeatures and not value.args):
        return None
    plain = {}
    for key, v in value.keywords.items():
        if isinstance(v, (bool, np.bool_)):
            plain[key] = bool(v)
        elif isinstance(v, Integral):
            plain[key] = int(v)
        elif isinstance(v, Real):
            plain[key] = float(v)
        else:
            return None
    return None if resnet_keywords_problem(plain) else plain


def _encode_param(name, value, tensors):
    """JSON form of one parameter, or None when it must be given again at load."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        return {"value": bool(value) if isinstance(value, np.bool_) else value}
    if isinstance(value, Integral):
        return {"value": int(value)}
    if isinstance(value, Real):
        return {"value": float(value)}  # json writes inf as Infinity and reads it back
    if isinstance(value, torch.dtype):  # restored as the dtype, so get_params() round-trips
        return {"value": dtype_name(value), "torch": "dtype"}
    if isinstance(value, torch.device):
        return {"value": str(value), "torch": "device"}
    if name == "feature_extractor" and _builtin_config(value) is not None:
        # A lazy opening layer (n_features_in=None) has no weights yet: they are built at fit.
        tensors["param_extractor"] = to_cpu(
            {k: v for k, v in value.state_dict().items() if not torch.nn.parameter.is_lazy(v)})
        return {"resnet": _builtin_config(value)}
    if name == "feature_extractor" and (keywords := _builtin_factory(value)) is not None:
        # rebuilt at load as the class, or as a partial of it with the same keywords
        return {"resnet_class": keywords}
    return None


def _decode_param(encoded):
    """Inverse of :func:`_encode_param` for the values a file holds (files without "torch" hold plain values)."""
    kind = encoded.get("torch")
    if kind == "dtype":
        return getattr(torch, encoded["value"])
    return torch.device(encoded["value"]) if kind == "device" else encoded["value"]


def save_model(est, path) -> None:
    """Write ``est`` (fitted) to ``path``; see the module docstring."""
    params, required = {}, []
    tensors = {}
    for name, value in est.get_params(deep=False).items():
        encoded = _encode_param(name, value, tensors)
        if encoded is None:
            required.append(name)
        else:
            params[name] = encoded
    fitted = {name: getattr(est, name) for name in _FITTED if hasattr(est, name)}
    if hasattr(est, "feature_names_in_"):
        fitted["feature_names_in_"] = [str(v) for v in est.feature_names_in_]
    fitted["_dtype"] = dtype_name(est._dtype)
    rng_name, rng_keys, rng_pos, rng_has_gauss, rng_gauss = est._rng.get_state()
    fitted["_rng"] = [rng_name, int(rng_pos), int(rng_has_gauss), float(rng_gauss)]
    head_tensors, head_scalars = est._head.state_dict()
    tensors.update(
        extractor=to_cpu(est.feature_extractor_.state_dict()),
        optimizer=None if est._optimizer is None else to_cpu(est._optimizer.state_dict()),
        head=to_cpu(head_tensors),
        rng_keys=torch.from_numpy(rng_keys.astype(np.int64)),
    )
    offset = getattr(est, "_y_offset", None)
    if offset is not None:
        tensors["y_offset"] = torch.from_numpy(np.array(offset, dtype=np.float64))
    extractor_config = _builtin_config(est.feature_extractor_)
    configs = (extractor_config, params.get("feature_extractor", {}).get("resnet"))  # fitted, parameter
    optimizer = optimizer_class(est.optimizer)  # of a class or a partial; None for "adam" and "sgd"
    version = (5 if "resnet_class" in params.get("feature_extractor", {}) else
               4 if any(c is not None and c.get("pass_inputs") for c in configs) else 3 if offset is not None
               else 2 if est._head.memory.depth is None else _FIRST_FORMAT_VERSION)
    meta = {
        "format": FORMAT,
        "format_version": version,
        "class": type(est).__name__,
        "params": params,
        "params_to_pass_at_load": required,
        # An optimizer class, by name: its state is loaded into the class passed at load.
        "optimizer_class": None if optimizer is None else _class_name(optimizer),
        "extractor": extractor_config,
        "head": head_scalars,
        "fitted": fitted,
    }
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    text = json.dumps(meta, indent=1)
    if not isinstance(path, (str, bytes, PathLike)):  # an open file: written as it is
        _write_archive(path, text, buffer.getvalue())
        return
    # A new file next to the target, then renamed over it: a failure while writing (a full
    # disk, Ctrl-C) leaves the previous file at path intact.  open(..., "xb") creates it
    # with the permissions the umask gives any new file; a file written over keeps its
    # own, and a symbolic link keeps pointing at the file it names, which is the one replaced.
    target = os.path.realpath(os.fsdecode(path))
    partial = f"{target}.{os.getpid()}.partial"
    try:
        with open(partial, "xb") as stream:
            _write_archive(stream, text, buffer.getvalue())
        if os.path.exists(target):
            shutil.copymode(target, partial)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise


def _write_archive(stream, text, raw):
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr("model.json", text)
        archive.writestr("tensors.pt", raw)


def _class_name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _same_class_name(given, saved: str) -> bool:
    """By qualified name only: a class defined in a script (``__main__``) may be imported from a module at load.

    ``given`` may be a ``functools.partial`` of the class, as the ``optimizer`` parameter.
    """
    given = optimizer_class(given)
    return given is not None and saved.endswith("." + given.__qualname__)


def _read(path, cls):
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("model.json"))
            raw = archive.read("tensors.pt")
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
        raise ValueError(f"{path!s} is not a sklearn-slimtrain model file (written by save): {exc}") from exc
    version = meta.get("format_version", 0) if isinstance(meta, dict) else None
    if (not isinstance(meta, dict) or meta.get("format") != FORMAT or type(version) is not int
            or version > FORMAT_VERSION):
        found = (meta.get("format"), meta.get("format_version")) if isinstance(meta, dict) else (None, None)
        raise ValueError(
            f"{path!s} is not a sklearn-slimtrain model file of format version <= {FORMAT_VERSION} "
            f"(found format={found[0]!r}, version={found[1]!r})."
        )
    try:  # weights_only=True: tensors, dicts, lists, numbers and strings only; never code
        tensors = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path!s} holds objects other than tensors and plain data; refusing to load it "
            f"(torch.load(weights_only=True)): {exc}"
        ) from exc
    problems = file_problems(meta, tensors, cls)
    if problems:
        raise ValueError(f"{path!s} is damaged or was edited: {'; '.join(problems)}.")
    return meta, tensors


def load_model(cls, path, **params):
    """Read a model written by :func:`save_model`; ``params`` override or supply parameters."""
    if isinstance(path, bytes):  # zipfile takes bytes for file contents, not a path
        path = os.fsdecode(path)
    meta, tensors = _read(path, cls)
    missing = [name for name in meta["params_to_pass_at_load"] if name not in params]
    if missing:
        raise ValueError(
            f"{path!s} was saved with parameter(s) {missing} that a model file does not store "
            "(a custom module or class is code, and a RandomState instance is an object: a safe file holds "
            "neither). Pass them to load, e.g. "
            f"{cls.__name__}.load(path, {missing[0]}=...); a module with the same architecture as when it was saved."
        )
    saved_class = meta.get("optimizer_class")  # absent in older files
    if saved_class is not None and not _same_class_name(params.get("optimizer"), saved_class):
        raise ValueError(
            f"{path!s} was saved with optimizer={saved_class}, and its state belongs to that class; "
            f"got optimizer={params.get('optimizer', meta['params'].get('optimizer', {}).get('value'))!r}. "
            "Pass the same class to load."
        )
    values = {}
    for name, encoded in meta["params"].items():
        if "resnet" in encoded:
            with torch.device("cpu"):  # whatever torch's default device: the parameter is stored on the CPU
                module = ResNetFeatures(**encoded["resnet"])
            lazy = {k for k, v in module.state_dict().items() if torch.nn.parameter.is_lazy(v)}
            keys = module.load_state_dict(tensors["param_extractor"], strict=not lazy)
            if lazy and (set(keys.missing_keys) != lazy or keys.unexpected_keys):
                raise ValueError(f"{path!s}: the stored feature_extractor parameter does not match its configuration.")
            values[name] = module
        elif "resnet_class" in encoded:
            keywords = encoded["resnet_class"]
            values[name] = functools.partial(ResNetFeatures, **keywords) if keywords else ResNetFeatures
        else:
            values[name] = _decode_param(encoded)
    saved = dict(values)
    values.update(params)
    est = cls(**values)
    try:
        est._validate_params()
    except ValueError as exc:  # InvalidParameterError: a value edited in the file, or one passed to load
        raise ValueError(f"{path!s}: {exc}") from exc
    # What continued training may not change, as fit records it: the saved values (a
    # structural parameter overridden at load is refused by the next partial_fit), and
    # the objects passed for what a file cannot hold (custom modules and classes).
    est._init_params = {**frozen_params(est), **{k: v for k, v in saved.items() if k in FROZEN_PARAMS}}
    fitted = meta["fitted"]
    for name, value in fitted.items():  # the names of FITTED_NAMES only (file_problems refuses others)
        if name not in ("feature_names_in_", "_dtype", "_rng"):
            setattr(est, name, value)
    if "feature_names_in_" in fitted:
        est.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    est._dtype = getattr(torch, fitted["_dtype"])
    offset = tensors.get("y_offset")  # absent: not centred (and every file before version 3)
    if offset is not None and not (isinstance(offset, torch.Tensor) and offset.shape == (est.n_outputs_,)
                                   and offset.dtype == torch.float64 and bool(torch.isfinite(offset).all())):
        raise ValueError(f"{path!s} is damaged: tensors.pt['y_offset'] is not {est.n_outputs_} finite float64 values.")
    est._y_offset = None if offset is None else offset.numpy()
    name, pos, has_gauss, gauss = fitted["_rng"]
    est._rng = np.random.RandomState()
    est._rng.set_state((name, tensors["rng_keys"].numpy().astype(np.uint32), pos, has_gauss, float(gauss)))
    if meta["extractor"] is not None and "feature_extractor" not in params:
        with torch.device("cpu"):
            module = ResNetFeatures(**meta["extractor"])
    else:
        module = est._build_extractor(est.n_features_in_)
    module.to(device="cpu", dtype=est._dtype)  # before loading: float64 weights must not pass through float32
    try:
        module.load_state_dict(tensors["extractor"])
    except RuntimeError as exc:
        raise ValueError(
            f"the feature_extractor passed to load does not match the weights saved in {path!s}: {exc}"
        ) from exc
    est.feature_extractor_ = module
    training = module.training
    try:
        with torch.no_grad():  # the head's layout needs the shape of the features
            out = module.eval()(torch.zeros((2, est.n_features_in_), dtype=est._dtype, device="cpu"))
    except Exception as exc:  # a wrong n_features_in_, or a module passed at load that does not fit it
        raise ValueError(f"the feature_extractor of {path!s} cannot be applied to its recorded "
                         f"n_features_in_={est.n_features_in_}: {type(exc).__name__}: {exc}") from exc
    module.train(training)
    try:
        layout = est._layout(out, est.n_outputs_)  # checked at fit; only the shape is read here
        est._head = SlimTikHead.from_state_dict(tensors["head"], meta["head"], torch.device("cpu"), layout)
    except ValueError as exc:
        raise ValueError(f"{path!s}: the head cannot be rebuilt from the file and the modules given: {exc}") from exc
    device = est._device_from_params() if "device" in params else restore_device(est.device_)
    try:
        _place(est, device, tensors["optimizer"])
    except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as exc:  # torch's own checks of the state
        raise ValueError(f"{path!s}: the optimizer state does not fit the feature_extractor: {exc}") from exc
    _check_optimizer_settings(est, tensors["optimizer"], path)
    return est


def _same_setting(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_setting(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _check_optimizer_settings(est, saved, path) -> None:
    """The optimizer given at load must have the saved state's settings (momentum, betas, ...), lr aside.

    ``load_state_dict`` restores the saved ones, so the loaded model would train with
    them while ``get_params()`` (and every clone) shows the other optimizer (a review:
    ``functools.partial(torch.optim.SGD, momentum=0.1)`` loaded a file saved with 0.9).
    """
    if est._optimizer is None or not saved or not saved.get("param_groups"):
        return
    given = est._make_optimizer(est.feature_extractor_).defaults
    group = saved["param_groups"][0]
    differ = [f"{key}={given[key]!r} (the file's state: {group[key]!r})" for key in given
              if key != "lr" and key in group and not _same_setting(given[key], group[key])]
    if differ:
        raise ValueError(f"{path!s}: optimizer={est.optimizer!r} sets {', '.join(differ)}; pass the optimizer "
                         "the model was saved with (a functools.partial with the same keywords).")


class _PersistenceMixin:
    """``save``/``load`` and device-independent pickling of the estimator."""

    def save(self, path: "str | PathLike") -> None:
        """Write the fitted model to a file that :meth:`load` reads without running code.

        The file is a zip archive: ``model.json`` (parameters and scalar fitted
        state) and ``tensors.pt`` (state dicts of the extractor, its optimizer
        and the head, written by ``torch.save``).  A custom
        ``feature_extractor`` module, ``head`` layer or optimizer class is
        code, so it is not stored: pass it again to :meth:`load`.

        Parameters
        ----------
        path : str, bytes, path-like or binary file object
            Where to write.  A file written over keeps its permissions, and a
            symbolic link the file it points to (which is replaced); the new
            file is complete or absent, never half written.
        """
        check_is_fitted(self)
        save_model(self, path)

    @classmethod
    def load(cls, path: "str | PathLike", **params):
        """Read a model written by :meth:`save`, with ``torch.load(weights_only=True)``.

        Parameters
        ----------
        path : str or path-like
            The model file.
        **params
            Parameters to supply or override: a custom ``feature_extractor``
            or ``head`` (the same architecture as when saved) or optimizer
            class, or ``device`` to load onto another device.  Without
            ``device``, a model saved on a device that is missing here loads on
            the CPU, with a warning.

        Returns
        -------
        model : SlimTrainRegressor
            Fitted, ready to ``predict`` or continue with ``partial_fit``.
        """
        with torch.inference_mode(False):  # a model loaded for serving may be trained later: no inference tensors
            return load_model(cls, path, **params)

    def __getstate__(self):
        # object.__getstate__ returns __dict__ itself: copy before changing it
        return pickle_state(self, dict(super().__getstate__()))

    def __setstate__(self, state):
        inference = torch.is_inference_mode_enabled()
        with torch.inference_mode(False):
            if inference:
                # Unpickled inside torch.inference_mode, every tensor of ``state`` is an
                # inference tensor, which no later fit can update in place; a copy made
                # outside the mode holds normal tensors (objects that shared them with
                # the rest of the pickle no longer do).
                state = copy.deepcopy(state)
            super().__setstate__(state)
            unpickle_state(self, state)
