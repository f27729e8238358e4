"""Stability of the sGCV ridge rule across batch size, memory depth and learning rate.

Fits SlimTrainRegressor on two problems (peaks: 1 output; damped-oscillator
surrogate: 32 outputs, 400 training points as in the issue's probe) over
batch size x memory depth x learning rate, for three sGCV step rules:

* ``bounded``: global sGCV grid, cumulative ridge moves within [S/2, 1.5 S] per
  step (the default, ``ridge_max_change=0.5``);
* ``free``: global sGCV grid, jump to the minimiser every step
  (``ridge_max_change=np.inf``);
* ``matlab``: the published MATLAB rule, a local window of 60 candidates in
  [S/2, 1.5 S] around S, ties to the smallest, floor 1e-7.

Prints validation R2 per configuration and a summary per rule (worst and median
R2, number of configurations with R2 < 0.5).

    python benchmarks/stability.py            # full grid (about 15 min on 2 cores)
    python benchmarks/stability.py --quick    # 1 epoch, small grid (smoke test)
"""

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

from sklearn_slimtrain import SlimTrainRegressor  # noqa: E402
from sklearn_slimtrain.datasets import make_oscillator, make_peaks  # noqa: E402


class MatlabRuleRegressor(SlimTrainRegressor):
    """The published MATLAB candidate window, for comparison only."""

    _ridge_rule = "matlab"


def problems():
    X, y = make_peaks(1500, random_state=0)
    yield "peaks", (X[:1000], y[:1000], X[1000:], y[1000:])
    X, y = make_oscillator(600, random_state=0)
    yield "oscillator32", (X[:400], y[:400], X[400:], y[400:])


def run(problem, data, rule, batch, memory, lr, epochs, seed=0):
    torch.set_num_threads(1)  # one process per core
    Xtr, ytr, Xva, yva = data
    cls = MatlabRuleRegressor if rule == "matlab" else SlimTrainRegressor
    change = np.inf if rule == "free" else 0.5
    model = cls(
        batch_size=batch, memory_depth=memory, learning_rate=lr, max_iter=epochs,
        ridge_max_change=change, random_state=seed,
    )
    model.fit(Xtr, ytr)
    r2 = model.score(Xva, yva)
    return problem, rule, batch, memory, lr, float(r2), float(np.median(model.ridge_path_[-50:]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on a small grid")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    epochs = 1 if args.quick else args.epochs
    rules = ["bounded", "free", "matlab"]
    batches = [32] if args.quick else [5, 32, 256]
    memories = [0, 5] if args.quick else [0, 5, 10]
    lrs = [1e-3] if args.quick else [1e-4, 1e-3, 1e-2, 1e-1]
    jobs = [
        delayed(run)(name, data, rule, b, r, lr, epochs)
        for name, data in problems()
        for rule, b, r, lr in itertools.product(rules, batches, memories, lrs)
    ]
    results = Parallel(n_jobs=args.n_jobs)(jobs)
    print(f"# stability: validation R2 after {epochs} epochs ({machine()})\n")
    print(markdown_table(
        ["problem", "rule", "batch", "memory", "lr", "val R2", "ridge (median last 50)"], results))
    summary = []
    for (name, rule), group in itertools.groupby(sorted(results, key=lambda r: (r[0], r[1])), key=lambda r: (r[0], r[1])):
        r2 = np.array([g[5] for g in group])
        summary.append((name, rule, float(r2.min()), float(np.median(r2)), int((r2 < 0.5).sum()), len(r2)))
    print("\n## summary\n")
    print(markdown_table(["problem", "rule", "worst R2", "median R2", "# R2 < 0.5", "# configs"], summary))


if __name__ == "__main__":
    main()
