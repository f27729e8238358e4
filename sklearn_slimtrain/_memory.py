"""The memory of slimTik: Gram matrices of the most recent batches (or of all of them)."""

import torch
from torch import Tensor

__all__ = ["GramMemory"]


class GramMemory:
    """The ``p x p`` Gram matrices ``A_i^T A_i`` of the ``depth`` most recent batches.

    slimTik's memory matrix ``M_k`` (the paper's (3.8)) enters the update only
    through ``M_k^T M_k = sum_{i=k-r}^{k-1} A_i^T A_i``, so storing the Gram
    matrices is exact and costs ``r p^2`` numbers whatever the batch size.

    * A finite ``depth`` keeps a ring buffer of the blocks, which grows with the
      batches seen until it holds ``depth`` of them.  Its sum is recomputed from
      the buffer (``r p^2`` additions) rather than kept as a running sum with
      subtractions, so rounding errors cannot accumulate over a long stream.
    * ``depth=None`` keeps every batch (sTik, the paper's (3.2)): only the running
      sum, with Kahan's compensation, so each step costs ``O(p^2)`` work and
      memory whatever the number of batches.  Each entry's rounding error stays
      within a few units in the last place of the sum of its terms' magnitudes,
      instead of growing with their number (Higham, *Accuracy and Stability of
      Numerical Algorithms*, 2nd ed., 4.3): for these positive semidefinite
      matrices, a few units in the last place of the sum's norm.

    Parameters
    ----------
    depth : int or None
        Memory depth ``r`` (number of previous batches kept), ``>= 0``; None for all.
    n_features : int
        ``p``, the width of the head's feature vector.
    dtype, device
        Where the buffer lives (the head's dtype and the training device).

    Notes
    -----
    ``_buffer`` is the saved state: the stored blocks (``(k, p, p)``, ``k <= depth``)
    for a finite depth, and ``[sum, compensation]`` (``(2, p, p)``) for None.
    """

    def __init__(self, depth: int | None, n_features: int, *, dtype: torch.dtype, device: torch.device):
        self.depth = None if depth is None else int(depth)
        blocks = 2 if self.depth is None else 0  # a finite depth's buffer grows block by block
        self._buffer = torch.zeros((blocks, n_features, n_features), dtype=dtype, device=device)
        self._next = 0  # slot that the next push overwrites once the buffer is full (finite depth)

    @property
    def active(self) -> bool:
        """Whether the step uses the memory (any depth but 0)."""
        return self.depth != 0

    def total(self) -> Tensor:
        """``M_k^T M_k``: the sum of the stored Gram matrices (zeros if empty).

        Not to be modified by the caller (with ``depth=None`` it is the running sum itself).
        """
        if self.depth is None:
            return self._buffer[0]
        if len(self._buffer) == 0:
            n = self._buffer.shape[-1]
            return torch.zeros((n, n), dtype=self._buffer.dtype, device=self._buffer.device)
        return self._buffer.sum(0)

    def push(self, gram: Tensor) -> None:
        """Store ``gram`` as the newest block (dropping the oldest one when ``depth`` are stored)."""
        if self.depth == 0:
            return
        gram = gram.to(self._buffer.dtype)
        if self.depth is None:  # Kahan: sum + gram, with the low-order part lost by the addition kept
            total, compensation = self._buffer
            term = gram - compensation
            new = total + term
            self._buffer = torch.stack((new, (new - total) - term))
        elif len(self._buffer) < self.depth:  # still filling: append (a copy of r p^2, as total's sum)
            self._buffer = torch.cat((self._buffer, gram.unsqueeze(0)))
        else:
            self._buffer[self._next] = gram
        if self.depth:
            self._next = (self._next + 1) % self.depth

    def to(self, device: torch.device) -> "GramMemory":
        """Move the buffer to ``device`` (in place); returns self."""
        self._buffer = self._buffer.to(device)
        return self
