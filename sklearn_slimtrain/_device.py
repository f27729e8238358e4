"""Resolving the user's ``device`` and ``dtype`` parameters (at fit time only)."""

import contextlib
import warnings

import torch

__all__ = ["DTYPES", "device_index", "dtype_name", "model_numerics", "resolve_device", "resolve_dtype", "restore_device",
           "same_device"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}  # the dtypes a model runs in, by name


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device, *, float64: bool = False) -> torch.device:
    """Turn the ``device`` parameter into a usable :class:`torch.device`.

    ``"auto"`` picks CUDA, then MPS, then the CPU, on the machine where ``fit``
    runs (so a Dask worker with a GPU uses it and one without uses the CPU).
    MPS has no float64: with ``float64`` (the model's ``dtype`` or ``head_dtype``
    is float64, as ``head_dtype`` is by default) ``"auto"`` skips it and ``"mps"``
    raises.  A CUDA device is returned with its index (the current device for
    ``"cuda"``), so that a later ``torch.cuda.set_device`` does not move the
    model's inputs away from its weights.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() and not float64 else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"The 'device' parameter of SlimTrainRegressor must be 'cpu', 'cuda', 'cuda:N', 'mps' or "
            f"'auto'. Got {device!r} instead."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"The 'device' parameter of SlimTrainRegressor is {device!r}, but CUDA is not available "
                "on this machine. Use device='cpu' or device='auto'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"The 'device' parameter of SlimTrainRegressor is {device!r}, but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible."
            )
        return torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"The 'device' parameter of SlimTrainRegressor is {device!r}, but MPS is not available on this "
                "machine. Use device='cpu' or device='auto'."
            )
        if float64:
            raise ValueError(
                f"The 'device' parameter of SlimTrainRegressor is {device!r}, but MPS has no float64: set "
                "dtype='float32' and head_dtype='float32' (head_dtype is float64 by default), or use "
                "device='cpu'."
            )
    elif dev.type != "cpu":
        raise ValueError(
            f"The 'device' parameter of SlimTrainRegressor must be 'cpu', 'cuda', 'cuda:N', 'mps' or "
            f"'auto'. Got {device!r} instead."
        )
    return dev


@contextlib.contextmanager
def model_numerics(device: torch.device, *, training: bool = False):
    """The model's own dtypes and autograd, whatever torch modes the caller has switched on.

    ``torch.autocast`` on the model's device type is switched off: it would run the
    extractor in float16 or bfloat16, so that the head is solved on features that
    ``predict`` outside autocast does not reproduce, and Adam's small updates are
    lost in the rounding (a review measured test R2 -7.6 after 2 epochs of a fit
    inside ``torch.autocast("cpu", dtype=torch.bfloat16)``, 0.96 without).  With
    ``training``, ``torch.inference_mode`` is left too: nothing made in it can be
    trained (``torch.no_grad`` needs nothing: each step sets autograd itself).
    Thread-local, as the modes are.
    """
    with contextlib.ExitStack() as stack:
        if training:
            stack.enter_context(torch.inference_mode(False))
        try:
            stack.enter_context(torch.autocast(device.type, enabled=False))
        except RuntimeError:  # a device type without autocast (MPS before torch 2.5): nothing to switch off
            pass
        yield


def device_index(dev: torch.device) -> int:
    """The index of ``dev``: for ``"cuda"`` without one, the current CUDA device; else 0."""
    if dev.index is None and dev.type == "cuda":
        return torch.cuda.current_device()
    return dev.index or 0


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` name the same device (``"cuda"`` is the current CUDA device)."""
    return a.type == b.type and device_index(a) == device_index(b)


def restore_device(saved: str) -> torch.device:
    """Device for an unpickled model: the saved one if present, else the CPU with a warning."""
    try:
        return resolve_device(saved)
    except ValueError:
        warnings.warn(
            f"This SlimTrainRegressor was fitted on device {saved!r}, which is not available here; "
            "it was loaded on the CPU instead.",
            UserWarning,
            stacklevel=3,
        )
        return torch.device("cpu")


def resolve_dtype(dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtypes) to a torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype's name as the ``dtype`` parameters spell it (``torch.float32`` -> ``"float32"``)."""
    return str(dtype).removeprefix("torch.")
