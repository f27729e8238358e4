"""Stability of the sGCV ridge rule across batch size, memory depth and learning rate.

Fits SlimTrainRegressor on two problems (peaks: 1 output, 1,000 training points;
damped-oscillator surrogate: 32 outputs, 400 training points as in the issue's
probe) over batch size x memory depth x learning rate, for the sGCV step rules

* ``bounded``: global sGCV grid, cumulative ridge moves within [S/2, 1.5 S] per
  step (the default, ``ridge_max_change=0.5``);
* ``free``: global sGCV grid, jump to the minimiser every step
  (``ridge_max_change=np.inf``);
* ``matlab``: the published MATLAB rule, a local window of 60 candidates in
  [S/2, 1.5 S] around S, ties to the smallest, floor 1e-7;

and Adam on the same network (Adam also learns the final layer) as a reference, and
(without ``--no-refit``) Adam's network with slimTrain's final head solve ("adam+solve").
Prints validation R2 (mean over seeds) per configuration and a summary per rule.

    python benchmarks/stability.py                      # full grid, 1 seed
    python benchmarks/stability.py --seeds 1 2 3 --batches 5 32 --memories 0 5 --lrs 1e-3 1e-2
    python benchmarks/stability.py --quick              # 1 epoch, tiny grid (smoke test)
    python benchmarks/stability.py --problems peaks --width 8 --batches 1 --memories 0 10 100 \
        --lrs 1e-3 --rules bounded --epochs 3 --seeds 0 1  # the paper's Figure 2 case
"""

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.metrics import r2_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MatlabRuleRegressor, fit_adam, head_solve, machine, markdown_table

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
from sklearn_slimtrain.datasets import make_oscillator, make_peaks


def load(problem):
    if problem == "peaks":
        X, y = make_peaks(1500, random_state=0)
        return X[:1000], y[:1000], X[1000:], y[1000:]
    X, y = make_oscillator(600, random_state=0)
    return X[:400], y[:400], X[400:], y[400:]


def run(problem, rule, batch, memory, lr, epochs, seed, width=16, refit=True):
    torch.set_num_threads(1)  # one process per core
    Xtr, ytr, Xva, yva = load(problem)
    if rule == "adam":
        torch.manual_seed(seed)
        predict = fit_adam(Xtr, ytr, extractor=ResNetFeatures(Xtr.shape[1], width=width), lr=lr, batch_size=batch,
                           epochs=epochs, seed=seed)
        out = [(problem, rule, batch, memory, lr, seed, float(r2_score(yva, predict(Xva))), float("nan"))]
        if refit:  # the same final head solve as slimTrain's, on Adam's trained network
            solved = head_solve(predict, Xtr, ytr)
            out.append((problem, "adam+solve", batch, memory, lr, seed, float(r2_score(yva, solved(Xva))),
                        float("nan")))
        return out
    cls = MatlabRuleRegressor if rule == "matlab" else SlimTrainRegressor
    change = np.inf if rule == "free" else 0.5
    model = cls(lambda n: ResNetFeatures(n, width=width), batch_size=batch, memory_depth=memory, learning_rate=lr,
                max_iter=epochs, ridge_max_change=change, refit_head=refit, random_state=seed)
    model.fit(Xtr, ytr)
    return [(problem, rule, batch, memory, lr, seed, float(model.score(Xva, yva)), float(model._head.ridge))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on a tiny grid")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--problems", nargs="+", default=["peaks", "oscillator32"])
    parser.add_argument("--rules", nargs="+", default=["bounded", "free", "matlab", "adam"])
    parser.add_argument("--batches", type=int, nargs="+", default=[5, 32, 256])
    parser.add_argument("--memories", type=int, nargs="+", default=[0, 5, 10])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1])
    parser.add_argument("--width", type=int, default=16, help="ResNet width (paper: 8 for peaks)")
    parser.add_argument("--no-refit", action="store_true", help="score the last slimTik iterate (refit_head=False)")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.batches, args.memories, args.lrs = 1, [32], [0, 5], [1e-3]
    jobs = []
    for problem, rule, b, lr, seed in itertools.product(args.problems, args.rules, args.batches, args.lrs, args.seeds):
        for r in [0] if rule == "adam" else args.memories:  # Adam has no memory
            jobs.append(delayed(run)(problem, rule, b, r, lr, args.epochs, seed, args.width, not args.no_refit))
    results = [row for rows in Parallel(n_jobs=args.n_jobs)(jobs) for row in rows]

    groups = defaultdict(list)
    for problem, rule, b, r, lr, seed, r2, ridge in results:
        groups[(problem, rule, b, r, lr)].append((r2, ridge))
    rows = [(*key, float(np.mean([g[0] for g in v])), float(np.median([g[1] for g in v])))
            for key, v in groups.items()]
    head = "last slimTik iterate" if args.no_refit else "final head solve"
    print(f"# stability: validation R2 after {args.epochs} epochs ({head}), mean over seeds {args.seeds} "
          f"({machine()})\n")
    print(markdown_table(["problem", "rule", "batch", "memory", "lr", "val R2", "final cumulative ridge S"], rows))

    baselines = ("adam", "adam+solve")
    adam = {(p, rule, b, lr): r2 for p, rule, b, r, lr, r2, _ in rows if rule in baselines}
    summary = []
    for (problem, rule), group in itertools.groupby(sorted(rows, key=lambda r: r[:2]), key=lambda r: r[:2]):
        group = list(group)
        r2 = np.array([g[5] for g in group])
        counts = []
        for base in baselines:
            beats = [g[5] >= adam[(problem, base, g[2], g[4])] for g in group
                     if (problem, base, g[2], g[4]) in adam]
            counts.append(f"{sum(beats)}/{len(beats)}" if beats and rule not in baselines else "-")
        summary.append((problem, rule, float(r2.min()), float(np.median(r2)), float(r2.mean()), *counts, len(r2)))
    print(f"\n## summary (over configurations, each the mean over seeds {args.seeds})\n")
    print(markdown_table(["problem", "rule", "worst R2", "median R2", "mean R2", "R2 >= Adam's",
                          "R2 >= Adam + head solve's", "# configs"], summary))


if __name__ == "__main__":
    main()
