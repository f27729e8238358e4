"""Epoch wall time of slimTrain against Adam on the same network (ratio).

slimTrain runs with ``refit_head=False``: this measures the per-epoch cost; the
final head solve of ``fit`` is one extra forward pass over the data, once.

The two are timed alternately in one run (best of ``--repeats``), on the CPU and,
when available, on CUDA:

* peaks, ResNet width 8, batch 32 (paper's section 4.1 sizes);
* our CDR stand-in (55 inputs, 72 outputs), 400 rows, width 16, batch 10 (section 4.2 sizes);
* a wide case: width 256, batch 256.

    python benchmarks/overhead.py [--repeats 3] [--quick]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit_adam, machine, markdown_table  # noqa: E402

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor  # noqa: E402
from sklearn_slimtrain.datasets import make_cdr, make_peaks  # noqa: E402


def cases(quick):
    n = 256 if quick else 1
    yield "peaks, width 8, batch 32", make_peaks(2000 // n, random_state=0), 8, 32
    yield "CDR stand-in (72 outputs), width 16, batch 10", make_cdr(400 // min(n, 10), random_state=0), 16, 10
    yield "peaks, width 256, batch 256", make_peaks(8192 // n, random_state=0), 256, 256


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny data, one repeat (smoke test)")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    X, y = make_peaks(64, random_state=0)  # warm-up: the first optimizer of a process imports torch._dynamo
    SlimTrainRegressor(max_iter=1).fit(X, y)
    fit_adam(X, y, extractor=ResNetFeatures(2), epochs=1)
    for device in devices:
        for name, (X, y), width, batch in cases(args.quick):
            slim, adam = [], []
            for _ in range(repeats):  # alternate, keep the best of each
                ext = ResNetFeatures(X.shape[1], width=width)
                start = time.perf_counter()
                SlimTrainRegressor(ext, batch_size=batch, max_iter=1, refit_head=False, device=device,
                                   random_state=0, n_iter_no_change=10**9).fit(X, y)
                slim.append(time.perf_counter() - start)
                ext = ResNetFeatures(X.shape[1], width=width).to(device)
                start = time.perf_counter()
                fit_adam(X, y, extractor=ext, batch_size=batch, epochs=1, device=device)
                adam.append(time.perf_counter() - start)
            rows.append((device, name, len(X), min(slim) / min(adam)))
    print(f"# epoch time slimTrain / Adam, same network ({machine()})\n")
    print(markdown_table(["device", "case", "rows", "slimTrain / Adam"], rows))


if __name__ == "__main__":
    main()
