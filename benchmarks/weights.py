"""Sample weights: what they cost per epoch, and what they do to a fit with unequal noise.

1. Cost.  ``fit(X, y)`` against ``fit(X, y, sample_weight=ones)`` (the weighted code
   path, same model) on peaks, timed alternately in one run; median of the ratios.
2. Quality.  Peaks observed with two noise levels: standard deviation 0.05 where
   ``x_1 <= 0`` and 1.5 where ``x_1 > 0`` (two instruments, or two simulators of
   different fidelity).  Each model is fitted without weights and with the
   inverse-variance weights ``1 / sigma_i^2`` (a ratio of 900), and scored by R2
   against the noiseless function on held-out points: everywhere, on the precise
   half and on the noisy half.  SlimTrainRegressor (default; learning rate 1e-2;
   more rows per head solve through memory or larger batches) beside MLPRegressor
   (default, 4x the epochs), three seeds.

    python benchmarks/weights.py            # about 3 minutes
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


def cost(n, epochs, repeats):
    """Median (and range) of the epoch-time ratio weighted / unweighted, timed alternately."""
    X, y = make_peaks(n, random_state=0)
    ones = np.ones(n)
    SlimTrainRegressor(max_iter=1, refit_head=False).fit(X, y, sample_weight=ones)  # warm-up: first-call costs
    ratios = []
    for r in range(repeats):
        times = []
        for weights in (None, ones):
            model = SlimTrainRegressor(max_iter=epochs, refit_head=False, random_state=r)
            start = time.perf_counter()
            model.fit(X, y, sample_weight=weights)
            times.append(time.perf_counter() - start)
        ratios.append(times[1] / times[0])
    return statistics.median(ratios), min(ratios), max(ratios)


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
MODELS = {
    **{label: (lambda s, epochs, p=params: SlimTrainRegressor(max_iter=epochs, random_state=s, **p))
       for label, params in SLIM.items()},
    "MLPRegressor()": lambda s, epochs: MLPRegressor(max_iter=4 * epochs, random_state=s),
}


def quality(n, n_test, epochs, seeds):
    X_test, f_test = make_peaks(n_test, random_state=1000)
    precise = X_test[:, 0] <= 0
    rows = []
    for name, make in MODELS.items():
        for weighted in (False, True):
            scores = []
            for seed in seeds:
                X, y, w = unequal_noise(n, seed)
                model = make(seed, epochs).fit(X, y, sample_weight=w if weighted else None)
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
        timing = dict(n=2000, epochs=5, repeats=7)
    start = time.perf_counter()
    print(f"*weights ({machine()})*\n")
    print(f"## cost: epoch time with sample_weight=ones / without (peaks, {timing['n']} rows, "
          f"{timing['epochs']} epochs, {timing['repeats']} alternating pairs)\n")
    med, lo, hi = cost(**timing)
    print(markdown_table(["median ratio", "range"], [[f"{med:.3f}", f"{lo:.3f}-{hi:.3f}"]]))
    print(f"\n## quality: test R2 against the noiseless function, mean (worst) over seeds {seeds}; "
          f"noise sd 0.05 where x1 <= 0, 1.5 where x1 > 0; {sizes['n']} training rows\n")
    rows = quality(sizes["n"], sizes["n_test"], sizes["epochs"], seeds)
    print(markdown_table(["model", "weights", "R2 everywhere", "R2 precise half", "R2 noisy half"], rows))
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
