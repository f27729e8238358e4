"""Built-in feature extractors."""

import torch
from torch import nn

__all__ = ["ResNetFeatures"]


class ResNetFeatures(nn.Module):
    """Tanh residual network of the slimTrain paper (Appendix B).

    .. math::

        u_0 = \\tanh(K_{in} x + b_{in}), \\qquad
        u_{j+1} = u_j + h \\tanh(K_j u_j + b_j),\\quad j = 0, \\dots, d-1,

    with step size ``h = final_time / depth``.  The output ``u_d`` (``width``
    features) is what the separable linear head sees.

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

    Examples
    --------
    >>> import torch
    >>> from sklearn_slimtrain import ResNetFeatures
    >>> net = ResNetFeatures(2, width=8)
    >>> net(torch.zeros(5, 2)).shape
    torch.Size([5, 8])
    """

    def __init__(self, n_features_in: int | None = None, *, width: int = 16, depth: int = 8, final_time: float = 5.0):
        super().__init__()
        if width < 1 or depth < 0 or not final_time > 0:
            raise ValueError(
                f"ResNetFeatures needs width >= 1, depth >= 0 and final_time > 0; got width={width}, "
                f"depth={depth}, final_time={final_time}."
            )
        self.width = int(width)
        self.depth = int(depth)
        self.final_time = float(final_time)
        self.opening = nn.LazyLinear(width) if n_features_in is None else nn.Linear(n_features_in, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.tanh(self.opening(x))
        h = self.final_time / max(self.depth, 1)
        for layer in self.layers:
            u = u + h * torch.tanh(layer(u))
        return u
