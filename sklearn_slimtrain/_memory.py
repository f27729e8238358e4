"""The limited memory of slimTik: Gram matrices of the most recent batches."""

import torch
from torch import Tensor

__all__ = ["GramMemory"]


class GramMemory:
    """Ring buffer of the ``depth`` most recent ``p x p`` Gram matrices ``A_i^T A_i``.

    slimTik's memory matrix ``M_k`` (the paper's (3.8)) enters the update only
    through ``M_k^T M_k = sum_{i=k-r}^{k-1} A_i^T A_i``, so storing the Gram
    matrices is exact and costs ``r p^2`` numbers whatever the batch size.  The
    sum is recomputed from the buffer (``r p^2`` additions) rather than kept as a
    running sum with subtractions, so rounding errors cannot accumulate over a
    long stream.

    Parameters
    ----------
    depth : int
        Memory depth ``r`` (number of previous batches kept), ``>= 0``.
    n_features : int
        ``p``, the width of the head's feature vector.
    dtype, device
        Where the buffer lives (the head's dtype and the training device).
    """

    def __init__(self, depth: int, n_features: int, *, dtype: torch.dtype, device: torch.device):
        self.depth = int(depth)
        # Grows to `depth` blocks as batches arrive (a large depth, e.g. "unlimited",
        # costs only the batches seen), then is overwritten oldest first.
        self._buffer = torch.zeros((0, n_features, n_features), dtype=dtype, device=device)
        self._next = 0  # slot that the next push overwrites once the buffer is full

    def total(self) -> Tensor:
        """``M_k^T M_k``: the sum of the stored Gram matrices (zeros if empty)."""
        if len(self._buffer) == 0:
            n = self._buffer.shape[-1]
            return torch.zeros((n, n), dtype=self._buffer.dtype, device=self._buffer.device)
        return self._buffer.sum(0)

    def push(self, gram: Tensor) -> None:
        """Store ``gram`` as the newest block, dropping the oldest one when ``depth`` are stored."""
        if self.depth == 0:
            return
        if len(self._buffer) < self.depth:  # still filling: append (a copy of r p^2, as total's sum)
            self._buffer = torch.cat((self._buffer, gram.to(self._buffer.dtype).unsqueeze(0)))
        else:
            self._buffer[self._next] = gram
        self._next = (self._next + 1) % self.depth

    def to(self, device: torch.device) -> "GramMemory":
        """Move the buffer to ``device`` (in place); returns self."""
        self._buffer = self._buffer.to(device)
        return self
