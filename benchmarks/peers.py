"""Peers: default SlimTrainRegressor vs MLPRegressor, skorch (Adam, same ResNet) and RidgeCV.

Every model sits in ``make_pipeline(StandardScaler(), model)`` and is fitted on the
raw (unscaled) targets with its default hyper-parameters, as a new user would:

* ``SlimTrainRegressor(random_state=s)``: tanh ResNet width 16 depth 8, Adam lr 1e-3,
  batch 32, 50 epochs, sGCV head, final head solve (``refit_head=True``);
* ``MLPRegressor(random_state=s)``: one hidden layer of 100 ReLU units, Adam lr 1e-3,
  batch 200, up to 200 epochs;
* skorch ``NeuralNetRegressor`` on the same network (``ResNetFeatures`` followed by a
  trainable ``nn.Linear(16, 1)``), Adam at its default lr 1e-3, batch 32 and 50 epochs
  (SlimTrainRegressor's defaults, not skorch's SGD / lr 0.01 / batch 128 / 10 epochs),
  ``train_split=None`` (skorch holds out 20% for validation by default; SlimTrain and the
  others train on all rows), ``iterator_train__shuffle=True`` (as SlimTrain; skorch's
  DataLoader does not shuffle by default), MSE loss, ``torch.manual_seed(s)`` before the
  fit.  skorch needs float32 inputs and 2-D float32 targets, so it is given
  ``X.astype(float32)`` (StandardScaler keeps float32) and ``y.reshape(-1, 1).astype(float32)``,
  as skorch's documentation tells its users; its predictions are raveled back;
* ``RidgeCV()``: linear, alphas (0.1, 1, 10), efficient leave-one-out.

Problems: the formula functions of ``benchmarks/_functions.py`` (VLSE), MATLAB's peaks,
and scikit-learn's shipped ``load_diabetes``.  A formula problem draws 2,000 training and
1,000 test points (the slimTrain paper's peaks driver trains on 2,000) from its input
distribution with ``random_state=seed``, so every seed has its own sample; diabetes
uses its 442 rows with one fixed split, 300 train / 142 test (``train_test_split(...,
random_state=0)``), and the seed only changes the models' initialisation and shuffling.

``--scale-targets`` wraps every pipeline in ``TransformedTargetRegressor`` with a
``StandardScaler`` on the targets, the variant a user who knows that networks want
scaled targets would run.

Reported: test R2 and fit time (wall clock of ``pipeline.fit`` after an untimed one-epoch
warm-up fit of the same model on 64 rows, one torch/BLAS thread per job) averaged over the seeds
(sample standard deviation); the best mean R2 of each row is in bold, and the last
column is SlimTrainRegressor's gap to the best.  A second table, early convergence,
gives test R2 after 5 and 10 epochs of SlimTrainRegressor (``max_iter`` 5 or 10, with
and without the final head solve) against Adam on the same network (``_common.fit_adam``:
same lr 1e-3, batch 32, shuffling, loss), and Adam's network with slimTrain's final head
solve in place of its learned head (``_common.head_solve``), all on standardised inputs
and raw targets.

    python benchmarks/peers.py --n-jobs 2                 # docs/bench_peers.md (3 seeds)
    python benchmarks/peers.py --n-jobs 2 --scale-targets --early-problems   # standardised targets
    python benchmarks/peers.py --problems peaks diabetes --seeds 0
    python benchmarks/peers.py --quick                    # 2 epochs, tiny n (smoke test)
    python benchmarks/peers.py --n-jobs 2 --models SlimTrainRegressor "SlimTrainRegressor(pass_inputs)" \
        RidgeCV --early-problems                          # the built-in network's pass_inputs option
"""

import argparse
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit_adam, head_solve, machine, markdown_table
from _functions import PROBLEMS, make_problem

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor

try:
    import skorch  # noqa: F401

    HAVE_SKORCH = True
except ImportError:  # the `bench` extra is not installed
    HAVE_SKORCH = False

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "docs" / "figures" / "peers_r2.png"

# Default suite: the 11 VLSE functions of _functions.py, peaks, and diabetes.
FORMULAS = ["borehole", "otl_circuit", "piston", "wing_weight", "robot_arm", "friedman", "ishigami", "welch",
            "sobol_g", "franke", "hartmann6", "peaks"]
DEFAULT_PROBLEMS = FORMULAS + ["diabetes"]
N_TRAIN, N_TEST = 2000, 1000  # formula problems; 2,000 = the slimTrain paper's peaks training set
DIABETES_TEST = 142  # 442 rows -> 300 train / 142 test, split once with random_state=0
EARLY_PROBLEMS = ["peaks", "borehole", "ishigami", "hartmann6"]
EARLY_EPOCHS = [5, 10]  # the probe: R2 after 5 and 10 epochs
DEFAULT_EPOCHS, DEFAULT_BATCH, DEFAULT_LR = 50, 32, 1e-3  # SlimTrainRegressor's defaults (max_iter, batch, lr)
GOAL = 0.005  # the goal: best, or within 0.005 R2 of the best
MODELS = ["SlimTrainRegressor", "MLPRegressor", "skorch (Adam, same net)", "RidgeCV"]
# Not in the default table (not a default model): the built-in network with its inputs passed
# to the head as well (ResNetFeatures(pass_inputs=True)); ask for it with --models.
PASS_INPUTS = "SlimTrainRegressor(pass_inputs)"


class ResNetRegressor(nn.Module):
    """SlimTrainRegressor's default network as one module: ``ResNetFeatures`` then a linear layer."""

    def __init__(self, n_features_in, width=16, depth=8):  # ResNetFeatures's defaults
        super().__init__()
        self.features = ResNetFeatures(n_features_in, width=width, depth=depth)
        self.head = nn.Linear(width, 1)

    def forward(self, X):
        return self.head(self.features(X))


def load(problem, seed, n_train=N_TRAIN, n_test=N_TEST):
    """Train and test split of ``problem`` (see the module docstring)."""
    if problem == "diabetes":
        X, y = load_diabetes(return_X_y=True)
        return train_test_split(X, y, test_size=DIABETES_TEST, random_state=0)
    X, y = make_problem(problem, n_train + n_test, random_state=seed)
    return X[:n_train], X[n_train:], y[:n_train], y[n_train:]


def make_model(name, seed, n_features, epochs=None, scale_targets=False):
    """The pipeline of model ``name``; ``epochs`` None keeps each model's default.

    ``scale_targets`` wraps the pipeline in ``TransformedTargetRegressor`` with a
    ``StandardScaler`` on the targets (what a user who knows networks want scaled
    targets would add).
    """
    pipe = _pipeline(name, seed, n_features, epochs)
    if scale_targets:
        return TransformedTargetRegressor(regressor=pipe, transformer=StandardScaler())
    return pipe


def _pipeline(name, seed, n_features, epochs):
    extra = {} if epochs is None else {"max_iter": epochs}
    if name in ("SlimTrainRegressor", PASS_INPUTS):
        extractor = ResNetFeatures(pass_inputs=True) if name == PASS_INPUTS else None
        model = SlimTrainRegressor(extractor, random_state=seed, **extra)
    elif name == "MLPRegressor":
        model = MLPRegressor(random_state=seed, **extra)
    elif name == "RidgeCV":
        model = RidgeCV()
    else:
        from skorch import NeuralNetRegressor

        model = NeuralNetRegressor(
            ResNetRegressor, module__n_features_in=n_features, optimizer=torch.optim.Adam, lr=DEFAULT_LR,
            max_epochs=DEFAULT_EPOCHS if epochs is None else epochs, batch_size=DEFAULT_BATCH, train_split=None,
            iterator_train__shuffle=True, verbose=0,
        )
    return make_pipeline(StandardScaler(), model)


def warm_up(name, scale_targets):
    """Fit ``name`` once on 64 rows for one epoch, untimed, before every timed fit: the first
    torch fit of a process pays about 2 s of one-off lazy imports and initialisation, which
    would land on whichever job came first.  (Per job, not per process: joblib ships this
    module's globals with each job, so a per-process cache would not persist.)"""
    X, y = np.random.default_rng(0).normal(size=(2, 64, 3))
    y = y[:, 0]
    skorch_model = name.startswith("skorch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_model(name, 0, 3, 1, scale_targets).fit(
            X.astype(np.float32) if skorch_model else X,
            y.reshape(-1, 1).astype(np.float32) if skorch_model else y)


def run(problem, name, seed, epochs=None, n_train=N_TRAIN, n_test=N_TEST, scale_targets=False):
    """Fit one model on one problem; returns (problem, model, seed, test R2, fit seconds, warned)."""
    torch.set_num_threads(1)  # one job per core
    Xtr, Xte, ytr, yte = load(problem, seed, n_train, n_test)
    warm_up(name, scale_targets)
    pipe = make_model(name, seed, Xtr.shape[1], epochs, scale_targets)
    skorch_model = name.startswith("skorch")
    if skorch_model:  # skorch wants float32 X and 2-D float32 y
        Xtr, Xte, ytr_fit = Xtr.astype(np.float32), Xte.astype(np.float32), ytr.reshape(-1, 1).astype(np.float32)
        torch.manual_seed(seed)
    else:
        ytr_fit = ytr
    with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        pipe.fit(Xtr, ytr_fit)
        seconds = time.perf_counter() - start
        pred = np.asarray(pipe.predict(Xte), dtype=np.float64).ravel()
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return problem, name, seed, float(r2_score(yte, pred)), seconds, warned


def run_early(problem, seed, epochs_list, n_train=N_TRAIN, n_test=N_TEST, scale_targets=False):
    """R2 after each of ``epochs_list`` epochs: slimTrain (refit head or not) and Adam on the same network.

    ``scale_targets`` standardises the targets with the training rows' mean and standard
    deviation for every model (test targets too: R2 is the same in either unit).
    """
    torch.set_num_threads(1)
    Xtr, Xte, ytr, yte = load(problem, seed, n_train, n_test)
    if scale_targets:
        mean, sd = ytr.mean(), ytr.std()
        ytr, yte = (ytr - mean) / sd, (yte - mean) / sd
    out = []
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epochs in epochs_list:
            for refit in (True, False):
                pipe = make_pipeline(StandardScaler(), SlimTrainRegressor(max_iter=epochs, refit_head=refit,
                                                                          random_state=seed))
                pipe.fit(Xtr, ytr)
                out.append((problem, epochs, f"slimTrain refit_head={refit}", seed, float(pipe.score(Xte, yte))))
        scaler = StandardScaler().fit(Xtr)
        Xtr_s, Xte_s = scaler.transform(Xtr), scaler.transform(Xte)
        torch.manual_seed(seed)
        extractor = ResNetFeatures(Xtr.shape[1])

        def callback(epoch, predict):
            if epoch in epochs_list:
                out.append((problem, epoch, "Adam (same net)", seed, float(r2_score(yte, predict(Xte_s)))))
                solved = head_solve(predict, Xtr_s, ytr)  # slimTrain's final head solve on Adam's network
                out.append((problem, epoch, "Adam + head solve", seed, float(r2_score(yte, solved(Xte_s)))))

        fit_adam(Xtr_s, ytr, extractor=extractor, lr=DEFAULT_LR, batch_size=DEFAULT_BATCH, epochs=max(epochs_list),
                 seed=seed, callback=callback)
    return out


def write_figure(path, problems, models, r2, targets="raw targets"):
    """Grouped bars of mean test R2 per problem and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = -0.2  # bars below are clipped and labelled with their value
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(problems) + 2), 4.2))
    width = 0.8 / len(models)
    x = np.arange(len(problems))
    for k, model in enumerate(models):
        values = np.array([r2[(p, model)] for p in problems])
        bars = ax.bar(x + (k - (len(models) - 1) / 2) * width, np.maximum(values, floor), width, label=model)
        for bar, v in zip(bars, values):
            if v < floor:
                ax.annotate(f"{v:.2g}", (bar.get_x() + bar.get_width() / 2, floor), ha="center", va="bottom",
                            fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, problems, rotation=30, ha="right")
    ax.set_ylim(floor, 1.02)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("test R2 (mean over seeds)")
    ax.legend(fontsize=8, ncol=len(models), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.suptitle(f"Default models in Pipeline(StandardScaler(), model), {targets}: test R2", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="peaks only, 2 epochs, 200/100 rows, seed 0 (smoke test)")
    parser.add_argument("--problems", nargs="+", default=DEFAULT_PROBLEMS,
                        choices=sorted(PROBLEMS) + ["diabetes"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every network (default: each model's default; skorch 50)")
    parser.add_argument("--early-problems", nargs="*", default=EARLY_PROBLEMS, choices=sorted(PROBLEMS))
    parser.add_argument("--early-epochs", type=int, nargs="+", default=EARLY_EPOCHS)
    parser.add_argument("--figure", type=Path, default=None,
                        help=f"write the R2 figure here (default: {FIGURE.relative_to(ROOT)} unless --quick)")
    parser.add_argument("--scale-targets", action="store_true",
                        help="wrap every model in TransformedTargetRegressor(transformer=StandardScaler())")
    parser.add_argument("--models", nargs="+", default=None, choices=MODELS + [PASS_INPUTS],
                        help="models of the R2 table (default: the four defaults; the figure is then written "
                             "only with --figure)")
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args(argv)
    n_train, n_test = N_TRAIN, N_TEST
    if args.quick:
        args.problems, args.seeds, args.epochs = ["peaks"], [0], 2
        args.early_problems, args.early_epochs, n_train, n_test = ["peaks"], [1, 2], 200, 100
    default_figure = FIGURE.with_name("peers_r2_scaled_targets.png") if args.scale_targets else FIGURE
    chosen = args.models is not None and args.models != MODELS
    figure = args.figure if args.figure is not None else (None if args.quick or chosen else default_figure)
    models = list(MODELS if args.models is None else dict.fromkeys(args.models))
    slim_models = [m for m in models if m.startswith("SlimTrainRegressor")]
    if not HAVE_SKORCH and "skorch (Adam, same net)" in models:
        print("skorch is not installed (pip install 'sklearn-slimtrain[bench]'): the skorch column is skipped.\n")
        models.remove("skorch (Adam, same net)")
    torch.set_num_threads(1)  # what every job uses; shown in the header

    jobs = [delayed(run)(p, m, s, args.epochs, n_train, n_test, args.scale_targets)
            for p in args.problems for s in args.seeds for m in models]
    jobs += [delayed(run_early)(p, s, args.early_epochs, n_train, n_test, args.scale_targets)
             for p in args.early_problems for s in args.seeds]
    start = time.perf_counter()
    results = Parallel(n_jobs=args.n_jobs)(jobs)
    wall = time.perf_counter() - start
    main_results = [r for r in results if isinstance(r, tuple)]
    early_results = [row for r in results if isinstance(r, list) for row in r]

    r2, sd, fit_time, warned = {}, {}, {}, defaultdict(int)
    groups = defaultdict(list)
    for problem, model, seed, score, seconds, warn in main_results:
        groups[(problem, model)].append((score, seconds))
        warned[model] += int(warn)
    for key, values in groups.items():
        r2[key] = float(np.mean([v[0] for v in values]))
        sd[key] = float(np.std([v[0] for v in values], ddof=1)) if len(values) > 1 else 0.0  # sample sd
        fit_time[key] = float(np.mean([v[1] for v in values]))

    epochs_note = "each model's default epochs" if args.epochs is None else f"{args.epochs} epochs"
    targets = "standardised targets (TransformedTargetRegressor)" if args.scale_targets else "raw targets"
    print(f"# peers: test R2 and fit time, defaults in Pipeline(StandardScaler(), model), {targets}, "
          f"{epochs_note}, mean over seeds {args.seeds} ({machine()})\n")
    rows, ok = [], defaultdict(int)
    for problem in args.problems:
        d = 10 if problem == "diabetes" else PROBLEMS[problem].n_features
        n = f"{442 - DIABETES_TEST}/{DIABETES_TEST}" if problem == "diabetes" else f"{n_train}/{n_test}"
        best = max(r2[(problem, m)] for m in models)
        cells = []
        for m in models:
            text = f"{r2[(problem, m)]:.4f} ±{sd[(problem, m)]:.4f}"
            cells.append(f"**{text}**" if r2[(problem, m)] == best else text)
        gaps = [r2[(problem, m)] - best for m in slim_models]
        for m, gap in zip(slim_models, gaps):
            ok[m] += gap >= -GOAL
        rows.append([problem, d, n, *cells, *[f"{gap:+.4f}" for gap in gaps]])
    gap_names = ["slimTrain - best" if m == "SlimTrainRegressor" else f"{m} - best" for m in slim_models]
    print("## test R2 (mean ±sample sd over seeds; best in bold)\n")
    print(markdown_table(["problem", "d", "train/test", *models, *gap_names], rows))
    print()
    for m in slim_models:
        label = "SlimTrainRegressor()" if m == "SlimTrainRegressor" else m
        print(f"{label} is the best or within {GOAL} R2 of the best on {ok[m]}/{len(args.problems)} problems.")
    for m in models:
        if warned[m]:
            print(f"{m} stopped with a ConvergenceWarning in {warned[m]}/{len(args.problems) * len(args.seeds)} fits.")

    print("\n## fit time (s, mean over seeds, one thread)\n")
    rows = [[problem, *[round(fit_time[(problem, m)], 3) for m in models]] for problem in args.problems]
    totals = [round(sum(fit_time[(p, m)] for p in args.problems), 2) for m in models]
    rows.append(["**total**", *totals])
    print(markdown_table(["problem", *models], rows))

    if early_results:
        early = defaultdict(list)
        for problem, epochs, model, seed, score in early_results:
            early[(problem, epochs, model)].append(score)
        names = ["slimTrain refit_head=True", "slimTrain refit_head=False", "Adam (same net)", "Adam + head solve"]
        rows = [[p, e, *[round(float(np.mean(early[(p, e, m)])), 4) for m in names]]
                for p in args.early_problems for e in args.early_epochs]
        print(f"\n## early convergence: test R2 after few epochs (lr {DEFAULT_LR}, batch {DEFAULT_BATCH}, "
              f"{targets}, mean over seeds {args.seeds})\n")
        print(markdown_table(["problem", "epochs", *names], rows))

    if figure is not None:
        write_figure(figure, args.problems, models, r2, targets)
        print(f"\nfigure: {figure.relative_to(ROOT) if figure.is_relative_to(ROOT) else figure}")
    print(f"\nwall time {wall:.0f} s with --n-jobs {args.n_jobs}")


if __name__ == "__main__":
    main()
