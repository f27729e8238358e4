"""Held-out R2 of the default SlimTrainRegressor against the number of epochs (peaks demo split).

Chooses ``max_iter``: separate fits with ``max_iter`` in the list, with and without the
final head solve, two seeds.

    python benchmarks/epochs.py [--epochs 5 10 20 30 50 100] [--seeds 0 1]
"""

import argparse
import sys
import time
from pathlib import Path

from joblib import Parallel, delayed
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table

from sklearn_slimtrain import SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks


def run(epochs, seed, refit):
    import torch

    torch.set_num_threads(1)
    X, y = make_peaks(2000, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=500, random_state=0)
    start = time.perf_counter()
    model = SlimTrainRegressor(max_iter=epochs, refit_head=refit, random_state=seed).fit(X_train, y_train)
    return epochs, seed, refit, model.score(X_test, y_test), time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 20, 30, 50, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    jobs = [delayed(run)(e, s, r) for e in args.epochs for s in args.seeds for r in (True, False)]
    results = Parallel(n_jobs=args.n_jobs)(jobs)
    rows = []
    for e in args.epochs:
        row = [e]
        for r in (True, False):
            row += [f"{res[3]:.4f}" for res in results if res[0] == e and res[2] == r]
        rows.append(row)
    header = ["epochs"] + [f"refit, seed {s}" for s in args.seeds] + [f"last iterate, seed {s}" for s in args.seeds]
    print(f"# peaks demo split: held-out R2 against max_iter ({machine()})\n")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
