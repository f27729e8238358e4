"""The paper's peaks experiment (section 4.1, Figures 2-4): batch size x memory x ridge, fixed vs sGCV.

Trains SlimTrainRegressor on ``make_peaks`` (2,000 training and 1,000 validation
points, as the published driver) with the paper's peaks network (tanh ResNet,
width 8, depth 8, final time 5), Adam at learning rate 1e-3, over

* batch size in {1, 5, 10} x memory depth in {0, 5, 10} (and 100 for batch 1),
* ridge in {1, 1e-3, 1e-10}, either **fixed** (``ridge=lam``, plain slimTik) or as the
  **initial** per-step ridge of **sGCV** (``ridge="sgcv", ridge_init=lam``).

``refit_head=False`` throughout: the model is the paper's algorithm (the last slimTik
iterate of the head), without the package's final exact head solve.

Every loss is the mean squared loss of the training objective,
``(1/(2N)) sum_i (yhat_i - y_i)^2``, evaluated after each epoch on all training rows
("train loss") and on the validation rows ("val loss") with the extractor and head of
that moment.  The in-batch loss (``loss_curve_``, each batch with the head just solved on
it) is reported too; it is optimistic when a batch under-determines the head.

Prints one table per configuration (mean over seeds) and two summary tables:

(a) spread of the final loss across the three (initial) ridges, sGCV vs fixed
    (max/min ratio per batch size and memory depth);
(b) the per-step ridge sGCV selects over the last epoch, per batch size and memory
    depth, beside the number of rows ``(r+1) b`` of each step's least-squares problem
    against its ``p = 9`` unknowns (width 8 plus the bias).

and writes three figures (``--figures``, default ``docs/figures`` unless ``--quick``):
``peaks_loss_curves.png`` (Figure 2), ``peaks_ridge_heatmap.png`` (Figure 4),
``peaks_predictions.png`` (Figure 3).

    python benchmarks/peaks.py --n-jobs 2                     # the full grid (docs/bench_peaks.md)
    python benchmarks/peaks.py --epochs 20 --seeds 0 1        # longer, two seeds
    python benchmarks/peaks.py --quick [--figures /tmp/figs]  # smoke run: 4 tiny configs, 1 epoch
"""

import argparse
import functools
import itertools
import math
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
from sklearn_slimtrain.datasets import make_peaks, peaks

ROOT = Path(__file__).resolve().parents[1]

# Paper, section 4.1 and Appendix B: tanh ResNet of width 8 and depth 8, final time T = 5.
WIDTH, DEPTH, FINAL_TIME = 8, 8, 5.0
# Paper, section 4.1 / Figures 2-4: learning rate of the extractor (Adam).
LEARNING_RATE = 1e-3
# Paper, Figure 2: batch sizes, memory depths (100 only for batch 1) and the ridges
# (fixed lambda, or the initial Lambda_0 of sGCV).
BATCHES = [1, 5, 10]
MEMORIES = [0, 5, 10]
EXTRA_MEMORIES_BATCH1 = [100]
RIDGES = [1.0, 1e-3, 1e-10]
# Published driver: 2,000 training and 1,000 validation points, uniform on [-3, 3]^2.
N_TRAIN, N_VAL = 2000, 1000
# Our budget, not the paper's (50 epochs): one batch-1 epoch (2,000 steps) with sGCV costs
# ~10 s on one core of the project machine (a fixed-ridge one ~5 s), so the 60-configuration
# grid costs ~240 s of CPU per epoch; 5 epochs fit ~10 minutes on 2 free cores.
EPOCHS = 5
# Seed of the data draw (the model seeds are --seeds).
DATA_SEED = 0
# Side of the square grid on [-3, 3]^2 on which the prediction figure draws surfaces.
GRID_SIDE = 81


def load(n_train, n_val):
    X, y = make_peaks(n_train + n_val, random_state=DATA_SEED)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def half_mse(model, X, y):
    """``(1/(2N)) sum (yhat - y)^2``, the training objective's loss."""
    resid = model.predict(X) - y
    return 0.5 * float(np.mean(resid * resid))


def run(batch, memory, mode, ridge, epochs, seed, n_train, n_val, net):
    """One fit, one epoch per ``fit`` call (``warm_start``) to record the losses after each epoch."""
    torch.set_num_threads(1)  # one process per core
    Xtr, ytr, Xva, yva = load(n_train, n_val)
    model = SlimTrainRegressor(
        functools.partial(ResNetFeatures, **net),  # picklable; initialised under the model's seed
        learning_rate=LEARNING_RATE,
        batch_size=batch,
        memory_depth=memory,
        ridge="sgcv" if mode == "sgcv" else ridge,
        ridge_init=ridge,  # sGCV's Lambda_0 (ignored by a fixed ridge)
        refit_head=False,  # the paper's algorithm: predict with the last slimTik head
        max_iter=1,
        warm_start=True,
        random_state=seed,
    )
    train, val, fit_s, diverged = [], [], 0.0, False
    for _ in range(epochs):
        done = getattr(model, "n_iter_", 0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a diverged epoch is recorded below
            model.fit(Xtr, ytr)
        fit_s += time.perf_counter() - start
        if model.n_iter_ == done:  # diverged: the estimator restored the previous epoch
            diverged = True
            break
        train.append(half_mse(model, Xtr, ytr))
        val.append(half_mse(model, Xva, yva))
    steps = max(n_train // batch, 1)  # steps per epoch (the remainder rows join the last batch)
    path = model.ridge_path_
    return {
        "batch": batch,
        "memory": memory,
        "mode": mode,
        "ridge": ridge,
        "seed": seed,
        "train": train,
        "val": val,
        "inbatch": list(model.loss_curve_),
        "ridge_last": float(np.mean(path[-steps:])) if len(path) else math.nan,
        # cumulative ridge S_k = per-step ridge * samples seen / batch size (user guide, ridge_path_)
        "ridge_cum": float(model.ridge_ * model.t_ / batch),
        "fit_s": fit_s,
        "diverged": diverged,
        "model": model,
    }


def _mean(values):
    return float(np.mean(values)) if len(values) else math.nan


def _gmean(values):
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return float(np.exp(np.mean(np.log(values)))) if values else math.nan


def _lam(x):
    return f"{x:g}"


def aggregate(results):
    """Mean over seeds per configuration ``(batch, memory, mode, ridge)``."""
    groups = defaultdict(list)
    for res in results:
        groups[(res["batch"], res["memory"], res["mode"], res["ridge"])].append(res)
    agg = {}
    for key, runs in groups.items():
        n = min(len(r["train"]) for r in runs)
        agg[key] = {
            "train": np.mean([r["train"][:n] for r in runs], axis=0) if n else np.array([]),
            "val": np.mean([r["val"][:n] for r in runs], axis=0) if n else np.array([]),
            "inbatch": _mean([r["inbatch"][-1] for r in runs if r["inbatch"]]),
            "ridge_last": _mean([r["ridge_last"] for r in runs]),
            "ridge_cum": _mean([r["ridge_cum"] for r in runs]),
            "fit_s": _mean([r["fit_s"] for r in runs]),
            "diverged": sum(r["diverged"] for r in runs),
            "model": runs[0]["model"],  # first seed, for the figures
        }
    return agg


def config_table(agg, p):
    rows = []
    for (b, r, mode, lam), a in sorted(agg.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], -kv[0][3])):
        final = lambda v: float(v[-1]) if len(v) else math.nan
        best = int(np.argmin(a["val"])) + 1 if len(a["val"]) else 0
        rows.append(
            (
                b,
                r,
                f"{(r + 1) * b} / {p}",
                mode,
                _lam(lam),
                final(a["train"]),
                final(a["val"]),
                f"{float(np.min(a['val'])):.4g} (ep {best})" if best else "-",
                a["inbatch"],
                a["ridge_last"] if mode == "sgcv" else "-",
                a["ridge_cum"] if mode == "sgcv" else "-",
                a["fit_s"],
                a["diverged"],
            )
        )
    header = [
        "batch",
        "memory",
        "rows/unknowns",
        "ridge mode",
        "lambda (fixed or init)",
        "train loss",
        "val loss",
        "best val loss",
        "in-batch loss",
        "sGCV per-step ridge, last epoch",
        "sGCV cumulative S",
        "fit s",
        "diverged",
    ]
    return markdown_table(header, rows)


def spread_table(agg, pairs, ridges):
    """(a): max/min of the final loss across the ridges, sGCV vs fixed, per (batch, memory)."""
    rows, ratios = [], defaultdict(list)
    for b, r in pairs:
        row = [b, r]
        for metric in ("train", "val"):
            for mode in ("sgcv", "fixed"):
                finals = [
                    float(agg[(b, r, mode, lam)][metric][-1])
                    for lam in ridges
                    if (b, r, mode, lam) in agg and len(agg[(b, r, mode, lam)][metric])
                ]
                ratio = max(finals) / min(finals) if len(finals) >= 2 else math.nan
                ratios[(metric, mode)].append(ratio)
                row += [f"{min(finals):.3g} - {max(finals):.3g}" if finals else "-", ratio]
        rows.append(tuple(row))
    n_less = {m: sum(s < f for s, f in zip(ratios[(m, "sgcv")], ratios[(m, "fixed")])) for m in ("train", "val")}
    rows.append(
        (
            "all",
            "geo. mean",
            "",
            _gmean(ratios[("train", "sgcv")]),
            "",
            _gmean(ratios[("train", "fixed")]),
            "",
            _gmean(ratios[("val", "sgcv")]),
            "",
            _gmean(ratios[("val", "fixed")]),
        )
    )
    header = [
        "batch",
        "memory",
        "train loss range, sGCV",
        "max/min sGCV",
        "train loss range, fixed",
        "max/min fixed",
        "val loss range, sGCV",
        "max/min sGCV (val)",
        "val loss range, fixed",
        "max/min fixed (val)",
    ]
    verdict = (
        f"sGCV spread smaller than fixed in {n_less['train']}/{len(pairs)} (batch, memory) cells for the train "
        f"loss and {n_less['val']}/{len(pairs)} for the val loss."
    )
    return markdown_table(header, rows), verdict


def ridge_table(agg, pairs, ridges, p):
    """(b): the sGCV ridge over the last epoch per (batch, memory), with the problem's shape."""
    rows, by_batch, under, over = [], defaultdict(list), [], []
    for b, r in pairs:
        last = [agg[(b, r, "sgcv", lam)]["ridge_last"] for lam in ridges if (b, r, "sgcv", lam) in agg]
        cum = [agg[(b, r, "sgcv", lam)]["ridge_cum"] for lam in ridges if (b, r, "sgcv", lam) in agg]
        n_rows = (r + 1) * b
        shape = "under" if n_rows < p else "over"
        (under if n_rows < p else over).append(_gmean(cum))
        by_batch[b].append((r, _gmean(last)))
        rows.append((b, r, n_rows, shape, *last, _gmean(last), _gmean(cum)))
    header = [
        "batch",
        "memory",
        "rows (r+1)b",
        f"vs p={p}",
        *[f"per-step ridge, init {_lam(lam)}" for lam in ridges],
        "geo. mean per-step",
        "geo. mean cumulative S",
    ]
    lines = []
    for b, seq in sorted(by_batch.items()):
        seq.sort()
        mono = all(x[1] > y[1] for x, y in itertools.pairwise(seq))
        lines.append(
            f"batch {b}: per-step ridge by memory "
            + ", ".join(f"r={r}: {v:.3g}" for r, v in seq)
            + f" -> {'decreasing' if mono else 'NOT monotone'} in memory"
        )
    lines.append(
        f"geometric mean of the cumulative S: underdetermined cells {_gmean(under):.3g}, "
        f"overdetermined cells {_gmean(over):.3g}"
    )
    return markdown_table(header, rows), lines


# ---------------------------------------------------------------------------------- figures
def figures(agg, outdir, batches, memory_lists, ridges, pred_batch, pred_memory, Xva, yva):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from sklearn_slimtrain.plotting import plot_predictions, plot_ridge_path

    outdir.mkdir(parents=True, exist_ok=True)
    all_memories = sorted({r for b in batches for r in memory_lists[b]})
    colors = {r: plt.cm.viridis(i / max(len(all_memories) - 1, 1)) for i, r in enumerate(all_memories)}

    # Figure 2: training loss per epoch; rows = ridge, columns = batch size.
    fig, axes = plt.subplots(
        len(ridges), len(batches), figsize=(4.2 * len(batches), 3.2 * len(ridges)), squeeze=False, sharey=True
    )
    for i, lam in enumerate(ridges):
        for j, b in enumerate(batches):
            ax = axes[i, j]
            for r in memory_lists[b]:
                for mode, style in (("sgcv", "-"), ("fixed", "--")):
                    a = agg.get((b, r, mode, lam))
                    if a is not None and len(a["train"]):
                        ax.plot(np.arange(1, len(a["train"]) + 1), a["train"], style, color=colors[r], marker=".")
            ax.set_yscale("log")
            ax.set_title(f"batch {b}, lambda (fixed / sGCV init) = {_lam(lam)}", fontsize=9)
            ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel("train loss  (1/2N) sum (yhat - y)^2")
    handles = [Line2D([], [], color=colors[r], label=f"memory {r}") for r in all_memories]
    handles += [
        Line2D([], [], color="black", linestyle="-", label="sGCV"),
        Line2D([], [], color="black", linestyle="--", label="fixed ridge"),
    ]
    for ax in axes.ravel():
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9)
    fig.suptitle("peaks: training loss after each epoch (solid: sGCV, dashed: fixed ridge; paper Figure 2)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(outdir / "peaks_loss_curves.png", dpi=80)
    plt.close(fig)

    # Figure 4: sGCV per-step ridge, epochs x iterations; rows = memory, columns = batch; smallest init ridge.
    lam0 = min(ridges)
    memories = [r for r in all_memories if all(r in memory_lists[b] for b in batches)] or all_memories
    fig, axes = plt.subplots(
        len(memories), len(batches), figsize=(4.2 * len(batches), 3.0 * len(memories)), squeeze=False
    )
    lo, hi = math.inf, -math.inf
    for b, r in itertools.product(batches, memories):
        a = agg.get((b, r, "sgcv", lam0))
        if a is not None and len(a["model"].ridge_path_):
            logs = np.log10(a["model"].ridge_path_)
            lo, hi = min(lo, float(logs.min())), max(hi, float(logs.max()))
    for i, r in enumerate(memories):
        for j, b in enumerate(batches):
            ax = axes[i, j]
            a = agg.get((b, r, "sgcv", lam0))
            if a is None or not len(a["model"].ridge_path_):
                ax.axis("off")
                continue
            plot_ridge_path(a["model"], ax=ax)
            ax.images[0].set_clim(lo, hi)  # one colour scale for all panels
            ax.set_title(f"batch {b}, memory {r}  ((r+1)b = {(r + 1) * b} rows)", fontsize=9)
    fig.suptitle(f"peaks: sGCV per-step ridge per iteration, initial ridge {_lam(lam0)} (paper Figure 4)")
    fig.tight_layout()
    fig.savefig(outdir / "peaks_ridge_heatmap.png", dpi=80)
    plt.close(fig)

    # Figure 3: surfaces on a grid; rows = sGCV / |error| / fixed / |error|, columns = truth + ridges.
    if pred_batch not in batches:
        pred_batch = batches[0]
    if pred_memory not in memory_lists[pred_batch]:
        pred_memory = memory_lists[pred_batch][0]
    g = np.linspace(-3.0, 3.0, GRID_SIDE)  # the data's domain [-3, 3]^2
    gx, gy = np.meshgrid(g, g)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    truth = peaks(gx, gy)
    extent = (-3, 3, -3, 3)
    vmin, vmax = float(truth.min()), float(truth.max())
    fig, axes = plt.subplots(
        4, len(ridges) + 1, figsize=(3.4 * (len(ridges) + 1) + 1, 13), squeeze=False, layout="constrained"
    )
    for ax in axes[:, 0]:
        ax.axis("off")
    ax = axes[0, 0]
    ax.axis("on")
    surf_im = ax.imshow(truth, origin="lower", extent=extent, vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_title("true peaks")
    errs, im = {}, None
    for mode in ("sgcv", "fixed"):
        for lam in ridges:
            a = agg.get((pred_batch, pred_memory, mode, lam))
            if a is not None:
                errs[(mode, lam)] = a["model"].predict(grid).reshape(gx.shape)
    # one error scale for all panels, saturated at half the range of peaks (so that one wild fit
    # does not wash out the others)
    emax = min(max((float(np.abs(s - truth).max()) for s in errs.values()), default=1.0), 0.5 * (vmax - vmin))
    for k, mode in enumerate(("sgcv", "fixed")):
        for j, lam in enumerate(ridges):
            top, bottom = axes[2 * k, j + 1], axes[2 * k + 1, j + 1]
            if (mode, lam) not in errs:
                top.axis("off")
                bottom.axis("off")
                continue
            surf = errs[(mode, lam)]
            rel = float(np.linalg.norm(surf - truth) / np.linalg.norm(truth))
            top.imshow(surf, origin="lower", extent=extent, vmin=vmin, vmax=vmax, cmap="viridis")
            name = "sGCV, init" if mode == "sgcv" else "fixed"
            top.set_title(f"{name} lambda={_lam(lam)}", fontsize=9)
            im = bottom.imshow(np.abs(surf - truth), origin="lower", extent=extent, vmin=0, vmax=emax, cmap="magma")
            bottom.set_title(f"|error|, rel. error {rel:.3f}", fontsize=9)
    for row in range(4):  # one colour scale per kind of image, a colour bar on every row
        image = surf_im if row % 2 == 0 else im
        if image is not None:
            fig.colorbar(
                image, ax=axes[row, -1], label="peaks value" if row % 2 == 0 else "|prediction - truth| (saturated)"
            )
    # validation scatter (plot_predictions) of the worst fixed ridge and its sGCV counterpart
    worst = max(
        (lam for lam in ridges if (pred_batch, pred_memory, "fixed", lam) in agg),
        key=lambda lam: (
            agg[(pred_batch, pred_memory, "fixed", lam)]["val"][-1]
            if len(agg[(pred_batch, pred_memory, "fixed", lam)]["val"])
            else -math.inf
        ),
        default=None,
    )
    for row, mode in ((1, "sgcv"), (3, "fixed")):
        a = agg.get((pred_batch, pred_memory, mode, worst))
        if a is not None:
            ax = axes[row, 0]
            ax.axis("on")
            plot_predictions(a["model"], Xva, yva, ax=ax)
            ax.set_title(
                f"val: {'sGCV init' if mode == 'sgcv' else 'fixed'} {_lam(worst)}\n{ax.get_title()}", fontsize=9
            )
    fig.suptitle(f"peaks: predictions after the last epoch, batch {pred_batch}, memory {pred_memory} (paper Figure 3)")
    fig.savefig(outdir / "peaks_predictions.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return [outdir / f"peaks_{name}.png" for name in ("loss_curves", "ridge_heatmap", "predictions")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 tiny configs, 1 epoch, no figures")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    parser.add_argument("--memories", type=int, nargs="+", default=MEMORIES)
    parser.add_argument(
        "--extra-memories-batch1",
        type=int,
        nargs="*",
        default=EXTRA_MEMORIES_BATCH1,
        help="memory depths run for batch 1 only (paper: 100)",
    )
    parser.add_argument("--ridges", type=float, nargs="+", default=RIDGES)
    parser.add_argument("--n-train", type=int, default=N_TRAIN)
    parser.add_argument("--n-val", type=int, default=N_VAL)
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="folder of the PNG figures (default docs/figures; none with --quick unless given)",
    )
    parser.add_argument("--pred-batch", type=int, default=5, help="batch size of the prediction figure (paper: 5)")
    parser.add_argument("--pred-memory", type=int, default=0, help="memory depth of the prediction figure")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        # tiny: batch 10 (20 steps on 200 rows), memory 0, two ridges per mode so that (a) has a ratio
        args.epochs, args.batches, args.memories, args.extra_memories_batch1 = 1, [10], [0], []
        args.ridges, args.n_train, args.n_val = [1.0, 1e-10], 200, 100
    torch.set_num_threads(1)  # as the workers (the header's thread count)
    figdir = args.figures if args.figures is not None else (None if args.quick else ROOT / "docs" / "figures")
    net = {"width": WIDTH, "depth": DEPTH, "final_time": FINAL_TIME}
    p = WIDTH + 1  # unknowns of the head: width plus the bias

    memory_lists = {b: list(args.memories) + (list(args.extra_memories_batch1) if b == 1 else []) for b in args.batches}
    pairs = [(b, r) for b in args.batches for r in memory_lists[b]]
    configs = [
        (b, r, mode, lam, seed)
        for (b, r), mode, lam, seed in itertools.product(pairs, ("sgcv", "fixed"), args.ridges, args.seeds)
    ]
    # longest first (steps per epoch, sGCV about twice a fixed step), for the load balance
    configs.sort(key=lambda c: -(args.n_train / c[0]) * (2 if c[2] == "sgcv" else 1))
    start = time.perf_counter()
    results = Parallel(n_jobs=args.n_jobs)(
        delayed(run)(b, r, mode, lam, args.epochs, seed, args.n_train, args.n_val, net)
        for b, r, mode, lam, seed in configs
    )
    wall = time.perf_counter() - start
    agg = aggregate(results)

    print(
        f"# peaks (paper section 4.1): {args.epochs} epochs, seeds {args.seeds}, {args.n_train} training / "
        f"{args.n_val} validation points, ResNet width {WIDTH} depth {DEPTH} T={FINAL_TIME:g}, Adam lr "
        f"{LEARNING_RATE:g}, refit_head=False ({machine()})\n"
    )
    print(
        "Losses are (1/(2N)) sum (yhat - y)^2 after the last epoch, on all training / validation rows, "
        "mean over seeds; the sGCV ridge columns are the per-step ridge (`ridge_path_`) averaged over the last "
        "epoch and the final cumulative ridge S.\n"
    )
    print(config_table(agg, p))
    table, verdict = spread_table(agg, pairs, args.ridges)
    print(f"\n## (a) spread of the final loss across the ridges {', '.join(map(_lam, args.ridges))}\n")
    print(table)
    print(f"\n{verdict}")
    table, lines = ridge_table(agg, pairs, args.ridges, p)
    print("\n## (b) ridge selected by sGCV over the last epoch\n")
    print(table)
    print()
    for line in lines:
        print(f"- {line}")
    if figdir is not None:
        _Xtr, _ytr, Xva, yva = load(args.n_train, args.n_val)
        paths = figures(
            agg, figdir, args.batches, memory_lists, args.ridges, args.pred_batch, args.pred_memory, Xva, yva
        )
        shown = [path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path for path in paths]
        print("\nfigures: " + ", ".join(str(path) for path in shown))
    print(f"\n{len(configs)} fits in {wall:.0f} s wall with --n-jobs {args.n_jobs}")


if __name__ == "__main__":
    main()
