"""Built-in feature extractors."""

from numbers import Integral

import torch
from torch import nn

__all__ = ["ConvAutoencoderFeatures", "ResNetFeatures"]


class ResNetFeatures(nn.Module):
    """Tanh residual network of the slimTrain paper (Appendix B).

    .. math::

        u_0 = \\tanh(K_{in} x + b_{in}), \\qquad
        u_{j+1} = u_j + h \\tanh(K_j u_j + b_j),\\quad j = 0, \\dots, d-1,

    with step size ``h = final_time / depth``.  The output ``u_d`` (``width``
    features) is what the separable linear head sees; with ``pass_inputs=True``
    it is ``[x, u_d]`` (``n_features_in + width`` features).

    Parameters
    ----------
    n_features_in : int or None, default=None
        Input width.  None sizes the opening layer lazily at the first forward
        pass (:class:`torch.nn.LazyLinear`).
    width : int, default=16
        Number of features ``w``.
    depth : int, default=8
        Number of residual layers ``d``.
    final_time : float, default=5.0
        ``T``, so that ``h = T / d`` (the paper uses ``T = 5``, ``d = 8``).
    pass_inputs : bool, default=False
        Also pass the inputs ``x`` to the head, ahead of ``u_d``.  The head then
        solves a linear model in ``x`` together with the network's features
        (one ridge for both), so a trend that is linear in the inputs is fitted
        exactly instead of being learned by the extractor.  False is the
        paper's network.  See Notes.

    Notes
    -----
    ``pass_inputs=True`` is not in the paper.  In the peers benchmark
    (``benchmarks/peers.py --models ...``, ``docs/bench_peers.md``; 13 problems,
    3 seeds) it helps where the target has a strong linear part in the
    standardised inputs (Welch: test R2 0.937 against 0.836; robot arm 0.853
    against 0.831), costs at most 0.002 elsewhere, and does not make the
    network a match for a linear model on small, nearly linear data (diabetes:
    0.384 against 0.380 and RidgeCV's 0.420).

    Examples
    --------
    >>> import torch
    >>> from sklearn_slimtrain import ResNetFeatures
    >>> net = ResNetFeatures(2, width=8)
    >>> net(torch.zeros(5, 2)).shape
    torch.Size([5, 8])
    >>> ResNetFeatures(2, width=8, pass_inputs=True)(torch.zeros(5, 2)).shape
    torch.Size([5, 10])
    """

    # What a network pickled by a package older than the option (no instance attribute) reads.
    pass_inputs: bool = False

    def __init__(self, n_features_in: int | None = None, *, width: int = 16, depth: int = 8, final_time: float = 5.0,
                 pass_inputs: bool = False):
        super().__init__()
        if width < 1 or depth < 0 or not final_time > 0:
            raise ValueError(
                f"ResNetFeatures needs width >= 1, depth >= 0 and final_time > 0; got width={width}, "
                f"depth={depth}, final_time={final_time}."
            )
        self.width = int(width)
        self.depth = int(depth)
        self.final_time = float(final_time)
        self.pass_inputs = bool(pass_inputs)
        self.opening = nn.LazyLinear(width) if n_features_in is None else nn.Linear(n_features_in, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.tanh(self.opening(x))
        h = self.final_time / max(self.depth, 1)
        for layer in self.layers:
            u = u + h * torch.tanh(layer(u))
        return torch.cat([x, u], dim=1) if self.pass_inputs else u


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"ConvAutoencoderFeatures needs {name} to be a positive integer; got {name}={value!r}.")
    return int(value)


class ConvAutoencoderFeatures(nn.Module):
    """Convolutional autoencoder of the slimTrain paper (Appendix C), without its final layer.

    The encoder maps an ``H x W`` image to a ``latent_dim`` code and the decoder
    maps the code back to ``width`` feature maps of size ``H/2 x W/2``.  The
    separable final layer, a transposed convolution with one output channel
    (``16 width + 1`` weights), is not part of the module: it is
    :meth:`final_layer`, which maps the output to ``(n, 1, H, W)``.  Table 2 of
    the paper [1]_ lists the layers (see Notes).

    Parameters
    ----------
    image_shape : tuple of (int, int), default=(28, 28)
        ``(height, width)`` of the images; both must be divisible by 4 (the two
        stride-2 convolutions halve each side twice).  ``(28, 28)`` for MNIST,
        ``(8, 8)`` for :func:`sklearn.datasets.load_digits`.
    width : int, default=16
        Number of filters ``w`` of the first convolution (the second has ``2w``).
    latent_dim : int, default=50
        Size ``d`` of the code between encoder and decoder.

    Notes
    -----
    The input is a float tensor of flat rows, shape ``(n, H * W)`` (row-major
    pixels, as scikit-learn passes them), or images of shape ``(n, 1, H, W)``.
    The layers, for ``H = W = 28`` (the paper's Table 2; ``w = 16``, ``d = 50``
    gives 175,122 weights here plus 257 in the final layer):

    ========  ==============================================  ================  ===================
    Part      Layer                                           Output            Weights
    ========  ==============================================  ================  ===================
    Encoder   Conv2d(1, w, 4, stride=2, padding=1) + ReLU     ``14 x 14 x w``   ``16 w + w``
    Encoder   Conv2d(w, 2w, 4, stride=2, padding=1) + ReLU    ``7 x 7 x 2w``    ``32 w^2 + 2w``
    Encoder   flatten, Linear(49 * 2w, d)                     ``d``             ``98 w d + d``
    Decoder   Linear(d, 49 * 2w), reshape to ``(2w, 7, 7)``   ``7 x 7 x 2w``    ``98 w d + 98 w``
    Decoder   BatchNorm2d(2w)                                 ``7 x 7 x 2w``    (``4 w``, not counted)
    Decoder   ConvTranspose2d(2w, w, 4, stride=2, padding=1)  ``14 x 14 x w``   ``32 w^2 + w``
              + ReLU
    Final     ConvTranspose2d(w, 1, 4, stride=2, padding=1)   ``28 x 28 x 1``   ``16 w + 1``
    ========  ==============================================  ================  ===================

    For other image shapes ``7 x 7`` becomes ``H/4 x W/4``.  The final layer is
    linear in its weights (Table 2 lists a ReLU after it too, which a separable
    least-squares layer cannot have); it is not included in :meth:`forward`.

    References
    ----------
    .. [1] E. Newman, J. Chung, M. Chung, L. Ruthotto, "slimTrain -- A Stochastic
       Approximation Method for Training Separable Deep Neural Networks",
       SIAM J. Sci. Comput. 44(4), A2322-A2348, 2022 (section 4.3, Appendix C,
       Table 2).

    Examples
    --------
    >>> import torch
    >>> from sklearn_slimtrain import ConvAutoencoderFeatures
    >>> net = ConvAutoencoderFeatures(image_shape=(8, 8), width=4, latent_dim=3)
    >>> z = net(torch.zeros(5, 64))
    >>> z.shape
    torch.Size([5, 4, 4, 4])
    >>> net.final_layer()(z).shape
    torch.Size([5, 1, 8, 8])
    """

    def __init__(self, image_shape: tuple[int, int] = (28, 28), *, width: int = 16, latent_dim: int = 50):
        super().__init__()
        try:
            height, wide = image_shape
        except (TypeError, ValueError):
            raise ValueError(
                "ConvAutoencoderFeatures needs image_shape to be a pair (height, width); "
                f"got image_shape={image_shape!r}."
            ) from None
        for side in (height, wide):
            if isinstance(side, bool) or not isinstance(side, Integral) or side < 4 or side % 4:
                raise ValueError(
                    "ConvAutoencoderFeatures needs both sides of image_shape to be positive multiples of 4; "
                    f"got image_shape={image_shape!r}."
                )
        self.image_shape = (int(height), int(wide))
        self.width = _positive_int("width", width)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        w, d = self.width, self.latent_dim
        coarse = (self.image_shape[0] // 4, self.image_shape[1] // 4)
        n_coarse = 2 * w * coarse[0] * coarse[1]
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(n_coarse, d),
        )
        self.decoder = nn.Sequential(
            nn.Linear(d, n_coarse),
            nn.Unflatten(1, (2 * w, *coarse)),
            nn.BatchNorm2d(2 * w),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1),
            nn.ReLU(),
        )

    def final_layer(self) -> nn.ConvTranspose2d:
        """A fresh separable final layer for these features.

        Returns
        -------
        layer : torch.nn.ConvTranspose2d
            ``ConvTranspose2d(width, 1, 4, stride=2, padding=1)`` (``16 width + 1``
            weights, newly initialised on every call); it maps the output of
            :meth:`forward`, shape ``(n, width, H/2, W/2)``, to ``(n, 1, H, W)``.
        """
        return nn.ConvTranspose2d(self.width, 1, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, wide = self.image_shape
        if tuple(x.shape[1:]) not in ((height * wide,), (1, height, wide)):
            raise ValueError(
                f"ConvAutoencoderFeatures with image_shape={self.image_shape} expects input of shape "
                f"(n, {height * wide}) or (n, 1, {height}, {wide}); got {tuple(x.shape)}."
            )
        return self.decoder(self.encoder(x.reshape(len(x), 1, height, wide)))
