"""Epoch wall time of slimTrain against Adam on the same network (ratio).

slimTrain runs with ``refit_head=False``: this measures the per-epoch cost; the
final head solve of ``fit`` is one extra forward pass over the data, once.

The two are timed alternately in one run, ``--repeats`` pairs, on the CPU and, when
available, on CUDA; the table gives the median of the pairs' ratios (each pair ran
under the same machine load), the ratio of the best times, and the range.  Each fit
runs ``--epochs`` epochs (default 3), so that the one-off work of a ``fit`` (input
validation, the copy of the given network, building the head: 5-7 ms, 5 % of a
one-epoch fit on the CDR stand-in) is spread as it is in a real fit rather than
charged to a single epoch:

* peaks, ResNet width 8, batch 32 (paper's section 4.1 sizes);
* our CDR stand-in (55 inputs, 72 outputs), 400 rows, width 16, batch 10 (section 4.2 sizes);
* a wide case: width 256, batch 256.

Each repeat also times a third fit, slimTrain with its head step skipped after the
first batch (the head keeps the weights of its first solve; everything else runs: the
forward pass, the conversion of the features to the head's dtype, the head's forward
pass and the loss, the backward pass, Adam on the extractor, the per-epoch copy and
checks).  Its ratio to Adam is the overhead outside the slimTik step, so the step's
own share is the difference between the two columns.

Where the head takes the tridiagonal step (no memory, ``q >= 64`` weights per
target, one target per 32 weights: the width-256 case), each repeat also times slimTrain
with the eigendecomposition step instead (the column "eigendecomposition step / Adam").

``--head-only`` times one slimTik step (``SlimTikHead.step``, sGCV) on the CPU: with
memory 5, its algebra in NumPy against torch, for heads of ``q`` = 9 to 257 weights
and 1 or 72 targets (the measurement behind ``HOST_MAX_WEIGHTS``); without memory, the
tridiagonal step against the eigendecomposition step in NumPy (the measurement behind
``TRIDIAGONAL_MIN_WEIGHTS`` and ``TRIDIAGONAL_WEIGHTS_PER_TARGET``).

    python benchmarks/overhead.py [--repeats 7] [--epochs 3] [--threads N] [--quick] [--head-only]
                                  [--case SUBSTRING]
"""

import argparse
import contextlib
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit_adam, machine, markdown_table

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
from sklearn_slimtrain.datasets import make_cdr, make_peaks


def head_step_time(q, t, batch, host, steps, memory=5, tridiagonal=False):
    """Seconds per ``SlimTikHead.step`` (dense head, sGCV) on random CPU features."""
    # Imported here, not at the top: the epoch comparison of docs/benchmarks.md runs this
    # script on older revisions too, which lack the private pieces --head-only needs.
    from sklearn_slimtrain._heads import DenseLayout
    from sklearn_slimtrain._solver import SlimTikHead

    g = torch.Generator().manual_seed(0)
    Z = torch.randn(steps, batch, q - 1, generator=g, dtype=torch.float64)
    Y = torch.randn(steps, batch, t, generator=g, dtype=torch.float64)
    kwargs = {"tridiagonal": tridiagonal} if not memory else {}  # (older revisions lack the argument)
    head = SlimTikHead(DenseLayout(q - 1, t, True), memory_depth=memory, batch_size=batch, ridge=None,
                       ridge_init=1.0, max_change=0.5, dtype=torch.float64, device=torch.device("cpu"), host=host,
                       **kwargs)
    with head.stepping():
        head.step(Z[0], Y[0])  # warm-up
        start = time.perf_counter()
        for k in range(steps):
            head.step(Z[k], Y[k])
    return (time.perf_counter() - start) / steps


def head_only(repeats, quick):
    from sklearn_slimtrain._solver import HOST_MAX_WEIGHTS

    rows = []
    sizes = [(9, 1, 32), (17, 72, 10)] if quick else [(9, 1, 32), (17, 72, 10), (33, 1, 32), (65, 1, 64),
                                                      (129, 1, 128), (257, 1, 256)]
    for q, t, batch in sizes:
        steps = 5 if quick else max(20, 20000 // q)
        numpy_s, torch_s = [], []
        for _ in range(repeats):
            numpy_s.append(head_step_time(q, t, batch, True, steps))
            torch_s.append(head_step_time(q, t, batch, False, steps))
        rows.append((q, t, batch, 1e3 * min(torch_s), 1e3 * min(numpy_s), min(torch_s) / min(numpy_s),
                     "NumPy" if q <= HOST_MAX_WEIGHTS else "torch"))
    print(f"# one slimTik step on the CPU, memory 5, torch against NumPy algebra ({machine()})\n")
    print(markdown_table(["q", "targets", "batch", "torch ms", "NumPy ms", "torch / NumPy", "default"], rows))

    rows = []
    sizes = [(65, 1, 64), (257, 1, 256)] if quick else [
        (9, 1, 32), (17, 1, 32), (17, 72, 10), (33, 1, 32), (65, 1, 64), (65, 2, 64), (65, 4, 64), (129, 1, 128),
        (129, 4, 128), (129, 8, 128), (257, 1, 256), (257, 8, 256), (257, 16, 256)]
    for q, t, batch in sizes:
        steps = 5 if quick else max(10, 5000 // q)
        eig_s, tri_s = [], []
        for _ in range(repeats):
            eig_s.append(head_step_time(q, t, batch, True, steps, memory=0, tridiagonal=False))
            tri_s.append(head_step_time(q, t, batch, True, steps, memory=0, tridiagonal=True))
        rows.append((q, t, batch, 1e3 * min(eig_s), 1e3 * min(tri_s), min(eig_s) / min(tri_s),
                     "tridiagonal" if tridiagonal_size(q, t) else "eigendecomposition"))
    print(f"\n# one slimTik step on the CPU, no memory, NumPy algebra: eigendecomposition against "
          f"tridiagonal reduction ({machine()})\n")
    print(markdown_table(["q", "targets", "batch", "eigendecomposition ms", "tridiagonal ms",
                          "eigendecomposition / tridiagonal", "default"], rows))


@contextlib.contextmanager
def head_step_skipped():
    """``SlimTikHead.step`` returns the current head without solving (the decomposition's third fit)."""
    from sklearn_slimtrain._solver import SlimTikHead

    original = SlimTikHead.step

    def skipped(self, features, targets, weights=None, mass=None):
        # The first step solves: with the initial zero head the extractor's gradients,
        # and so Adam's second moments, would be exactly zero, and torch's CPU square
        # root of zeros runs about 9x slower than of other numbers (2.8 against 0.3 ms
        # for the width-256 network's moments on the project's machine).
        if self.n_seen == 0:
            return original(self, features, targets)
        self._pending.append(self.per_step)  # the per-step ridge bookkeeping of a real step
        return self.coef

    SlimTikHead.step = skipped
    try:
        yield
    finally:
        SlimTikHead.step = original


def tridiagonal_size(q, t=1):
    """Whether a CPU head of ``q`` weights and ``t`` targets without memory takes the tridiagonal step."""
    from sklearn_slimtrain import _solver

    return q >= getattr(_solver, "TRIDIAGONAL_MIN_WEIGHTS", math.inf) and q >= getattr(
        _solver, "TRIDIAGONAL_WEIGHTS_PER_TARGET", 0) * t  # (older revisions lack the step)


@contextlib.contextmanager
def eigendecomposition_step():
    """Heads built inside take the eigendecomposition step even where the tridiagonal one applies."""
    from sklearn_slimtrain import _solver

    original = _solver.TRIDIAGONAL_MIN_WEIGHTS
    _solver.TRIDIAGONAL_MIN_WEIGHTS = math.inf
    try:
        yield
    finally:
        _solver.TRIDIAGONAL_MIN_WEIGHTS = original


def cases(quick):
    n = 256 if quick else 1
    yield "peaks, width 8, batch 32", make_peaks(2000 // n, random_state=0), 8, 32
    yield "CDR stand-in (72 outputs), width 16, batch 10", make_cdr(400 // min(n, 10), random_state=0), 16, 10
    yield "peaks, width 256, batch 256", make_peaks(8192 // n, random_state=0), 256, 256


def _time_adam(X, y, width, batch, epochs, device):
    ext = ResNetFeatures(X.shape[1], width=width).to(device)
    start = time.perf_counter()
    fit_adam(X, y, extractor=ext, batch_size=batch, epochs=epochs, device=device)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit (both methods)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="tiny data, one repeat (smoke test)")
    parser.add_argument("--head-only", action="store_true", help="time one head step, NumPy against torch")
    parser.add_argument("--case", default="", help="run only the cases whose name contains this")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    epochs = 1 if args.quick else args.epochs
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter epochs on purpose
    if args.head_only:
        head_only(repeats, args.quick)
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    X, y = make_peaks(64, random_state=0)  # warm-up: the first optimizer of a process imports torch._dynamo
    SlimTrainRegressor(max_iter=1).fit(X, y)
    fit_adam(X, y, extractor=ResNetFeatures(2), epochs=1)
    for device in devices:
        for name, (X, y), width, batch in cases(args.quick):
            if args.case not in name:
                continue
            slim, skipped, adam, eig = [], [], [], []
            fits = [(slim, contextlib.nullcontext), (skipped, head_step_skipped)]
            if device == "cpu" and tridiagonal_size(width + 1):
                fits.append((eig, eigendecomposition_step))
            for repeat in range(repeats):  # alternate: each group runs under the same machine load
                # and Adam goes first in every other repeat, so that the state of the CPU one
                # method leaves behind (caches, clock) does not always meet the same other one
                adam_first = repeat % 2 == 1
                if adam_first:
                    adam.append(_time_adam(X, y, width, batch, epochs, device))
                for times, make_context in fits:
                    context = make_context()
                    ext = ResNetFeatures(X.shape[1], width=width)
                    with context:
                        start = time.perf_counter()
                        SlimTrainRegressor(ext, batch_size=batch, max_iter=epochs, refit_head=False, device=device,
                                           random_state=0, n_iter_no_change=10**9).fit(X, y)
                        times.append(time.perf_counter() - start)
                if not adam_first:
                    adam.append(_time_adam(X, y, width, batch, epochs, device))
            pairs = np.array(slim) / np.array(adam)
            # per-step times: both split an epoch alike (_common.batch_bounds: the remainder
            # joins the last batch); the ratios above are per epoch
            slim_steps = adam_steps = epochs * max(len(X) // batch, 1)
            eig_ratio = float(np.median(np.array(eig) / np.array(adam))) if eig else "-"
            rows.append((device, name, len(X), float(np.median(pairs)), min(slim) / min(adam),
                         f"{pairs.min():.2f}-{pairs.max():.2f}", float(np.median(np.array(skipped) / np.array(adam))),
                         eig_ratio, 1e3 * min(slim) / slim_steps, 1e3 * min(skipped) / slim_steps,
                         1e3 * min(adam) / adam_steps))
    print(f"# epoch time slimTrain / Adam, same network, {epochs} epochs per fit ({machine()})\n")
    print(markdown_table(["device", "case", "rows", "slimTrain / Adam (median of pairs)", "best / best",
                          "range of pairs", "head step skipped / Adam (median)",
                          "eigendecomposition step / Adam (median)", "slimTrain ms/step (best)",
                          "head step skipped ms/step (best)", "Adam ms/step (best)"], rows))


if __name__ == "__main__":
    main()
