"""Final layers that slimTik can solve: any layer that is linear in its weights.

A separable network ends in a layer whose output is linear in its weights
``w`` (bias included): for a batch of features ``Z``,

.. math::

    \\operatorname{vec}(\\text{head}(Z; w)) = A(Z)\\, w,

with one row of ``A(Z)`` per output entry of the batch and one column per
weight (the paper's section 3.3 and Appendix C).  A *layout* turns the
features into this batch matrix and the targets into the matching right-hand
side, so that :class:`~sklearn_slimtrain._solver.SlimTikHead` runs the same
slimTik step and sGCV for every head.  Three layouts:

* :class:`DenseLayout`: ``W^T z + c`` (the default head, or an ``nn.Linear``).
  ``A`` is the feature matrix with a ones column, and the ``t`` targets share it
  (the Kronecker fast path: ``coef`` is ``p x t`` and one ``p x p``
  decomposition serves every target).
* :class:`ConvLayout`: ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d``
  with ``groups=1``.  Output channel ``o`` of a convolution is
  ``P w_o + c_o``, where ``w_o`` holds the ``C_in K`` weights of that channel
  (``K`` kernel taps) and the *patch matrix* ``P`` (rows: sample and output
  position, columns: input channel and tap) is the same for every output
  channel.  So a convolution is a dense head on ``P`` with the ``C_out``
  channels as targets: ``coef`` is ``(C_in K + 1) x C_out`` and the Gram matrix
  is ``(C_in K + 1)^2`` instead of ``|w|^2 = ((C_in K + 1) C_out)^2``.  Which
  input position each tap copies is read once, at construction, from one call
  of the layer's own operator with standard-basis filters grouped by input
  channel (the independence of samples and channels of Appendix C: ``C_in K``
  output channels, each a one-hot filter); after that ``P`` is a gather of
  the features.
* :class:`OperatorLayout`: any other module linear in all its parameters
  (grouped convolutions, custom layers).  ``A`` is the Jacobian of the
  flattened output with respect to the flat weight vector, formed with
  ``torch.func.vmap`` over the standard basis (one batched call); one target.
  Its size is (outputs of the batch) x ``|w|``, so it suits small layers.

Only ``A^T A`` enters the memory (``q x q`` per block, whatever the image
size).  Columns of ``A`` that never share a row give a block-diagonal Gram
matrix: a transposed convolution with stride ``s`` sends each output position
through the taps of one residue class of the kernel index modulo ``s``, so
for ``ConvTranspose2d(w, 1, 4, stride=2)`` the patch columns fall in 4 classes
of ``4 w`` and ``A^T A`` costs 16 times fewer operations than ``P^T P`` (the
shared bias row is made of column sums).  :class:`ConvLayout` never forms
``A``: each class gathers its own sub-block straight from the features (one
index map, computed once from the basis filters), and the residual comes from
the layer itself.  :class:`OperatorLayout` reads the classes from the sparsity
pattern of ``A`` for one sample (for ``nn.Linear`` and convolutions, whose
structural zeros do not depend on the input).
"""

import copy
import functools
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize

__all__ = ["BatchStats", "ConvLayout", "DenseLayout", "OperatorLayout", "basis_layer", "make_layout"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Relative tolerance of the linearity check of a custom head, which runs on a
# float64 CPU copy of the layer whatever the head's dtype and device: float64
# rounding of one forward pass is ~1e-16 relative; 1e-8 leaves room for layers
# that compute in float32 internally and still catches any nonlinearity of order one.
_LINEARITY_RTOL = 1e-8


def _probe(shape, dtype, device) -> Tensor:
    """Positive random features (in [1, 2)) from a private generator: no global RNG draw."""
    g = torch.Generator(device="cpu").manual_seed(0)
    return (torch.rand(shape, generator=g, dtype=torch.float64, device="cpu") + 1.0).to(dtype=dtype, device=device)


def _block_structure(pattern: Tensor):
    """Classes of columns of ``A`` that never share a row, from one sample's pattern.

    ``pattern`` (outputs x columns, bool) is the nonzero pattern of ``A`` for
    one sample.  Returns a list of ``(rows, cols)`` index tensors (the connected
    components of the graph "two columns share a row"), or None when there is a
    single class.
    """
    overlap = (pattern.T.double() @ pattern.double()) > 0
    n = overlap.shape[0]
    label = torch.full((n,), -1, dtype=torch.long, device=pattern.device)
    for start in range(n):  # connected components, once at initialisation
        if label[start] >= 0:
            continue
        member = torch.zeros(n, dtype=torch.bool, device=pattern.device)
        member[start] = True
        frontier = member.clone()
        while frontier.any():
            frontier = overlap[frontier].any(0) & ~member
            member |= frontier
        label[member] = start
    classes = torch.unique(label)
    if len(classes) == 1:
        return None
    blocks = []
    for c in classes:
        cols = torch.nonzero(label == c).flatten()
        blocks.append((torch.nonzero(pattern[:, cols].any(1)).flatten(), cols))
    return blocks


def _structured_gram(A: Tensor, n_out: int, blocks) -> Tensor:
    """``A^T A`` from the column classes of :func:`_block_structure` (rows: sample x ``n_out``)."""
    if blocks is None:
        return A.T @ A
    q = A.shape[1]
    A3 = A.view(-1, n_out, q)
    G = A.new_zeros((q, q))
    for rows, cols in blocks:
        sub = A3[:, rows[:, None], cols[None, :]].reshape(-1, len(cols))
        G[cols[:, None], cols[None, :]] = sub.T @ sub
    return G


@functools.lru_cache(maxsize=32)
def _ones_column(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only ``(n, 1)`` column of ones: the intercept's column of a NumPy batch."""
    ones = np.ones((n, 1), dtype=dtype)
    ones.flags.writeable = False
    return ones


class BatchStats(NamedTuple):
    """What a slimTik step needs from a batch (unscaled), in the head's dtype."""

    gram: Tensor  # (q, q) A^T A
    cross: Tensor  # (q, t) A^T R, R = B - A coef
    rnorm2: Tensor  # () ||R||_F^2
    n_rows: int  # rows of A
    batch: Tensor | None  # A itself when it is small (dense head), else None


class DenseLayout:
    """``W^T z + c``: features ``(b, p)``; ``coef`` is ``(p + 1, t)`` or ``(p, t)``."""

    kind = "dense"

    def __init__(self, n_features: int, n_targets: int, fit_intercept: bool):
        self.n_features = int(n_features)
        self.fit_intercept = bool(fit_intercept)
        self.shape = (self.n_features + self.fit_intercept, int(n_targets))
        self.n_outputs = int(n_targets)

    def design(self, Z: Tensor) -> Tensor:
        """The batch matrix ``A`` (``b x q``); a NumPy ``Z`` gives a NumPy ``A``."""
        if not self.fit_intercept:
            return Z
        if isinstance(Z, np.ndarray):
            return np.concatenate((Z, _ones_column(Z.shape[0], Z.dtype)), axis=1)
        return torch.cat((Z, Z.new_ones((Z.shape[0], 1))), dim=1)

    def targets(self, Y: Tensor) -> Tensor:
        """The right-hand side ``B`` (``b x t``)."""
        return Y

    def stats(self, Z: Tensor, Y: Tensor, coef: Tensor, weights: Tensor | None = None) -> BatchStats:
        """The batch's statistics, as tensors or (for NumPy inputs) as NumPy arrays.

        ``weights`` (``b``, positive) scales row ``i`` of ``A`` and ``R`` by
        ``sqrt(w_i)``: ``A^T diag(w) A``, ``A^T diag(w) R``, ``sum_i w_i ||r_i||^2``.
        """
        A = self.design(Z)
        R = Y - A @ coef
        if weights is not None:
            root = (weights**0.5)[:, None]
            A, R = A * root, R * root
        return BatchStats(A.T @ A, A.T @ R, (R * R).sum(), A.shape[0], A)

    def apply(self, Z: Tensor, coef: Tensor) -> Tensor:
        """The head's output ``(b, t)`` (differentiable in ``Z``)."""
        if not self.fit_intercept:
            return Z @ coef
        return torch.addmm(coef[-1], Z, coef[:-1])

    def module(self, coef: Tensor) -> nn.Module:
        """An ``nn.Linear`` holding ``coef``."""
        layer = nn.Linear(self.n_features, self.shape[1], bias=self.fit_intercept, dtype=coef.dtype,
                          device=coef.device)
        with torch.no_grad():
            layer.weight.copy_(coef[: self.n_features].T)
            if self.fit_intercept:
                layer.bias.copy_(coef[-1])
        return layer

    def to(self, device):
        return self


class _LayerLayout:
    """Shared parts of the layouts built around a torch layer."""

    def __init__(self, layer: nn.Module, feature_shape, dtype, device):
        self.layer = copy.deepcopy(layer).to(dtype=dtype, device=device).requires_grad_(False)
        self.feature_shape = tuple(int(s) for s in feature_shape)

    def apply(self, Z: Tensor, coef: Tensor) -> Tensor:
        """The head's flattened output ``(b, outputs)`` (differentiable in ``Z``)."""
        out = functional_call(self.layer, self.weights(coef), (Z,))
        return out.reshape(Z.shape[0], -1)

    def module(self, coef: Tensor) -> nn.Module:
        """A copy of the layer holding ``coef``."""
        layer = copy.deepcopy(self.layer).to(dtype=coef.dtype)
        with torch.no_grad():
            for name, value in self.weights(coef).items():
                getattr(layer, name).copy_(value)
        return layer.requires_grad_(True)  # a plain layer, as a user would build it

    def to(self, device):
        self.layer.to(device)
        if getattr(self, "_index", None) is not None:
            self._index = self._index.to(device)
        if getattr(self, "_blocks", None) is not None:
            self._blocks = [tuple(v.to(device) if isinstance(v, Tensor) else v for v in block)
                            for block in self._blocks]
        return self


def basis_layer(layer: nn.Module) -> nn.Module:
    """The layer with standard-basis filters grouped by input channel (Appendix C).

    Output channel ``c K + j`` copies input channel ``c`` through kernel tap ``j``
    (a one-hot filter, no bias), with the layer's stride, padding, dilation and
    padding mode: one call gives the patch matrix of a batch.  ``layer`` is a
    convolution or transposed convolution with ``groups=1``; the result has its
    dtype and device.
    """
    kernel = tuple(layer.kernel_size)
    taps, c_in, ones = math.prod(kernel), layer.in_channels, [1] * len(kernel)
    eye = torch.eye(taps, dtype=layer.weight.dtype, device=layer.weight.device)
    if isinstance(layer, _CONV_T):  # weight (in, out / groups, *k)
        weight = eye.reshape(1, taps, *kernel).repeat(c_in, 1, *ones)
    else:  # weight (out, in / groups, *k)
        weight = eye.reshape(taps, 1, *kernel).repeat(c_in, 1, *ones)
    basis = copy.deepcopy(layer)
    basis.weight = nn.Parameter(weight, requires_grad=False)
    basis.bias = None
    basis.groups = c_in
    return basis


class ConvLayout(_LayerLayout):
    """A convolution or transposed convolution with ``groups=1`` (see the module notes).

    Columns of the patch matrix are ordered tap-major (``j C_in + c`` for tap
    ``j`` of input channel ``c``), then the bias.
    """

    kind = "conv"

    def __init__(self, layer: nn.Module, feature_shape, dtype, device):
        super().__init__(layer, feature_shape, dtype, device)
        layer = self.layer
        self.transposed = isinstance(layer, _CONV_T)
        self.kernel = tuple(layer.kernel_size)
        self.taps = math.prod(self.kernel)
        self.c_in, c_out = layer.in_channels, layer.out_channels
        self.has_bias = layer.bias is not None
        n_patch = self.c_in * self.taps
        # Which input position each tap of each output position copies (0: padding): the
        # basis layer applied to an image numbered 1, 2, ... returns the copied position
        # plus one, so the patch matrix is a gather.  Built once on the CPU in float64,
        # whatever the head's dtype and device, where it is exact: a float32 image is
        # exact only up to 2^24 positions, and on a GPU cuDNN may round float32 inputs to
        # TF32 (11 significant bits) or use inexact algorithms (Winograd, FFT).
        basis = basis_layer(layer).to(dtype=torch.float64, device="cpu")
        spatial = self.feature_shape[1:]
        numbered = torch.arange(1, math.prod(spatial) + 1, dtype=torch.float64, device="cpu")
        numbered = numbered.reshape(1, 1, *spatial).expand(1, self.c_in, *spatial).contiguous()
        probe = _probe((2, *self.feature_shape), torch.float64, "cpu")
        with torch.no_grad():
            self._index = basis(numbered)[0, : self.taps].flatten(1).round().long()  # (K, positions)
            operator = basis(probe).flatten(2)  # (2, C_in K, positions), columns c K + j
            operator = operator.reshape(2, self.c_in, self.taps, -1).permute(0, 3, 2, 1).reshape(-1, n_patch)
            if not torch.equal(self.design(probe)[:, :n_patch], operator):
                raise ValueError(
                    f"head={type(layer).__name__}(padding_mode={getattr(layer, 'padding_mode', None)!r}) mixes "
                    "input values in one tap; pass it as a generic operator head instead."
                )
        self.n_positions = self._index.shape[1]
        self.n_outputs = c_out * self.n_positions  # the layer's output: the basis layer's positions
        self.shape = (n_patch + self.has_bias, c_out)
        self._blocks = self._tap_classes(device)
        self._index = self._index.to(device)

    def _tap_classes(self, device):
        """Taps that never share an output position, with their positions and gather indices."""
        used = (self._index > 0).T.cpu()  # (positions, taps)
        classes = _block_structure(used) or [(torch.arange(used.shape[0], device="cpu"), torch.arange(self.taps, device="cpu"))]
        blocks = []
        for rows, taps in classes:
            cols = (taps[:, None] * self.c_in + torch.arange(self.c_in, device="cpu")[None, :]).reshape(-1)
            gather = self._index.cpu()[taps][:, rows].T.reshape(-1)  # (positions x taps) of the class
            blocks.append((rows.to(device), cols.to(device), gather.to(device), len(taps)))
        return blocks

    def _padded(self, Z: Tensor) -> Tensor:
        """Features as ``(b, 1 + positions, C_in)``, position 0 a zero (the padding)."""
        flat = Z.flatten(2).transpose(1, 2)
        return torch.cat((flat.new_zeros((flat.shape[0], 1, flat.shape[2])), flat), dim=1)

    def design(self, Z: Tensor) -> Tensor:
        """The batch matrix ``A`` (rows: sample, output position; columns: tap, channel, bias).

        For reference and tests: the step uses :meth:`stats`, which never forms it.
        """
        padded = self._padded(Z)
        P = padded[:, self._index.T.reshape(-1)].reshape(-1, self.taps * self.c_in)
        if not self.has_bias:
            return P
        return torch.cat((P, P.new_ones((P.shape[0], 1))), dim=1)

    def targets(self, Y: Tensor) -> Tensor:
        """``Y`` as rows (sample, output position) x output channels."""
        c_out = self.shape[1]
        return Y.reshape(Y.shape[0], c_out, -1).transpose(1, 2).reshape(-1, c_out)

    def stats(self, Z: Tensor, Y: Tensor, coef: Tensor, weights: Tensor | None = None) -> BatchStats:
        """``A^T A``, ``A^T R`` and ``||R||^2`` without forming ``A``.

        ``R`` comes from the layer itself; each class of taps gathers only its
        own sub-block of ``A`` (the other entries of its rows are zero), whose
        Gram and cross products fill the diagonal blocks; the bias row is made
        of column sums.  ``weights`` (``b``) scales every row of sample ``i``
        (all its output positions) by ``sqrt(w_i)``.
        """
        b, (q, t) = Z.shape[0], self.shape
        R3 = self.targets(Y - self.apply(Z, coef)).view(b, self.n_positions, t)
        padded = self._padded(Z)
        root = None if weights is None else (weights**0.5)[:, None, None]
        if root is not None:  # the bias column becomes sqrt(w): its sums take a second sqrt(w)
            R3, padded = R3 * root, padded * root
        gram = Z.new_zeros((q, q))
        cross = Z.new_zeros((q, t))
        for rows, cols, gather, n_taps in self._blocks:
            sub = padded.index_select(1, gather)  # (b, class positions x taps, C_in)
            flat = sub.reshape(-1, n_taps * self.c_in)
            gram[cols[:, None], cols[None, :]] = flat.T @ flat
            cross[cols] = flat.T @ R3[:, rows].reshape(-1, t)
            if self.has_bias:
                gram[-1, cols] = (flat if root is None else (sub * root).reshape(flat.shape)).sum(0)
                gram[cols, -1] = gram[-1, cols]
        n_rows = b * self.n_positions
        if self.has_bias:
            gram[-1, -1] = n_rows if weights is None else self.n_positions * weights.sum()
            cross[-1] = (R3 if root is None else R3 * root).sum((0, 1))
        return BatchStats(gram, cross, (R3 * R3).sum(), n_rows, None)

    def weights(self, coef: Tensor) -> dict:
        """The layer's parameters (``weight``, ``bias``) that ``coef`` describes."""
        c_out = self.shape[1]
        W = coef[: self.c_in * self.taps].reshape(self.taps, self.c_in, c_out)
        if self.transposed:  # (in, out, *k)
            weight = W.permute(1, 2, 0).reshape(self.c_in, c_out, *self.kernel)
        else:  # (out, in, *k)
            weight = W.permute(2, 1, 0).reshape(c_out, self.c_in, *self.kernel)
        weights = {"weight": weight}
        if self.has_bias:
            weights["bias"] = coef[-1]
        return weights


class OperatorLayout(_LayerLayout):
    """Any module linear in all its parameters: ``A`` is the Jacobian in the weights."""

    kind = "operator"

    def __init__(self, layer: nn.Module, feature_shape, dtype, device):
        super().__init__(layer, feature_shape, dtype, device)
        self._names = [name for name, _ in self.layer.named_parameters()]
        self._shapes = [p.shape for _, p in self.layer.named_parameters()]
        q = sum(p.numel() for p in self.layer.parameters())
        if q == 0:
            raise ValueError(f"head={type(layer).__name__} has no parameters to solve for.")
        self.shape = (q, 1)
        self._check_linear(layer)
        probe = _probe((1, *self.feature_shape), dtype, device)
        A = self.design(probe)
        self.n_outputs = A.shape[0]
        structured = isinstance(layer, (nn.Linear, *_CONV, *_CONV_T))  # sparsity independent of Z
        blocks = _block_structure((A != 0).cpu()) if structured else None
        self._blocks = None if blocks is None else [(r.to(device), c.to(device)) for r, c in blocks]

    def weights(self, coef: Tensor) -> dict:
        """The layer's parameters, by name, that ``coef`` (the flat weight vector) describes."""
        out, start = {}, 0
        for name, shape in zip(self._names, self._shapes):
            size = math.prod(shape)
            out[name] = coef[start : start + size, 0].reshape(shape)
            start += size
        return out

    def _check_linear(self, layer):
        """Raise unless the layer's output is linear in its parameters.

        On a float64 CPU copy of the layer, whatever the head's dtype and device:
        the check is about the layer's structure, and float32 (or TF32 on a GPU)
        rounding, ~1e-7 (1e-3) relative, would read as nonlinearity at this tolerance.
        """
        check = copy.deepcopy(self.layer).to(dtype=torch.float64, device="cpu")
        probe = _probe((1, *self.feature_shape), torch.float64, "cpu")
        g = torch.Generator(device="cpu").manual_seed(0)
        w1, w2 = (torch.randn(self.shape[0], 1, generator=g, dtype=torch.float64, device="cpu") for _ in range(2))
        with torch.no_grad():
            f1, f2, f12 = (functional_call(check, self.weights(w), (probe,)) for w in (w1, w2, 2.0 * w1 - 3.0 * w2))
        scale = float(f1.abs().max() + f2.abs().max()) + 1e-300
        # 2 w1 - 3 w2: the combination's error scales with |2| + |3| = 5 times the outputs
        if float((f12 - (2.0 * f1 - 3.0 * f2)).abs().max()) > _LINEARITY_RTOL * 5.0 * scale:
            raise ValueError(
                f"head={type(layer).__name__} is not linear in its parameters: slimTik needs a final "
                "layer whose output is A(Z) w for its weights w (nn.Linear, a convolution, or a custom "
                "module with that property; put activations in the feature extractor)."
            )

    def design(self, Z: Tensor) -> Tensor:
        """The Jacobian ``A`` (rows: sample, output entry; columns: weights), one batched call."""
        eye = torch.eye(self.shape[0], dtype=Z.dtype, device=Z.device)
        columns = vmap(lambda w: self.apply(Z, w[:, None]).reshape(-1))(eye)  # (q, rows)
        return columns.T

    def targets(self, Y: Tensor) -> Tensor:
        return Y.reshape(-1, 1)

    def stats(self, Z: Tensor, Y: Tensor, coef: Tensor, weights: Tensor | None = None) -> BatchStats:
        """As :meth:`DenseLayout.stats`, the rows of sample ``i`` scaled by ``sqrt(w_i)``."""
        A = self.design(Z)
        R = self.targets(Y) - A @ coef
        if weights is not None:
            root = (weights**0.5).repeat_interleave(self.n_outputs)[:, None]
            A, R = A * root, R * root
        return BatchStats(_structured_gram(A, self.n_outputs, self._blocks), A.T @ R, (R * R).sum(),
                          A.shape[0], None)


def make_layout(head, feature_shape, n_targets: int, fit_intercept: bool, dtype, device):
    """The layout of ``head`` (None, a torch layer) for features of per-sample shape ``feature_shape``.

    Raises ValueError when the head does not fit the features or the targets.
    """
    feature_shape = tuple(feature_shape)
    name = "None" if head is None else type(head).__name__
    if isinstance(head, LazyModuleMixin) and head.has_uninitialized_params():  # in_features=0 until a forward
        raise ValueError(f"head={name} is a lazy layer; slimTik solves for the layer's weights, whose shape it "
                         "needs up front: pass the layer with its input size (e.g. nn.Linear(n_features, n_targets)).")
    if head is not None and (parametrize.is_parametrized(head) or head._forward_pre_hooks):
        # weight_norm, spectral_norm (as parametrizations or as the older pre-hooks): the weight the layer
        # uses is a function of other parameters, not the linear weights slimTik solves (a conv head
        # raised a KeyError, and a dense one silently dropped the constraint)
        raise ValueError(f"head={name} has a parametrization or a forward pre-hook (e.g. weight_norm, "
                         "spectral_norm): its weight is computed from other parameters, while slimTik solves the "
                         "layer's own linear weights. Pass the plain layer.")
    if head is None or (isinstance(head, nn.Linear) and len(feature_shape) == 1):
        if len(feature_shape) != 1:
            raise ValueError(
                f"head={name} needs 2-D features (n_samples, n_features), but the feature extractor returns "
                f"per-sample shape {feature_shape}; flatten them in the extractor or pass a convolutional head."
            )
        if head is None:
            layout = DenseLayout(feature_shape[0], n_targets, fit_intercept)
        else:
            if head.in_features != feature_shape[0]:
                raise ValueError(f"head={head} expects {head.in_features} features; the feature extractor "
                                 f"returns {feature_shape[0]}.")
            layout = DenseLayout(head.in_features, head.out_features, head.bias is not None)
    elif isinstance(head, (*_CONV, *_CONV_T)) and head.groups == 1:
        if len(feature_shape) != len(head.kernel_size) + 1 or feature_shape[0] != head.in_channels:
            raise ValueError(
                f"head={head} expects features of per-sample shape (in_channels={head.in_channels}, "
                f"{len(head.kernel_size)} spatial dims); the feature extractor returns {feature_shape}."
            )
        layout = ConvLayout(head, feature_shape, dtype, device)
    else:
        try:
            layout = OperatorLayout(head, feature_shape, dtype, device)
        except ValueError:
            raise
        except Exception as exc:  # the module does not accept these features
            raise ValueError(f"head={name} cannot be applied to features of per-sample shape "
                             f"{feature_shape}: {exc}") from exc
    if layout.n_outputs != n_targets:
        raise ValueError(
            f"head={name} produces {layout.n_outputs} outputs per sample (flattened), but y has "
            f"{n_targets} targets; y must hold the head's flattened output (channels, then positions)."
        )
    return layout
