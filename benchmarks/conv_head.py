"""Cost of one slimTik step's batch statistics for a convolutional head, three ways, side by side.

The paper's final layer ``ConvTranspose2d(16, 1, 4, stride=2, padding=1)`` on 14x14
features (257 weights, 784 outputs per image), a batch of 32, float64, one CPU thread:

* ``ConvLayout.stats`` (what the estimator uses): per stride class, a gather of its
  block of the patch matrix, its Gram and cross products; the residual from the layer;
* the patch matrix ``P`` formed with the layer's operator on grouped standard-basis
  filters (the published approach), then ``P^T P``, ``P^T R`` and ``||R||^2``;
* the generic path (``OperatorLayout``: the Jacobian in all weights by ``torch.func``).

For scale, the table also times one ``eigh`` of the 257 x 257 Gram matrix (done once per
step whatever the layout) and a forward and backward pass of the paper's whole
autoencoder network in float32.

    python benchmarks/conv_head.py
    python benchmarks/conv_head.py --quick
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from _common import machine, markdown_table

from sklearn_slimtrain import ConvAutoencoderFeatures
from sklearn_slimtrain._heads import ConvLayout, OperatorLayout, basis_layer

D64 = torch.float64


class _Hidden(nn.Module):
    """The same layer, hidden from the type checks (generic path)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, z):
        return self.layer(z)


def _time(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 4, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 4, 1
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1)
    shape = (16, 14, 14)
    Z = torch.randn(args.batch, *shape, dtype=D64)
    Y = torch.randn(args.batch, 784, dtype=D64)
    fast = ConvLayout(layer, shape, D64, torch.device("cpu"))
    coef = torch.randn(fast.shape, dtype=D64)
    basis = basis_layer(fast.layer)  # the layer in float64

    def explicit():
        P = basis(Z)  # (b, C_in K, 28, 28): the grouped basis operator, columns c K + j
        P = P.reshape(args.batch, 16, 16, 784).permute(0, 3, 2, 1).reshape(-1, 256)  # tap-major, as coef
        P = torch.cat((P, Z.new_ones((P.shape[0], 1))), dim=1)
        R = fast.targets(Y) - P @ coef
        return P.T @ P, P.T @ R, (R * R).sum()

    generic = OperatorLayout(_Hidden(layer), shape, D64, torch.device("cpu"))
    gram = fast.stats(Z, Y, coef).gram + torch.eye(fast.shape[0], dtype=D64)
    net = nn.Sequential(ConvAutoencoderFeatures((28, 28)), layer)
    x = torch.rand(args.batch, 784)

    def network_step():
        out = net(x).reshape(args.batch, -1)
        (0.5 * ((out - x) ** 2).sum()).backward()

    timings = {
        "ConvLayout.stats (the estimator's)": _time(lambda: fast.stats(Z, Y, coef), args.repeats),
        "explicit P (grouped basis operator), P^T P, P^T R": _time(explicit, args.repeats),
        "generic Jacobian (OperatorLayout.stats)": _time(lambda: generic.stats(Z, Y, coef[:, :1]), args.repeats),
        "eigh of the 257 x 257 Gram matrix": _time(lambda: torch.linalg.eigh(gram), args.repeats),
        "forward + backward of the whole network (float32)": _time(network_step, args.repeats),
    }
    ours = timings["ConvLayout.stats (the estimator's)"]
    ref = fast.stats(Z, Y, coef)
    check = explicit()
    agree = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ref[:3], check))
    print(f"# Batch statistics of a ConvTranspose2d(16, 1, 4, 2, 1) head, batch {args.batch}\n\n{machine()}\n")
    print(markdown_table(["what", "ms (best of repeats)", "relative to ConvLayout.stats"],
                         [[k, 1e3 * v, v / ours] for k, v in timings.items()]))
    print(f"\nlargest relative difference between ConvLayout.stats and the explicit products: {agree:.1e}")


if __name__ == "__main__":
    main()
