"""The paper's CDR experiment (section 4.2, Table 1, Figures 5-6) on our CDR stand-in.

Data: ``sklearn_slimtrain.datasets.make_cdr`` -- our own convection-diffusion-reaction
solver with the paper's shapes (55 reaction coefficients -> 72 observations), NOT the
paper's data set (unpublished); 800 samples split 400 / 200 / 200 (train / validation /
test) as in the paper.  Raw inputs and outputs, as the paper.

Network: the paper's ResNet, width 16, depth 8, final time 4 (Appendix B).  slimTrain is
``SlimTrainRegressor`` with the paper's algorithm (``refit_head=False``: the last slimTik
iterate is the head; the "+refit" column also shows the product's default final head
solve, and for Adam the same solve on Adam's trained network); Adam trains the same network and
a final linear layer jointly, as the paper.
Grid: learning rate {1e-3, 1e-2, 1e-1} x batch {5, 10} x memory depth {0, 5, 10}.
Loss: ``(1/N) sum_i 1/2 ||f(x_i) - y_i||^2`` on the training / validation rows.

    python benchmarks/cdr.py                 # 100 epochs, Table 1 at epoch 20 (n_jobs=2: ~10 min)
    python benchmarks/cdr.py --standardize-inputs --no-figures   # inputs through a StandardScaler
    python benchmarks/cdr.py --rule matlab --epochs 20 --no-figures  # the published MATLAB sGCV rule
    python benchmarks/cdr.py --quick         # smoke run
"""

import argparse
import copy
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from _common import MatlabRuleRegressor, fit_adam, head_solve, machine, markdown_table

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
from sklearn_slimtrain.datasets import make_cdr

FIGURES = ROOT / "docs" / "figures"
FIGURES_SUFFIX = [""]  # figure names get the target scale when it is not 1


def load(n_samples, target_scale=1.0, standardize=False):
    X, Y = make_cdr(n_samples, random_state=0)
    Y = Y * target_scale  # other units for the concentration (e.g. a 10x stronger source)
    n_train, n_val = n_samples // 2, n_samples // 4  # the paper's 400 / 200 / 200 split of 800
    if standardize:  # what a StandardScaler in a Pipeline does: training rows' mean and std
        X = (X - X[:n_train].mean(0)) / X[:n_train].std(0)
    return X[:n_train], Y[:n_train], X[n_train : n_train + n_val], Y[n_train : n_train + n_val]


def loss(pred, Y):
    return 0.5 * float(((pred - Y) ** 2).sum()) / len(Y)


def network(n_features_in=None):
    return ResNetFeatures(n_features_in, width=16, depth=8, final_time=4.0)  # Appendix B's CDR network


def saturation(extractor, X):
    """How far the trained tanh ResNet sits in tanh's flat part, on the rows ``X``.

    Returns the fraction of the opening layer's pre-activations with ``|z| > 3``
    (where ``tanh'(z) < 0.01``), the same for the residual layers, and the median over
    the 16 features of their standard deviation across the rows (a feature that no
    longer varies cannot help any head, solved or learned).
    """
    with torch.no_grad():
        z = extractor.opening(torch.tensor(X, dtype=torch.float32))
        u, h = torch.tanh(z), extractor.final_time / max(extractor.depth, 1)
        flat = []
        for layer in extractor.layers:
            zz = layer(u)
            flat.append(float((zz.abs() > 3).float().mean()))
            u = u + h * torch.tanh(zz)
        return float((z.abs() > 3).float().mean()), float(np.mean(flat)), float(u.std(0).median())


def run(method, lr, batch, memory, epochs, report_epoch, seed, n_samples, target_scale, standardize=False,
        rule="global"):
    torch.set_num_threads(1)  # one process per core
    Xtr, Ytr, Xva, Yva = load(n_samples, target_scale, standardize)
    curve = []
    if method == "adam":
        torch.manual_seed(seed)

        refit = None

        def record(epoch, predict):
            nonlocal refit
            curve.append((loss(predict(Xtr), Ytr), loss(predict(Xva), Yva)))
            if epoch == report_epoch:  # the same final head solve as slimTrain's, on Adam's network
                solved = head_solve(predict, Xtr, Ytr)
                refit = (loss(solved(Xtr), Ytr), loss(solved(Xva), Yva))

        extractor = network()
        fit_adam(Xtr, Ytr, extractor=extractor, lr=lr, batch_size=batch, epochs=epochs, seed=seed, callback=record)
        return dict(method=method, lr=lr, batch=batch, memory=memory, curve=curve, refit=refit, ridges=None,
                    saturation=saturation(extractor, Xtr))
    cls = SlimTrainRegressor if rule == "global" else MatlabRuleRegressor
    # The callable, not a module: the network is then built under the model's random_state.
    # A module built here would draw its weights from torch's global generator, whose state
    # in a joblib worker depends on the jobs that ran there before.
    model = cls(network, learning_rate=lr, batch_size=batch, memory_depth=memory, refit_head=False,
                random_state=seed)
    refit = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # partial_fit per epoch: one pass each, as an epoch of fit
        for epoch in range(1, epochs + 1):
            model.partial_fit(Xtr, Ytr)
            curve.append((loss(model.predict(Xtr), Ytr), loss(model.predict(Xva), Yva)))
            if epoch == report_epoch:  # the product's final head solve on the same extractor
                final = copy.deepcopy(model)
                final._refit_head(final._training_tensors(Xtr, Ytr, None))  # as fit: the targets centred
                refit = (loss(final.predict(Xtr), Ytr), loss(final.predict(Xva), Yva))
                ridges_at_report = model.ridge_path_.copy()
    return dict(method=method, lr=lr, batch=batch, memory=memory, curve=curve, refit=refit,
                ridges=ridges_at_report if epochs >= report_epoch else model.ridge_path_.copy(),
                saturation=saturation(model.feature_extractor_, Xtr))


def figures(results, lrs, batches, memories, report_epoch, n_train):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(batches), len(lrs), figsize=(4 * len(lrs), 3.2 * len(batches)), squeeze=False,
                             sharey=True)
    for (i, b), (j, lr) in itertools.product(enumerate(batches), enumerate(lrs)):
        ax = axes[i, j]
        for r in results:
            if r["batch"] == b and r["lr"] == lr:
                train = [c[0] for c in r["curve"]]
                style = dict(color="black", marker="o", markersize=2) if r["method"] == "adam" else {}
                label = "Adam" if r["method"] == "adam" else f"slimTrain r={r['memory']}"
                ax.plot(range(1, len(train) + 1), train, label=label, **style)
        ax.set_yscale("log")
        ax.axvline(report_epoch, color="gray", linestyle=":")
        ax.set_title(f"batch {b}, lr {lr:g}")
        ax.set_xlabel("epoch")
        if j == 0:
            ax.set_ylabel("training loss")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("CDR stand-in: training loss (paper's Figure 5 layout)")
    fig.tight_layout()
    fig.savefig(FIGURES / f"cdr_loss{FIGURES_SUFFIX[0]}.png", dpi=110)
    plt.close(fig)

    b = batches[0]
    fig, axes = plt.subplots(len(memories), len(lrs), figsize=(4 * len(lrs), 2.8 * len(memories)), squeeze=False)
    for (i, m), (j, lr) in itertools.product(enumerate(memories), enumerate(lrs)):
        ax = axes[i, j]
        r = next(r for r in results if r["method"] == "slim" and r["batch"] == b and r["lr"] == lr
                 and r["memory"] == m)
        steps = max(n_train // b, 1)  # slimTrain's steps per epoch: the remainder joins the last batch
        path = r["ridges"]
        epochs = len(path) // steps
        image = np.log10(path[: epochs * steps]).reshape(epochs, steps).T
        mesh = ax.imshow(image, aspect="auto", interpolation="nearest", extent=(0.5, epochs + 0.5, steps + 0.5, 0.5))
        fig.colorbar(mesh, ax=ax)
        ax.set_title(f"r={m}, lr {lr:g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("iteration")
    fig.suptitle(f"CDR stand-in: log10 ridge per step, batch {b} (paper's Figure 6 layout)")
    fig.tight_layout()
    fig.savefig(FIGURES / f"cdr_ridge{FIGURES_SUFFIX[0]}.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--batches", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--memories", type=int, nargs="+", default=[0, 5, 10])
    parser.add_argument("--epochs", type=int, default=100, help="length of the curves")
    parser.add_argument("--report-epoch", type=int, default=20, help="epoch of Table 1")
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-scale", type=float, default=1.0,
                        help="multiply the observations by this (other concentration units)")
    parser.add_argument("--standardize-inputs", action="store_true",
                        help="standardise the 55 inputs (training mean and std) instead of the paper's raw inputs")
    parser.add_argument("--rule", choices=["global", "matlab"], default="global",
                        help="slimTrain's sGCV candidate rule: the package's (global grid, bounded step) or the "
                             "published MATLAB window")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, small grid, no figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.lrs, args.batches, args.memories = [1e-3], [10], [0]
        args.epochs, args.report_epoch, args.samples, args.no_figures = 2, 2, 80, True
    make_cdr(args.samples, random_state=0)  # generate once in the parent (fails fast)
    jobs = [("adam", lr, b, 0) for lr, b in itertools.product(args.lrs, args.batches)]
    jobs += [("slim", lr, b, m) for lr, b, m in itertools.product(args.lrs, args.batches, args.memories)]
    results = Parallel(n_jobs=args.n_jobs)(
        delayed(run)(*job, args.epochs, args.report_epoch, args.seed, args.samples, args.target_scale,
                     args.standardize_inputs, args.rule)
        for job in jobs)
    k = args.report_epoch - 1
    print(f"# CDR stand-in benchmark ({machine()})\n")
    scale = "" if args.target_scale == 1 else f" observations x {args.target_scale:g},"
    scale += " standardised inputs," if args.standardize_inputs else ""
    scale += " slimTrain with the published MATLAB sGCV rule," if args.rule == "matlab" else ""
    print(f"make_cdr({args.samples}, random_state=0),{scale} split {args.samples // 2}/{args.samples // 4}/"
          f"{args.samples - args.samples // 2 - args.samples // 4}; ResNet w16 d8 T4; seed {args.seed}.\n")
    print(f"## Table 1: loss after {args.report_epoch} epochs (train / validation)\n")
    rows = []
    for b, r in itertools.product(args.batches, results):
        if r["batch"] != b or (r["method"] == "slim" and r["memory"] != args.memories[0]):
            continue
        name = "Adam" if r["method"] == "adam" else f"slimTrain r={r['memory']}"
        rows.append([b, name, r["lr"], r["curve"][k][0], r["curve"][k][1]]
                    + ([r["refit"][1]] if r["refit"] else ["-"]))
    print(markdown_table(["batch", "method", "lr", "train", "valid", "valid (+refit head)"], rows))
    print(f"\n## All memory depths: validation loss after {args.report_epoch} epochs\n")
    rows = []
    for b, m in itertools.product(args.batches, args.memories):
        row = [b, m]
        for lr in args.lrs:
            r = next(r for r in results if r["method"] == "slim" and (r["batch"], r["memory"], r["lr"]) == (b, m, lr))
            row.append(r["curve"][k][1])
        rows.append(row)
    print(markdown_table(["batch", "memory"] + [f"lr {lr:g}" for lr in args.lrs], rows))
    print("\n## Goals\n")
    rows = []
    for b in args.batches:
        val = {(r["method"], r["lr"]): r["curve"][k][1] for r in results
               if r["batch"] == b and (r["method"] == "adam" or r["memory"] == args.memories[0])}
        solved = {(r["method"], r["lr"]): r["refit"][1] for r in results
                  if r["batch"] == b and (r["method"] == "adam" or r["memory"] == args.memories[0])}
        slim = [val[("slim", lr)] for lr in args.lrs]
        adam = [val[("adam", lr)] for lr in args.lrs]
        lr0 = args.lrs[0]
        rows.append([b, val[("adam", lr0)] / val[("slim", lr0)], solved[("adam", lr0)] / solved[("slim", lr0)],
                     max(slim) / min(slim), max(adam) / min(adam)])
    print(markdown_table(["batch", f"Adam / slimTrain valid at lr {args.lrs[0]:g} (goal >= 30)",
                          "the same, both with the final head solve",
                          "slimTrain worst / best over lr (goal <= 3)", "Adam worst / best over lr"], rows))
    print(f"\n## Saturation of the tanh units after {args.epochs} epochs (training rows, memory "
          f"{args.memories[0]})\n")
    rows = []
    for b, lr, method in itertools.product(args.batches, args.lrs, ("adam", "slim")):
        r = next(r for r in results if (r["method"], r["batch"], r["lr"]) == (method, b, lr)
                 and (method == "adam" or r["memory"] == args.memories[0]))
        rows.append([b, lr, "Adam" if method == "adam" else "slimTrain", *r["saturation"]])
    print(markdown_table(["batch", "lr", "method", "opening layer: share of abs(z) > 3",
                          "residual layers: share of abs(z) > 3", "median feature std over rows"], rows))
    if not args.no_figures:
        if args.target_scale != 1:
            FIGURES_SUFFIX[0] = f"_x{args.target_scale:g}"
        if args.standardize_inputs:
            FIGURES_SUFFIX[0] += "_std"
        if args.rule == "matlab":
            FIGURES_SUFFIX[0] += "_matlab"
        figures(results, args.lrs, args.batches, args.memories, args.report_epoch, args.samples // 2)
        print(f"\nFigures: docs/figures/cdr_loss{FIGURES_SUFFIX[0]}.png, "
              f"docs/figures/cdr_ridge{FIGURES_SUFFIX[0]}.png")


if __name__ == "__main__":
    main()
