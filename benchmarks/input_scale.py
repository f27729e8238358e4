"""Input scale: what the built-in tanh ResNet does with inputs far from unit scale.

The opening layer of :class:`~sklearn_slimtrain.ResNetFeatures` keeps PyTorch's default
initialisation (weights ~ U(-1/sqrt(n), 1/sqrt(n))), so the scale of X sets how far into
the tanh the first features start: large inputs saturate the units, small ones keep them
near their linear range.  The default ``SlimTrainRegressor`` (raw targets, test R2, data
and splits of ``benchmarks/peers.py``), with its inputs standardised on the training rows
and then changed:

1. *Peaks*: multiplied by a factor (every column's root-mean-square is the factor) or
   shifted by an offset (root-mean-square ``sqrt(1 + offset**2)``).  This is the origin
   of the input-scale warning's thresholds (``COLUMN_RMS_LIMIT`` and ``PEAK_MIN`` in
   ``sklearn_slimtrain/_validation.py``).
2. *The peers suite* (the 13 problems of ``benchmarks/peers.py``) multiplied by factors
   below 1, and diabetes with its columns as scikit-learn ships them (centred, each of
   root-mean-square 0.048): smaller inputs bias the network towards a linear model,
   which is what diabetes needs and what the strongly nonlinear problems cannot afford.
3. ``--search``: the choice made per data set instead.  ``GridSearchCV`` (3-fold, on
   the training rows) picks the factor among ``SEARCH_FACTORS`` for
   ``Pipeline(StandardScaler(), FunctionTransformer(times factor), SlimTrainRegressor())``
   on diabetes, Ishigami and Welch (``--problems`` for others); the table gives the
   factors chosen and the test R2 of the refitted pipeline.
4. ``--builtin``: two cheap rules the estimator could apply itself, instead of a search
   over whole fits, each picking a factor among ``SEARCH_FACTORS`` from the training rows
   alone: the leave-one-out error of a ridge head on the features of an untrained
   network (``RidgeCV``; a forward pass per factor; the default network drawn under
   ``torch.manual_seed(seed)``, the same distribution as the fit's initial weights but
   not the same draw), and the validation R2 of short
   runs (5 and 10 epochs) on 90 % of the rows scored on the other 10 % (the share
   ``validation_fraction`` holds out), about 0.6 of a default fit, and the mean R2 of
   10-epoch runs over 3 folds (``GridSearchCV``'s choice with runs of 10 epochs
   instead of 50), about 0.8 of a default fit.  Each rule's test R2 is that of the
   default fit (50 epochs, all training rows) at the factor it picked.

    python benchmarks/input_scale.py --n-jobs 2            # parts 1 and 2, about 11 min on 2 cores
    python benchmarks/input_scale.py --n-jobs 2 --search   # part 3 only, about 4 min
    python benchmarks/input_scale.py --n-jobs 2 --search --problems all   # the whole suite, about 27 min
    python benchmarks/input_scale.py --n-jobs 2 --builtin  # part 4 only, the whole suite, about 12 min
    python benchmarks/input_scale.py --quick               # smoke run (with --search / --builtin: of part 3 / 4)
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.datasets import load_diabetes
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table
from peers import DEFAULT_PROBLEMS, load

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor

PEAKS_FACTORS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
PEAKS_OFFSETS = (1.0, 3.0, 10.0, 30.0)
SUITE_FACTORS = (1.0, 0.5, 0.3)
SEARCH_FACTORS = (1.0, 0.5, 0.25)
SEARCH_PROBLEMS = ("diabetes", "ishigami", "welch")
SHORT_EPOCHS = (5, 10)  # --builtin: the short runs' lengths (the second continues the first)
FOLD_EPOCHS = 10  # --builtin: the length of the 3-fold rule's runs
RULES = ("initial features, LOO",) + tuple(f"hold-out, {e} epochs" for e in SHORT_EPOCHS) + (
    f"3-fold, {FOLD_EPOCHS} epochs",)


def times(X, factor=1.0):
    """The inputs multiplied by ``factor`` (a module-level function: the pipeline pickles)."""
    return X * factor


def _split(problem, seed, n_train, standardise=True):
    """A job's ``(Xtr, Xte, ytr, yte)`` (test: half of ``n_train``), the inputs standardised on the training rows."""
    torch.set_num_threads(1)  # one job per core
    Xtr, Xte, ytr, yte = load(problem, seed, n_train, n_train // 2)
    if standardise:
        scaler = StandardScaler().fit(Xtr)
        Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
    return Xtr, Xte, ytr, yte


def search(problem, seed, epochs, n_train, factors):
    """``(problem, seed, chosen factor, test R2)`` of a 3-fold ``GridSearchCV`` over the input factor."""
    Xtr, Xte, ytr, yte = _split(problem, seed, n_train, standardise=False)  # the pipeline standardises
    pipe = Pipeline([("scale", StandardScaler()), ("factor", FunctionTransformer(times)),
                     ("model", SlimTrainRegressor(max_iter=epochs, random_state=seed))])
    grid = GridSearchCV(pipe, {"factor__kw_args": [{"factor": f} for f in factors]}, cv=3)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid.fit(Xtr, ytr)
    return problem, seed, grid.best_params_["factor__kw_args"]["factor"], float(grid.score(Xte, yte))


def main_search(args):
    start = time.perf_counter()
    problems = args.problems or list(SEARCH_PROBLEMS)
    results = Parallel(n_jobs=args.n_jobs)(
        delayed(search)(p, s, args.epochs, args.n_train, SEARCH_FACTORS) for p in problems for s in args.seeds)
    print(f"# input scale chosen by GridSearchCV (3-fold on the training rows, factors {list(SEARCH_FACTORS)}), "
          f"max_iter={args.epochs}, raw targets, seeds {args.seeds} ({machine()})\n")
    rows = []
    for p in problems:
        mine = [r for r in results if r[0] == p]
        rows.append([p, ", ".join(f"{r[2]:g}" for r in mine), f"{np.mean([r[3] for r in mine]):.4f}",
                     ", ".join(f"{r[3]:.4f}" for r in mine)])
    print(markdown_table(["problem", "factor chosen, by seed", "test R2 (mean)", "test R2, by seed"], rows))
    print(f"\nwall time {time.perf_counter() - start:.0f} s with --n-jobs {args.n_jobs}")


def builtin(problem, seed, epochs, n_train, factors):
    """``(problem, seed, {rule: chosen factor}, {factor: test R2 of the default fit})`` (part 4)."""
    Xtr, Xte, ytr, yte = _split(problem, seed, n_train)
    chosen, loo, held, folds = {}, [], {e: [] for e in SHORT_EPOCHS}, []
    torch.manual_seed(seed)
    initial = ResNetFeatures(Xtr.shape[1]).double()  # an untrained default network (not the fits' own draw)
    Xa, Xb, ya, yb = train_test_split(Xtr, ytr, test_size=0.1, random_state=seed)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short runs
        for f in factors:
            with torch.no_grad():
                Z = initial(torch.as_tensor(Xtr * f)).numpy()
            loo.append(-RidgeCV(alphas=np.logspace(-10, 4, 57)).fit(Z, ytr).best_score_)  # LOO mean squared error
            short = SlimTrainRegressor(max_iter=SHORT_EPOCHS[0], random_state=seed, warm_start=True)
            done = 0
            for e in SHORT_EPOCHS:  # one run, scored after each length: warm starts continue it
                short.set_params(max_iter=e - done).fit(Xa * f, ya)
                held[e].append(short.score(Xb * f, yb))
                done = e
            folds.append(np.mean([
                SlimTrainRegressor(max_iter=FOLD_EPOCHS, random_state=seed).fit(Xtr[a] * f, ytr[a]).score(Xtr[b] * f, ytr[b])
                for a, b in KFold(3, shuffle=True, random_state=seed).split(Xtr)]))
        chosen[RULES[0]] = factors[int(np.argmin(loo))]
        for rule, e in zip(RULES[1:], SHORT_EPOCHS):
            chosen[rule] = factors[int(np.argmax(held[e]))]
        chosen[RULES[-1]] = factors[int(np.argmax(folds))]
        test = {f: float(SlimTrainRegressor(max_iter=epochs, random_state=seed).fit(Xtr * f, ytr).score(Xte * f, yte))
                for f in factors}
    return problem, seed, chosen, test


def main_builtin(args):
    start = time.perf_counter()
    problems = args.problems or DEFAULT_PROBLEMS
    results = Parallel(n_jobs=args.n_jobs)(
        delayed(builtin)(p, s, args.epochs, args.n_train, SEARCH_FACTORS) for p in problems for s in args.seeds)
    print(f"# input scale chosen by cheap rules from the training rows (factors {list(SEARCH_FACTORS)}), "
          f"test R2 of the default fit (max_iter={args.epochs}) at the factor chosen, raw targets, "
          f"seeds {args.seeds} ({machine()})\n")
    rows = []
    for p in problems:
        mine = [r for r in results if r[0] == p]
        row = [p, f"{np.mean([r[3][1.0] for r in mine]):.4f}"]
        for rule in RULES:
            picks = [r[2][rule] for r in mine]
            row += [", ".join(f"{f:g}" for f in picks), f"{np.mean([r[3][f] for r, f in zip(mine, picks)]):.4f}"]
        row.append(f"{np.mean([max(r[3].values()) for r in mine]):.4f}")
        rows.append(row)
    header = ["problem", "factor 1 (default)"]
    for rule in RULES:
        header += [f"{rule}: factor by seed", "test R2"]
    print(markdown_table(header + ["best factor per seed, on the test rows"], rows))
    print(f"\nwall time {time.perf_counter() - start:.0f} s with --n-jobs {args.n_jobs}")


def run(problem, kind, value, seed, epochs, n_train):
    """``(problem, kind, value, seed, largest column RMS, test R2)`` of one default fit.

    ``kind``: "factor" (standardised times ``value``), "offset" (standardised plus
    ``value``) or "as shipped" (the columns as loaded).
    """
    Xtr, Xte, ytr, yte = _split(problem, seed, n_train, standardise=kind != "as shipped")
    if kind != "as shipped":
        Xtr, Xte = (Xtr * value, Xte * value) if kind == "factor" else (Xtr + value, Xte + value)
    model = SlimTrainRegressor(max_iter=epochs, random_state=seed)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the input-scale warning itself, and ConvergenceWarning
        model.fit(Xtr, ytr)
    rms = float(np.sqrt((Xtr ** 2).mean(axis=0)).max())
    return problem, kind, value, seed, rms, float(model.score(Xte, yte))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=50, help="max_iter of every fit (50, the default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--problems", nargs="+", default=None, choices=DEFAULT_PROBLEMS + ["all"],
                        help=f"problems of part 2 (default: all 13) or of --search (default: {', '.join(SEARCH_PROBLEMS)})")
    parser.add_argument("--n-train", type=int, default=2000, help="training rows of a formula problem (test: half)")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--search", action="store_true", help="part 3 only: the factor chosen by GridSearchCV")
    parser.add_argument("--builtin", action="store_true", help="part 4 only: the factor chosen by cheap rules")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, seed 0, 200 rows, 2 problems")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in each job (the header names it)
    if args.problems is not None and "all" in args.problems:
        args.problems = DEFAULT_PROBLEMS
    if args.quick:
        args.epochs, args.seeds, args.n_train = 1, [0], 200
        args.problems = ["diabetes", "ishigami"] if args.search or args.builtin else ["peaks", "diabetes"]
    if args.search:
        return main_search(args)
    if args.builtin:
        return main_builtin(args)
    args.problems = args.problems or DEFAULT_PROBLEMS
    peaks = [("peaks", "factor", f) for f in PEAKS_FACTORS] + [("peaks", "offset", o) for o in PEAKS_OFFSETS]
    suite = [(p, "factor", f) for p in args.problems for f in SUITE_FACTORS if (p, "factor", f) not in peaks]
    suite += [("diabetes", "as shipped", None)] if "diabetes" in args.problems else []
    start = time.perf_counter()
    results = Parallel(n_jobs=args.n_jobs)(
        delayed(run)(p, k, v, s, args.epochs, args.n_train) for p, k, v in peaks + suite for s in args.seeds)
    scores, rms = {}, {}
    for p, k, v, _, r, score in results:
        scores.setdefault((p, k, v), []).append(score)
        rms[p, k, v] = r

    def cell(case):
        return f"{np.mean(scores[case]):.4f}"

    print(f"# input scale: test R2 of the default SlimTrainRegressor (max_iter={args.epochs}), raw targets, "
          f"mean over seeds {args.seeds} ({machine()})\n")
    print("## 1. peaks, standardised inputs multiplied or shifted\n")
    rows = [[f"x {v:g}" if k == "factor" else f"+ {v:g}", f"{rms[p, k, v]:.3g}", cell((p, k, v)),
             f"{min(scores[p, k, v]):.4f}-{max(scores[p, k, v]):.4f}"] for p, k, v in peaks]
    print(markdown_table(["standardised inputs", "largest column RMS", "test R2", "range over seeds"], rows))
    print("\n## 2. the peers suite, standardised inputs multiplied by a factor\n")
    shipped = ("diabetes", "as shipped", None)
    shipped_rms = np.sqrt((load_diabetes().data ** 2).mean(axis=0)).max()  # over all 442 rows
    header = ["problem"] + [f"x {f:g}" for f in SUITE_FACTORS] + (
        [f"as shipped (RMS {shipped_rms:.2g})"] if shipped in rms else [])
    rows = []
    for p in args.problems:
        row = [p] + [cell((p, "factor", f)) for f in SUITE_FACTORS]
        if "diabetes" in args.problems:
            row.append(cell(shipped) if p == "diabetes" else "")
        rows.append(row)
    print(markdown_table(header, rows))
    print(f"\nwall time {time.perf_counter() - start:.0f} s with --n-jobs {args.n_jobs}")


if __name__ == "__main__":
    main()
