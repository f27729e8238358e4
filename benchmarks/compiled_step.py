"""A compiled (Numba) slimTik step against the package's NumPy step: what the overhead goal needs.

An experiment, not part of the package.  At the paper's sizes the CPU step is about
a hundred NumPy calls on ``9 x 9`` or ``17 x 72`` matrices, and its cost is their
per-call overhead (``docs/benchmarks.md``, overhead section).  This script compiles
the same step (dense head with intercept, sGCV with the package's global grid and
bounded steps, optional memory) with Numba and reports, side by side:

1. agreement with ``SlimTikHead.step`` over 300 random steps (relative head
   difference; whether the per-step ridge paths agree to 1e-12);
2. the one-off cost: compiling (first run) or loading the cached machine code
   (later runs), per process;
3. one head step, NumPy against compiled;
4. the epoch time ratio against Adam on the same network (as
   ``benchmarks/overhead.py``) with the NumPy step and with the compiled step
   patched into ``SlimTikHead.step``.

    python benchmarks/compiled_step.py [--repeats 11] [--epochs 3] [--threads N] [--quick]

Needs ``numba`` (``pip install numba``); the machine code is cached next to this file.
"""

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit_adam, machine, markdown_table

from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
from sklearn_slimtrain._heads import DenseLayout
from sklearn_slimtrain._slimtik import GRID_SIZE, TIE_RTOL, _unit_grid
from sklearn_slimtrain._solver import SlimTikHead
from sklearn_slimtrain.datasets import make_cdr, make_peaks


def compile_kernel():
    """The step as one Numba function (imported here: the script explains itself without numba)."""
    import numba

    @numba.njit(cache=True)
    def dense_step(Z, Y, W, S_prev, ridge_ref, memory, use_memory, scale2, unit, tiny, eps, tie_rtol, max_change):
        """One slimTik step, sGCV global rule: the arithmetic of _slimtik.slimtik_update, in loops."""
        b, p0 = Z.shape
        q, t = p0 + 1, Y.shape[1]
        A = np.empty((b, q))
        A[:, :p0] = Z
        A[:, p0] = 1.0
        R = Y - A @ W
        gram = (A.T @ A) * scale2
        cross = (A.T @ R) * scale2
        rnorm2 = np.sum(R * R) * scale2
        G = gram + memory if use_memory else gram
        evals, evecs = np.linalg.eigh(G)
        Q = evecs.T @ cross
        P = evecs.T @ W
        d = np.maximum(evals, 0.0)
        U = (A * math.sqrt(scale2)) @ evecs
        H = U.T @ U
        QQ, QP = Q @ Q.T, Q @ P.T
        F0, F1, F2 = H * QQ, H * (QP + QP.T), H * (P @ P.T)
        scale = max(np.trace(G) / q, tiny)
        n = b * t
        values = np.empty(unit.shape[0])
        for i in range(unit.shape[0]):  # the sGCV function (3.4) at every grid point
            S = scale * unit[i]
            lam = S - S_prev
            D = 1.0 / (d + S)
            q0, q1, q2 = D @ (F0 @ D), lam * (D @ (F1 @ D)), lam * lam * (D @ (F2 @ D))
            l0 = l1 = tau = 0.0
            for j in range(q):
                l0 += D[j] * QQ[j, j]
                l1 += lam * D[j] * QP[j, j]
                tau += D[j] * H[j, j]
            resid = rnorm2 + (q0 - q1 + q2 - 2.0 * l0 + 2.0 * l1)
            size = rnorm2 + (abs(q0) + abs(q1) + abs(q2) + 2.0 * abs(l0) + 2.0 * abs(l1))
            denom = (n - t * tau) ** 2
            resolved = resid > q * eps * size and denom > 0  # as _sgcv.sgcv_values
            values[i] = n * max(resid, 0.0) / denom if resolved else np.inf
        vmin = values.min()
        best = -np.inf
        for i in range(unit.shape[0]):  # ties to the larger ridge, as select_ridge
            if values[i] <= vmin + tie_rtol * abs(vmin):
                best = max(best, scale * unit[i])
        ref = S_prev if S_prev > 0 else ridge_ref
        ridge = max(min(max(best, ref * (1.0 - max_change)), ref * (1.0 + max_change)), scale * unit[0])
        step = evecs @ ((Q - (ridge - S_prev) * P) / (d + ridge).reshape(-1, 1))
        return W + step, ridge, gram

    return dense_step


_GRID = _unit_grid(np.zeros(1), GRID_SIZE)
_EPS = float(np.finfo(np.float64).eps)


def compiled_head_step(kernel):
    """A ``SlimTikHead.step`` replacement that calls ``kernel`` (dense, sGCV global rule, float64)."""

    no_memory = np.zeros((1, 1))
    unit, tiny = _GRID

    def step(self, features, targets, weights=None, mass=None):
        if weights is not None:
            raise NotImplementedError("the compiled step of this benchmark has no sample weights")
        b = features.shape[0]
        self.n_seen += b
        depth = self.memory.depth
        coef, ridge, gram = kernel(
            features.numpy(), targets.numpy(), self.coef.numpy(), float(self.ridge),
            float(self.per_step) * (self.n_seen / self.batch_size), self.memory.total().numpy() if depth else no_memory,
            depth > 0, 1.0 / self.batch_size, unit, tiny, _EPS, TIE_RTOL, self.max_change)
        self.coef = torch.from_numpy(coef)
        self.ridge = torch.from_numpy(np.array(ridge))
        self.per_step = torch.from_numpy(np.array(ridge * (self.batch_size / self.n_seen)))
        if self.memory.depth:
            self.memory.push(torch.from_numpy(gram))
        self._pending.append(self.per_step)
        return self.coef

    return step


@contextlib.contextmanager
def patched(step):
    original = SlimTikHead.step
    SlimTikHead.step = step
    try:
        yield
    finally:
        SlimTikHead.step = original


def _head(q, t, b, memory):
    return SlimTikHead(DenseLayout(q - 1, t, True), memory_depth=memory, batch_size=b, ridge=None, ridge_init=1.0,
                       max_change=0.5, dtype=torch.float64, device=torch.device("cpu"))


def _batches(q, t, b, steps):
    g = torch.Generator().manual_seed(q * 1000 + t)
    return (torch.tanh(torch.randn(steps, b, q - 1, generator=g, dtype=torch.float64)),
            torch.randn(steps, b, t, generator=g, dtype=torch.float64))


def agreement(kernel, sizes, steps):
    rows = []
    for q, t, b in sizes:
        for memory in (0, 5):
            Z, Y = _batches(q, t, b, steps)
            paths, coefs = [], []
            for step in (SlimTikHead.step, compiled_head_step(kernel)):
                head = _head(q, t, b, memory)
                with patched(step), head.stepping():
                    coefs.append(torch.stack([head.step(Z[k], Y[k]).clone() for k in range(steps)]).numpy())
                paths.append(head.ridge_path())
            rel = float(np.abs(coefs[0] - coefs[1]).max() / np.abs(coefs[0]).max())
            rows.append((q, t, b, memory, steps, f"{rel:.1e}", bool(np.allclose(paths[0], paths[1], rtol=1e-12, atol=0))))
    return rows


def step_times(kernel, sizes, repeats, steps):
    rows = []
    for q, t, b in sizes:
        Z, Y = _batches(q, t, b, steps)
        best = {}
        for name, step in (("NumPy", SlimTikHead.step), ("compiled", compiled_head_step(kernel))):
            times = []
            for _ in range(repeats):
                head = _head(q, t, b, 0)
                with patched(step), head.stepping():
                    head.step(Z[0], Y[0])
                    start = time.perf_counter()
                    for k in range(steps):
                        head.step(Z[k], Y[k])
                    times.append((time.perf_counter() - start) / steps)
            best[name] = min(times)
        rows.append((q, t, b, 1e6 * best["NumPy"], 1e6 * best["compiled"], best["NumPy"] / best["compiled"]))
    return rows


def epoch_ratios(kernel, repeats, epochs, quick):
    n = 10 if quick else 1
    cases = [("peaks, width 8, batch 32", make_peaks(2000 // n, random_state=0), 8, 32),
             ("CDR stand-in, width 16, batch 10", make_cdr(400 // n, random_state=0), 16, 10)]
    compiled = compiled_head_step(kernel)
    X, y = make_peaks(64, random_state=0)  # warm-up: the first optimizer of a process imports torch._dynamo
    SlimTrainRegressor(max_iter=1).fit(X, y)
    fit_adam(X, y, extractor=ResNetFeatures(2), epochs=1)
    rows = []
    for name, (X, y), width, batch in cases:
        times = {"NumPy": [], "compiled": [], "Adam": []}
        for _ in range(repeats):  # alternate: each triple runs under the same machine load
            for label, step in (("NumPy", SlimTikHead.step), ("compiled", compiled)):
                with patched(step):
                    start = time.perf_counter()
                    SlimTrainRegressor(ResNetFeatures(X.shape[1], width=width), batch_size=batch, max_iter=epochs,
                                       refit_head=False, random_state=0, n_iter_no_change=10**9).fit(X, y)
                    times[label].append(time.perf_counter() - start)
            start = time.perf_counter()
            fit_adam(X, y, extractor=ResNetFeatures(X.shape[1], width=width), batch_size=batch, epochs=epochs)
            times["Adam"].append(time.perf_counter() - start)
        adam = np.array(times["Adam"])
        steps = epochs * math.ceil(len(X) / batch)
        rows.append((name, float(np.median(np.array(times["NumPy"]) / adam)),
                     float(np.median(np.array(times["compiled"]) / adam)),
                     *(1e3 * min(times[k]) / steps for k in ("NumPy", "compiled", "Adam"))))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="tiny data, one repeat (smoke test)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import numba
    except ImportError:
        print("numba is not installed (pip install numba): nothing to compare.")
        return
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter epochs on purpose
    repeats, epochs = (1, 1) if args.quick else (args.repeats, args.epochs)
    sizes = [(9, 1, 32), (17, 72, 10)]
    start = time.perf_counter()
    kernel = compile_kernel()
    X, y = _batches(9, 1, 32, 1)
    kernel(X[0].numpy(), y[0].numpy(), np.zeros((9, 1)), 0.0, 1.0, np.zeros((1, 1)), False, 1 / 32, _GRID[0],
           _GRID[1], _EPS, TIE_RTOL, 0.5)
    load = time.perf_counter() - start
    print(f"# a compiled slimTik step (numba {numba.__version__}; {machine()})\n")
    print(f"Compiling or loading the cached kernel, then its first call: {load:.1f} s in this process.\n")
    print("## Agreement with SlimTikHead.step\n")
    print(markdown_table(["q", "targets", "batch", "memory", "steps", "max abs(dW) / max abs(W)", "same ridge path"],
                         agreement(kernel, sizes, 20 if args.quick else 300)))
    print("\n## One head step (us, best of the repeats)\n")
    print(markdown_table(["q", "targets", "batch", "NumPy", "compiled", "NumPy / compiled"],
                         step_times(kernel, sizes, repeats, 5 if args.quick else 300)))
    print(f"\n## Epoch time against Adam, {epochs} epochs per fit, median of {repeats} triples\n")
    print(markdown_table(["case", "slimTrain (NumPy) / Adam", "slimTrain (compiled) / Adam", "NumPy ms/step",
                          "compiled ms/step", "Adam ms/step"], epoch_ratios(kernel, repeats, epochs, args.quick)))


if __name__ == "__main__":
    main()
