"""Stateful slimTik head: the running weights, cumulative ridge and memory.

The estimator calls :meth:`SlimTikHead.step` once per mini-batch; the layer's
structure (dense or convolutional) is in :mod:`sklearn_slimtrain._heads`, the
math in :mod:`sklearn_slimtrain._slimtik` and :mod:`sklearn_slimtrain._sgcv`.
"""

import contextlib
import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor

from ._memory import GramMemory
from ._slimtik import slimtik_update, tikhonov_from_gram
from ._tridiagonal import slimtik_update_tridiagonal

__all__ = ["SlimTikHead"]


# Largest q (weights per target) whose CPU step runs in NumPy.  Up to it a step's
# ~120 small operations cost more in per-call overhead (3-7 us each in torch, ~1 us
# in NumPy: about 0.5 ms a step) than in arithmetic; above it the eigendecomposition
# dominates (2 ms at q = 129 on one core, ~10 ms at q = 257, the same in both
# libraries on one thread) and torch's LAPACK may use every core.  Measured with
# benchmarks/overhead.py --head-only.
HOST_MAX_WEIGHTS = 128

# A CPU step without memory (the default ``memory_depth=0``) with at least
# TRIDIAGONAL_MIN_WEIGHTS weights per target and at most one target per
# TRIDIAGONAL_WEIGHTS_PER_TARGET weights goes through the tridiagonal reduction of
# :mod:`sklearn_slimtrain._tridiagonal` instead of an eigendecomposition.  Measured
# with benchmarks/overhead.py --head-only (one thread, the whole step with the
# batch's statistics, eigendecomposition / tridiagonal): 1.49 at q = 65 with one
# target and 1.23 with two, 1.87 and 1.35 at q = 129 with one and four, 2.34 and
# 1.57 at q = 257 with one and eight; about 1 (0.99-1.14) below q = 64, where both
# cost their ~20 calls' overhead, and at the first excluded target counts (q = 65
# with four targets, 129 with eight, 257 with sixteen: 0.99-1.11), since the
# shifted solves cost O(candidates q t) against the eigendecomposition's O(q^3).
TRIDIAGONAL_MIN_WEIGHTS = 64
TRIDIAGONAL_WEIGHTS_PER_TARGET = 32

_BLAS = []  # the ThreadpoolController of NumPy's and SciPy's own BLAS, found once per process


def _numpy_blas() -> ThreadpoolController:
    """The BLAS libraries shipped inside NumPy's and SciPy's wheels (``numpy.libs``, ``scipy.libs``, ...).

    Only those: a BLAS shared with torch (a conda environment's MKL or OpenBLAS) is
    left alone, so that the limit never takes threads from the extractor's products.
    (SciPy's serves the LAPACK calls of the tridiagonal step.)  Found once per
    process (about 1 ms).
    """
    if not _BLAS:
        import scipy

        controller = ThreadpoolController()
        prefixes = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(module.__file__))), name)
                         for module, name in ((np, "numpy"), (scipy, "scipy")))
        own = [lib["filepath"] for lib in controller.info()
               if lib["user_api"] == "blas" and os.path.abspath(lib["filepath"]).startswith(prefixes)]
        _BLAS.append(controller.select(filepath=own))
    return _BLAS[0]


_BLAS_LOCK = threading.Lock()
# guarded by _BLAS_LOCK: contexts inside, the limiter, whether the main thread set it, the setter thread
_BLAS_LIMIT = {"users": 0, "limiter": None, "by_main": False, "pid": None, "thread": None}


def _on_blas_thread(fn):
    """``fn()`` run on this process's one thread that sets NumPy's BLAS thread count for other threads.

    OpenBLAS 0.3.30-0.3.31 (NumPy's and SciPy's wheels) ignore a call that raises the
    count when it comes from another thread than the one that lowered it, while that
    thread lives: a limit set in one joblib worker and restored from another stayed at 1
    for the whole process (a review measured it).  So fits in threads other than the
    main one set and restore the limit on one thread of their own (a hop costs about
    0.25 ms here, twice an epoch; fits in the main thread set it directly, in about 30
    us).  A process started by ``fork`` makes its own thread (the parent's does not
    exist there).  The caller holds ``_BLAS_LOCK``.
    """
    if _BLAS_LIMIT["pid"] != os.getpid():
        _BLAS_LIMIT.update(pid=os.getpid(), thread=ThreadPoolExecutor(1, thread_name_prefix="sklearn-slimtrain-blas"))
    return _BLAS_LIMIT["thread"].submit(fn).result()


@contextlib.contextmanager
def _blas_one_thread():
    """Context that runs NumPy's and SciPy's own BLAS on one thread (``threadpoolctl``).

    NumPy's OpenBLAS keeps its own pool of threads; next to torch's OpenMP
    threads, which spin for a while after each of their parallel regions, they
    oversubscribe the cores and a step takes several times longer (measured:
    13-37 ms instead of 6-9 ms at width 32-64 on 2 cores).  The head's matrices are
    small enough for one thread.

    The thread count is process-wide, and fits may run in threads (joblib's
    threading backend, Dask workers): the first context to enter sets the limit
    and the last to leave restores what was there before, from the thread that set
    it (:func:`_on_blas_thread`).  (Each context saving and restoring on its own
    left the limit of 1 for the rest of the process whenever two overlapped: the
    second saved the first's 1, and restored it last.)  One case is left: a fit in
    the main thread that sets the limit while fits run in other threads, one of
    which ends last; its restore comes from the helper thread, which OpenBLAS
    ignores while the main thread lives.
    """
    main = threading.current_thread() is threading.main_thread()
    with _BLAS_LOCK:
        if not _BLAS_LIMIT["users"]:
            limit = functools.partial(_numpy_blas().limit, limits=1)
            _BLAS_LIMIT.update(limiter=limit() if main else _on_blas_thread(limit), by_main=main)
        _BLAS_LIMIT["users"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_LIMIT["users"] -= 1
            if not _BLAS_LIMIT["users"]:
                restore = _BLAS_LIMIT["limiter"].restore_original_limits
                if main and _BLAS_LIMIT["by_main"]:
                    restore()
                else:
                    _on_blas_thread(restore)
                _BLAS_LIMIT["limiter"] = None


def _host(x):
    """A NumPy view of a CPU tensor (shared memory); arrays and None pass through."""
    return x.numpy() if isinstance(x, Tensor) else x


def _tensor(x, dtype) -> Tensor:
    """A CPU tensor on the memory of a NumPy array or scalar, in ``dtype`` (a NumPy dtype)."""
    return torch.from_numpy(np.asarray(x, dtype=dtype))


class SlimTikHead:
    """The linear head ``W`` of a separable network, trained by slimTik.

    Parameters
    ----------
    layout : DenseLayout, ConvLayout or OperatorLayout
        The layer's structure: how features and targets become the batch matrix
        ``A`` and right-hand side, and how ``coef`` (``q x t``) acts.
    memory_depth : int or None
        ``r``, the number of previous batches kept; None keeps all (sTik).
    batch_size : int
        Nominal batch size ``n_batch`` (in samples): every block is divided by
        ``sqrt(n_batch)`` (batch-mean scaling) and a block of another size adds a
        proportionally smaller ridge increment, so that one epoch over all data
        with a fixed ridge and full memory is exactly the Tikhonov solution of
        ``(1/N) sum_i 1/2 ||head(z_i; w) - y_i||^2 + lam/2 ||w||^2`` (the whole
        flattened output of sample ``i`` in the norm, the bias among ``w``).
    ridge : float or None
        Fixed per-step ridge ``lam``, or None for sGCV.
    ridge_init : float
        Per-step ridge before the first sGCV step.
    max_change : float
        Largest ``|Lambda_k| / S_{k-1}`` of an sGCV step.
    dtype, device
        Where the head is solved (float64 by default).
    rule : {"global", "matlab"}
        sGCV candidate rule, see :mod:`sklearn_slimtrain._slimtik`.
    host : bool or None
        Solve the step in NumPy (CPU only).  None: on the CPU when
        ``q <= HOST_MAX_WEIGHTS`` or when the step is tridiagonal.  For tests and benchmarks.
    tridiagonal : bool or None
        Solve a step without memory through the tridiagonal reduction of
        :mod:`sklearn_slimtrain._tridiagonal` (CPU only, ``memory_depth=0``, not
        with ``host=False``).  None: when ``q >= TRIDIAGONAL_MIN_WEIGHTS`` and
        ``q >= TRIDIAGONAL_WEIGHTS_PER_TARGET * t``.  For tests and benchmarks.
    """

    _solve_on_host = None  # on_host, cached by the first step (class default for old pickles)
    _solve_tridiagonal = None  # tridiagonal, cached likewise
    tridiagonal_request = None  # the ``tridiagonal`` argument (absent from older pickles)
    _ends = None  # epoch ends (see __init__); None: not recorded (older pickles and model files)

    def __init__(
        self,
        layout,
        *,
        memory_depth: int | None,
        batch_size: int,
        ridge: float | None,
        ridge_init: float,
        max_change: float,
        dtype: torch.dtype,
        device: torch.device,
        rule: str = "global",
        host: bool | None = None,
        tridiagonal: bool | None = None,
    ):
        self.batch_size = int(batch_size)
        self.host = host
        self.tridiagonal_request = tridiagonal
        self.fixed = None if ridge is None else float(ridge)
        self.max_change = float(max_change)
        self.rule = rule
        self.layout = layout
        self.coef = torch.zeros(layout.shape, dtype=dtype, device=device)
        self.ridge = torch.zeros((), dtype=dtype, device=device)  # cumulative S_k
        start = ridge_init if ridge is None else ridge
        self.per_step = torch.tensor(float(start), dtype=dtype, device=device)
        self.memory = GramMemory(memory_depth, layout.shape[0], dtype=dtype, device=device)
        self.n_seen = 0
        self._solve_on_host = None
        self._solve_tridiagonal = None
        self._pending: list[Tensor] = []  # per-step ridges not yet copied to the host
        self._path = np.empty(0)
        self._ends = []  # len(self._path) at the end of every epoch / partial_fit call (None: unknown)

    @property
    def dtype(self) -> torch.dtype:
        return self.coef.dtype

    @property
    def tridiagonal(self) -> bool:
        """Whether :meth:`step` goes through the tridiagonal reduction (a CPU head without memory)."""
        request = self.tridiagonal_request
        if (self.coef.device.type != "cpu" or self.memory.active or request is False
                or getattr(self, "host", None) is False or self.coef.dtype not in (torch.float32, torch.float64)):
            return False
        q, t = self.coef.shape
        return request or (q >= TRIDIAGONAL_MIN_WEIGHTS and q >= TRIDIAGONAL_WEIGHTS_PER_TARGET * t)

    @property
    def on_host(self) -> bool:
        """Whether :meth:`step` solves in NumPy (a CPU head with at most ``HOST_MAX_WEIGHTS`` rows, or tridiagonal)."""
        if self.coef.device.type != "cpu":
            return False
        host = getattr(self, "host", None)  # absent from heads pickled by older versions
        if host is None:
            return self.coef.shape[0] <= HOST_MAX_WEIGHTS or self.tridiagonal
        return bool(host)

    @contextlib.contextmanager
    def stepping(self):
        """Context for a run of :meth:`step` calls.

        When solving in NumPy: NumPy's BLAS on one thread, and no NumPy warnings
        for overflow or NaN.  A diverging run overflows; torch does not warn
        about it, and the estimator's finiteness check after every epoch reports
        it with its own warning, whichever library solved.
        """
        if not self.on_host:
            yield
            return
        with _blas_one_thread(), np.errstate(all="ignore"):
            yield

    def step(self, features: Tensor, targets: Tensor, weights: Tensor | None = None,
             mass: float | None = None) -> Tensor:
        """One slimTik step on a batch; returns the new head ``W_k`` (``q x t``).

        ``features`` (the extractor's output for ``b`` samples) and ``targets``
        (``b x outputs``) are in the head's dtype and on its device.  No host
        synchronisation.  Optional sample ``weights`` (``b``, positive, same
        dtype and device) scale the rows by ``sqrt(w_i)``; ``mass`` is their sum,
        a Python number computed by the caller (so that the step need not read
        it from the device), and takes the place of ``b`` in the batch's share
        of the ridge and in ``n_seen``.

        On the CPU, for ``q <= HOST_MAX_WEIGHTS``, the step's small-matrix
        algebra (one ``q x q`` eigendecomposition and about a hundred ``q x q``
        or ``q x t`` operations, and the dense layout's statistics) runs on
        NumPy views of the same memory: at the paper's sizes its cost is the
        per-call overhead, which is a few times smaller in NumPy than in torch.
        Without memory, a head with ``q >= TRIDIAGONAL_MIN_WEIGHTS`` and few
        targets takes the tridiagonal step of :mod:`sklearn_slimtrain._tridiagonal`
        instead (NumPy and SciPy's LAPACK, whatever ``q``).
        Call it inside :meth:`stepping`.  A convolutional layout forms its
        statistics with torch.  On an accelerator everything stays in torch on
        the device.
        """
        b = features.shape[0] if weights is None else mass
        host = self._solve_on_host
        if host is None:  # (also for heads pickled before the attribute existed: the class default)
            host = self._solve_on_host = self.on_host
            self._solve_tridiagonal = self.tridiagonal
        coef, ridge_prev, per_step = self.coef, self.ridge, self.per_step
        memory = self.memory.total() if self.memory.active else None
        if not host:
            stats = self.layout.stats(features, targets, coef, weights)
        else:  # NumPy views of the same memory
            coef, ridge_prev, per_step = coef.numpy(), ridge_prev.numpy(), per_step.numpy()
            memory = None if memory is None else memory.numpy()
            if self.layout.kind == "dense":  # a few products: cheaper in NumPy too
                stats = self.layout.stats(features.numpy(), targets.numpy(), coef,
                                          None if weights is None else weights.numpy())
            else:  # a convolution's statistics, formed by torch
                stats = self.layout.stats(features, targets, self.coef, weights)
                stats = stats._replace(**{k: _host(getattr(stats, k)) for k in ("gram", "cross", "rnorm2", "batch")})
        gram, cross, rnorm2, batch = stats.gram, stats.cross, stats.rnorm2, stats.batch
        self.n_seen += b
        scale2 = 1.0 / self.batch_size  # rows divided by sqrt(n_batch)
        ridge_rule = dict(ridge_fixed=self.fixed, ridge_ref=per_step * (self.n_seen / self.batch_size),
                    max_change=self.max_change, weight=b / self.batch_size, rule=self.rule)
        if self._solve_tridiagonal:  # (no memory, NumPy arrays)
            result = slimtik_update_tridiagonal(gram * scale2, cross * scale2, np.asarray(rnorm2 * scale2),
                                                stats.n_rows, coef, ridge_prev, **ridge_rule)
        else:
            result = slimtik_update(gram * scale2, cross * scale2, rnorm2 * scale2, stats.n_rows, coef, ridge_prev,
                                    memory, batch=None if batch is None else batch * math.sqrt(scale2), **ridge_rule)
        if self.fixed is None:
            per_step = result.ridge * (self.batch_size / self.n_seen)
        if host:  # back to tensors (np.asarray: NumPy returns scalars from reductions)
            dtype = coef.dtype
            self.coef, self.ridge = _tensor(result.coef, dtype), _tensor(result.ridge, dtype)
            if self.fixed is None:
                self.per_step = _tensor(per_step, dtype)
        else:
            self.coef, self.ridge, self.per_step = result.coef, result.ridge, per_step
        if self.memory.active:
            self.memory.push(_tensor(result.gram, coef.dtype) if host else result.gram)
        self._pending.append(self.per_step)
        return self.coef

    def apply(self, features: Tensor, coef: Tensor | None = None) -> Tensor:
        """The head's flattened output ``(b, outputs)`` in the features' dtype (differentiable)."""
        coef = self.coef if coef is None else coef
        return self.layout.apply(features, coef.to(features.dtype))

    def ridge_path(self) -> np.ndarray:
        """Per-step ridge ``S_k n_batch / n_seen_k`` of every step so far.

        Copies the steps since the last call to the host (one synchronisation).
        """
        if self._pending:
            new = torch.stack(self._pending).cpu().numpy().astype(np.float64)
            self._path = np.concatenate((self._path, new))
            self._pending = []
        return self._path

    def end_pass(self) -> None:
        """Mark the end of an epoch (or ``partial_fit`` call) in the ridge path."""
        self.ridge_path()
        if self._ends is not None:
            self._ends.append(len(self._path))

    def pass_lengths(self) -> np.ndarray | None:
        """Steps of each epoch or call in the ridge path, or None when not recorded for all of it."""
        path = self.ridge_path()
        if not self._ends or self._ends[-1] != len(path):
            return None
        return np.diff(np.concatenate(([0], self._ends))).astype(int)

    def solve_full(self, chunks, ridge: float | None, mass: float | None = None):
        """The Tikhonov head on all rows (the estimator's final solve); ``W`` is unchanged.

        ``chunks`` yields ``(features, targets, weights)`` blocks in the head's
        dtype (``weights`` None or per sample); only ``A^T A``, ``A^T R`` and
        ``||R||^2`` for the residual ``R = B - A W_k`` of the current head, and
        ``||B||^2`` (for the zero head as reference when ``W_k`` fits worse), are
        accumulated (``q x q`` memory).  ``ridge`` is a fixed
        ``lam`` or None for GCV; ``mass`` is the sum of the weights (None: the
        number of samples), the ``N`` of ``(1/N) sum_i w_i ...``.  GCV counts
        rows.  Returns ``(coef, ridge)``, or None when the solve is not finite.
        """
        # Statistics of the residual of the current head W_k, which the solve corrects
        # (tikhonov_from_gram): relative to ||Y - A W_k||^2 the GCV residual keeps its
        # digits for targets with a large mean.  ||Y||^2 too, in case W_k fits worse than 0.
        ref = self.coef
        gram = cross = rnorm2 = ynorm2 = None
        n, rows = 0, 0
        for Z, Y, w in chunks:
            stats = self.layout.stats(Z, Y, ref, w)
            y2 = (Y * Y).sum() if w is None else ((Y * Y).sum(1) * w).sum()
            if gram is None:
                gram, cross, rnorm2, ynorm2 = stats.gram, stats.cross, stats.rnorm2, y2
            else:
                gram, cross = gram + stats.gram, cross + stats.cross
                rnorm2, ynorm2 = rnorm2 + stats.rnorm2, ynorm2 + y2
            n += Z.shape[0]
            rows += stats.n_rows
        if not bool(torch.isfinite(gram).all() & torch.isfinite(cross).all() & torch.isfinite(rnorm2)):
            return None
        if not bool(rnorm2 <= ynorm2):  # the zero head as reference: A^T Y = A^T R + G W_k
            ref, cross, rnorm2 = None, cross + gram @ ref, ynorm2
        n = n if mass is None else mass
        result = tikhonov_from_gram(gram / n, cross / n, rnorm2 / n, rows, ridge=ridge, coef=ref)
        if not bool(torch.isfinite(result.coef).all()):
            return None
        return result.coef, float(result.ridge)

    def module(self, coef: Tensor | None = None):
        """The layer (``nn.Linear`` for the dense head) holding ``coef``."""
        return self.layout.module(self.coef if coef is None else coef)

    def state_dict(self) -> tuple[dict, dict]:
        """``(tensors, scalars)``: the whole state, for ``torch.save`` and JSON."""
        self.ridge_path()
        tensors = {
            "coef": self.coef,
            "ridge": self.ridge,
            "per_step": self.per_step,
            "memory": self.memory._buffer,
            "path": torch.from_numpy(self._path.copy()),
        }
        scalars = {
            "batch_size": self.batch_size,
            "fixed": self.fixed,
            "max_change": self.max_change,
            "rule": self.rule,
            "n_seen": self.n_seen,
            "memory_next": self.memory._next,
            "memory_depth": self.memory.depth,
            "pass_ends": None if self._ends is None else [int(e) for e in self._ends],
        }
        return tensors, scalars

    @classmethod
    def from_state_dict(cls, tensors: dict, scalars: dict, device: torch.device, layout) -> "SlimTikHead":
        """Inverse of :meth:`state_dict`, on ``device``, for the rebuilt ``layout``."""
        coef = tensors["coef"]
        if tuple(coef.shape) != tuple(layout.shape):
            raise ValueError(f"the saved head has {tuple(coef.shape)} weights, but the extractor's features and "
                             f"n_outputs_ (and a head passed to load) make {tuple(layout.shape)}.")
        head = cls(
            layout.to(device),
            memory_depth=scalars.get("memory_depth", tensors["memory"].shape[0]),  # older files: a full buffer
            batch_size=scalars["batch_size"],
            ridge=scalars["fixed"],
            ridge_init=1.0,
            max_change=scalars["max_change"],
            dtype=coef.dtype,
            device=device,
            rule=scalars["rule"],
        )
        head.coef = coef.to(device)
        head.ridge = tensors["ridge"].to(device)
        head.per_step = tensors["per_step"].to(device)
        memory, depth, q = tensors["memory"], head.memory.depth, coef.shape[0]
        following = scalars["memory_next"]
        # [sum, compensation] for None; a finite depth's buffer fills block by block, the
        # next push appending until it is full and overwriting slot memory_next after
        fits = memory.dim() == 3 and tuple(memory.shape[1:]) == (q, q) and (
            memory.shape[0] == 2 if depth is None else memory.shape[0] <= depth)
        slot_ok = isinstance(following, int) and (
            following == 0 if not depth else
            following == memory.shape[0] if memory.shape[0] < depth else 0 <= following < depth)
        if not (fits and slot_ok):
            raise ValueError(f"the saved head's memory has shape {tuple(memory.shape)} and next slot "
                             f"{following!r}, which do not fit memory_depth={depth} and {q} weights: "
                             "the file is damaged.")
        head.memory._buffer = memory.to(device)
        head.memory._next = following
        n_seen = scalars["n_seen"]  # an int, or a float after steps with sample weights
        head.n_seen = float(n_seen) if isinstance(n_seen, float) else int(n_seen)
        head._path = tensors["path"].numpy().astype(np.float64)
        ends = scalars.get("pass_ends")  # absent in files written before it was recorded
        head._ends = None if ends is None and len(head._path) else list(ends or [])
        return head

    def to(self, device: torch.device) -> "SlimTikHead":
        """Move every tensor to ``device`` (in place); returns self."""
        self.ridge_path()
        self._solve_on_host = None
        self.layout.to(device)
        self.coef = self.coef.to(device)
        self.ridge = self.ridge.to(device)
        self.per_step = self.per_step.to(device)
        self.memory.to(device)
        return self

    def __getstate__(self):
        self.ridge_path()
        return self.__dict__.copy()
