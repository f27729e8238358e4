"""Sample weights: what they cost in a fit, and what they do to a fit with unequal noise.

1. Cost.  ``fit(X, y)`` against ``fit(X, y, sample_weight=ones)`` (the weighted code
   path, same model) on peaks, timed in pairs in one run, the order alternating
   within the pairs (unweighted first in even pairs, weighted first in odd ones);
   median of the ratios, by the wall clock and by the process's CPU time
   (``time.process_time``, which other processes on a shared machine disturb far
   less; one torch thread).  Two timings of whole fits (initialisation included):
   the default model (``refit_head=True``: the epochs plus the final head solve on
   all rows, what a user pays) and the epochs alone (``refit_head=False``: the
   final solve excluded).
2. Quality.  Peaks observed with two noise levels: standard deviation 0.05 where
   ``x_1 <= 0`` and 1.5 where ``x_1 > 0`` (two instruments, or two simulators of
   different fidelity).  Each model is fitted without weights and with the
   inverse-variance weights ``1 / sigma_i^2`` (a ratio of 900), and scored by R2
   against the noiseless function on held-out points: everywhere, on the precise
   half and on the noisy half.  SlimTrainRegressor (default; learning rate 1e-2;
   more rows per head solve through memory or larger batches) beside MLPRegressor
   (defaults except ``max_iter``: 4x slimTrain's epochs, 160), three seeds.

    python benchmarks/weights.py            # about 7 min on a busy 2-core machine
    python benchmarks/weights.py --quick    # smoke run
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPRegressor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks


def cost(n, epochs, repeats, refit_head):
    """Median (and range) of the fit-time ratios weighted / unweighted over ``repeats`` pairs, wall and CPU.

    The order alternates within the pairs: unweighted first in even pairs, weighted
    first in odd ones, so a drift of the machine's speed does not favour one side.
    """
    X, y = make_peaks(n, random_state=0)
    ones = np.ones(n)
    for weights in (None, ones):  # warm-up: first-call costs of both paths
        SlimTrainRegressor(max_iter=1, refit_head=refit_head).fit(X, y, sample_weight=weights)
    ratios = {"wall": [], "CPU": []}
    for r in range(repeats):
        times = {}
        for weighted in ((False, True) if r % 2 == 0 else (True, False)):
            model = SlimTrainRegressor(max_iter=epochs, refit_head=refit_head, random_state=r)
            start, cpu = time.perf_counter(), time.process_time()
            model.fit(X, y, sample_weight=ones if weighted else None)
            times[weighted] = (time.perf_counter() - start, time.process_time() - cpu)
        ratios["wall"].append(times[True][0] / times[False][0])
        ratios["CPU"].append(times[True][1] / times[False][1])
    return {clock: (statistics.median(v), min(v), max(v)) for clock, v in ratios.items()}


def unequal_noise(n, seed):
    X, f = make_peaks(n, random_state=seed)
    sigma = np.where(X[:, 0] > 0, 1.5, 0.05)
    y = f + sigma * np.random.default_rng(seed).standard_normal(n)
    return X, y, 1.0 / sigma**2


SLIM = {  # label: parameters of SlimTrainRegressor
    "SlimTrainRegressor()": {},
    "SlimTrainRegressor(batch_size=128)": {"batch_size": 128},
    "SlimTrainRegressor(learning_rate=1e-2)": {"learning_rate": 1e-2},
    "SlimTrainRegressor(learning_rate=1e-2, memory_depth=5)": {"learning_rate": 1e-2, "memory_depth": 5},
    "SlimTrainRegressor(learning_rate=1e-2, batch_size=128)": {"learning_rate": 1e-2, "batch_size": 128},
}
def models(epochs):
    """Label -> ``make(seed)``; MLPRegressor gets 4x the epochs (its label says how many)."""
    out = {label: (lambda s, p=params: SlimTrainRegressor(max_iter=epochs, random_state=s, **p))
           for label, params in SLIM.items()}
    out[f"MLPRegressor(max_iter={4 * epochs})"] = lambda s: MLPRegressor(max_iter=4 * epochs, random_state=s)
    return out


def quality(n, n_test, epochs, seeds):
    X_test, f_test = make_peaks(n_test, random_state=1000)
    precise = X_test[:, 0] <= 0
    rows = []
    for name, make in models(epochs).items():
        for weighted in (False, True):
            scores = []
            for seed in seeds:
                X, y, w = unequal_noise(n, seed)
                model = make(seed).fit(X, y, sample_weight=w if weighted else None)
                pred = model.predict(X_test)
                scores.append([r2_score(f_test[m], pred[m]) for m in (slice(None), precise, ~precise)])
            scores = np.array(scores)
            rows.append([name, "1/sigma^2" if weighted else "none",
                         *(f"{scores[:, j].mean():.4f} ({scores[:, j].min():.4f})" for j in range(3))])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)  # fixed epoch budgets on purpose
    if args.quick:
        sizes, seeds = dict(n=200, n_test=200, epochs=2), [0]
        timing = dict(n=200, epochs=1, repeats=1)
    else:
        sizes, seeds = dict(n=1500, n_test=2000, epochs=40), [0, 1, 2]
        timing = dict(n=2000, epochs=5, repeats=10)
    start = time.perf_counter()
    print(f"*weights ({machine()})*\n")
    print(f"## cost: fit time with sample_weight=ones / without (peaks, {timing['n']} rows, "
          f"{timing['epochs']} epochs, {timing['repeats']} pairs, order alternating within the pairs)\n")
    rows = []
    for refit, what in ((True, "default fit: epochs + final head solve (refit_head=True)"),
                        (False, "epochs only: final solve excluded (refit_head=False)")):
        for clock, (med, lo, hi) in cost(**timing, refit_head=refit).items():
            rows.append([what, clock, f"{med:.3f}", f"{lo:.3f}-{hi:.3f}"])
    print(markdown_table(["timed", "clock", "median ratio", "range"], rows))
    print(f"\n## quality: test R2 against the noiseless function, mean (worst) over seeds {seeds}; "
          f"noise sd 0.05 where x1 <= 0, 1.5 where x1 > 0; {sizes['n']} training rows\n")
    rows = quality(sizes["n"], sizes["n_test"], sizes["epochs"], seeds)
    print(markdown_table(["model", "weights", "R2 everywhere", "R2 precise half", "R2 noisy half"], rows))
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
