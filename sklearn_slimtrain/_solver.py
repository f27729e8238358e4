"""Stateful slimTik head: the running weights, cumulative ridge and memory.

The estimator calls :meth:`SlimTikHead.step` once per mini-batch; the layer's
structure (dense or convolutional) is in :mod:`sklearn_slimtrain._heads`, the
math in :mod:`sklearn_slimtrain._slimtik` and :mod:`sklearn_slimtrain._sgcv`.
"""

import math

import numpy as np
import torch
from torch import Tensor

from ._memory import GramMemory
from ._slimtik import slimtik_update, tikhonov_from_gram

__all__ = ["SlimTikHead"]


class SlimTikHead:
    """The linear head ``W`` of a separable network, trained by slimTik.

    Parameters
    ----------
    layout : DenseLayout, ConvLayout or OperatorLayout
        The layer's structure: how features and targets become the batch matrix
        ``A`` and right-hand side, and how ``coef`` (``q x t``) acts.
    memory_depth : int
        ``r``, the number of previous batches kept.
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
    """

    def __init__(
        self,
        layout,
        *,
        memory_depth: int,
        batch_size: int,
        ridge: float | None,
        ridge_init: float,
        max_change: float,
        dtype: torch.dtype,
        device: torch.device,
        rule: str = "global",
    ):
        self.batch_size = int(batch_size)
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
        self._pending: list[Tensor] = []  # per-step ridges not yet copied to the host
        self._path = np.empty(0)

    @property
    def dtype(self) -> torch.dtype:
        return self.coef.dtype

    def step(self, features: Tensor, targets: Tensor) -> Tensor:
        """One slimTik step on a batch; returns the new head ``W_k`` (``q x t``).

        ``features`` (the extractor's output for ``b`` samples) and ``targets``
        (``b x outputs``) are in the head's dtype and on its device.  No host
        synchronisation.
        """
        b = features.shape[0]
        stats = self.layout.stats(features, targets, self.coef)
        scale2 = 1.0 / self.batch_size  # rows divided by sqrt(n_batch)
        self.n_seen += b
        ridge_ref = self.per_step * (self.n_seen / self.batch_size)
        result = slimtik_update(
            stats.gram * scale2,
            stats.cross * scale2,
            stats.rnorm2 * scale2,
            stats.n_rows,
            self.coef,
            self.ridge,
            self.memory.total(),
            ridge_fixed=self.fixed,
            ridge_ref=ridge_ref,
            max_change=self.max_change,
            weight=b / self.batch_size,
            rule=self.rule,
            batch=None if stats.batch is None else stats.batch * math.sqrt(scale2),
        )
        self.memory.push(result.gram)
        self.coef, self.ridge = result.coef, result.ridge
        if self.fixed is None:
            self.per_step = self.ridge * (self.batch_size / self.n_seen)
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

    def solve_full(self, chunks, ridge: float | None):
        """The Tikhonov head on all rows (the estimator's final solve); ``W`` is unchanged.

        ``chunks`` yields ``(features, targets)`` blocks in the head's dtype; only
        ``A^T A``, ``A^T B`` and ``||B||^2`` are accumulated (``q x q`` memory).
        ``ridge`` is a fixed ``lam`` or None for GCV.  Returns ``(coef, ridge)``, or
        None when the solve is not finite.
        """
        zero = torch.zeros_like(self.coef)
        gram = cross = ynorm2 = None
        n, rows = 0, 0
        for Z, Y in chunks:
            stats = self.layout.stats(Z, Y, zero)  # residual of the zero head: B itself
            if gram is None:
                gram, cross, ynorm2 = stats.gram, stats.cross, stats.rnorm2
            else:
                gram, cross, ynorm2 = gram + stats.gram, cross + stats.cross, ynorm2 + stats.rnorm2
            n += Z.shape[0]
            rows += stats.n_rows
        if not bool(torch.isfinite(gram).all() & torch.isfinite(cross).all()):
            return None
        result = tikhonov_from_gram(gram / n, cross / n, ynorm2 / n, rows, ridge=ridge)
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
        }
        return tensors, scalars

    @classmethod
    def from_state_dict(cls, tensors: dict, scalars: dict, device: torch.device, layout) -> "SlimTikHead":
        """Inverse of :meth:`state_dict`, on ``device``, for the rebuilt ``layout``."""
        coef = tensors["coef"]
        if tuple(coef.shape) != tuple(layout.shape):
            raise ValueError(f"the saved head has {tuple(coef.shape)} weights, but the head passed to load "
                             f"needs {tuple(layout.shape)}.")
        head = cls(
            layout.to(device),
            memory_depth=tensors["memory"].shape[0],
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
        head.memory._buffer = tensors["memory"].to(device)
        head.memory._next = int(scalars["memory_next"])
        head.n_seen = int(scalars["n_seen"])
        head._path = tensors["path"].numpy().astype(np.float64)
        return head

    def to(self, device: torch.device) -> "SlimTikHead":
        """Move every tensor to ``device`` (in place); returns self."""
        self.ridge_path()
        self.layout.to(device)
        self.coef = self.coef.to(device)
        self.ridge = self.ridge.to(device)
        self.per_step = self.per_step.to(device)
        self.memory.to(device)
        return self

    def __getstate__(self):
        self.ridge_path()
        return self.__dict__.copy()
