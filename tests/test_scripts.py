"""Smoke runs of the benchmark and example scripts (benchmarks are scripts, not tests)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, **env_vars):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_vars)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True)


def test_stability_benchmark_quick():
    out = _run("benchmarks/stability.py", "--quick", "--n-jobs", "1").stdout
    assert "## summary" in out and out.count("| peaks | bounded |") >= 2 and "| peaks | adam |" in out


def test_overhead_benchmark_quick():
    out = _run("benchmarks/overhead.py", "--quick").stdout
    assert out.count("| cpu |") == 3 and "head step skipped / Adam" in out


def test_overhead_head_only_quick():
    out = _run("benchmarks/overhead.py", "--quick", "--head-only").stdout
    assert "| 9 | 1 | 32 |" in out and "| 17 | 72 | 10 |" in out and out.count("| NumPy |") == 2
    assert out.count("| tridiagonal |") == 2  # the no-memory table: q = 65 and 257, one target


def test_demo_runs():
    out = _run("examples/demo_peaks.py").stdout
    assert "SlimTrainRegressor()" in out and "MLPRegressor()" in out


def test_stik_example_shows_the_papers_figure_1():
    # sTik (memory_depth=None, frozen features, fixed ridge) reaches the Tikhonov weights at
    # the epoch's last step, not before; Adam on the same batches stays far from them at
    # the example's three learning rates
    out = _run("examples/plot_stik_fixed_features.py", MPLBACKEND="Agg").stdout
    before = float(out.split("before the end of the epoch: relative error ")[1].split()[0])
    stik = float(out.split("sTik after one epoch: relative error ")[1].split()[0])
    adam = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith("Adam, lr")
            and "relative error" in line]
    assert stik < 1e-10 and before > 1e-3 and len(adam) == 3 and min(adam) > 0.5


def test_epochs_benchmark_quick():
    out = _run("benchmarks/epochs.py", "--epochs", "1", "--seeds", "0", "--n-jobs", "1").stdout
    assert "| 1 |" in out



def test_streaming_benchmark_quick():
    out = _run("benchmarks/streaming.py", "--quick", "--memory", "5", "none").stdout
    assert "## partial_fit (memory_depth=5)" in out and "## predict" in out and "| 1000 |" in out
    assert "1 torch threads" in out and "| 1000 | 2 |" in out  # the children's threads; 2 chunks of 500 rows
    assert "## partial_fit (memory_depth=None)" in out and "## Memory depths compared" in out
    assert "| None |" in out and "| 5 |" in out


def test_cdr_benchmark_quick():
    out = _run("benchmarks/cdr.py", "--quick", "--n-jobs", "1").stdout
    assert "## Table 1" in out and "| 10 | Adam |" in out and "## Goals" in out and "## Saturation" in out


def test_cdr_benchmark_runs_do_not_depend_on_torch_global_generator():
    # each run (a joblib job) must give the same result whichever jobs ran before it in its worker
    code = """
import sys, torch
sys.path.insert(0, "benchmarks")
import cdr
out = []
for method in ("slim", "adam"):
    for seed in (1, 2):
        torch.manual_seed(seed)
        torch.rand(seed)
        out.append(cdr.run(method, 1e-3, 10, 0, 1, 1, 0, 40, 1.0)["curve"])
assert out[0] == out[1] and out[2] == out[3], out
print("same")
"""
    assert _run("-c", code).stdout.strip() == "same"


def test_cdr_benchmark_refit_column_is_the_estimators_final_head_solve():
    # the "+refit head" column: the last slimTik iterate's extractor with fit's own final solve
    # (a first version passed uncentred targets once fit began centring them: loss 54 for 4.8)
    code = """
import sys, warnings, numpy as np, torch
sys.path.insert(0, "benchmarks")
import cdr
from sklearn_slimtrain import SlimTrainRegressor
res = cdr.run("slim", 1e-3, 10, 0, 1, 1, 0, 40, 1.0)
Xtr, Ytr, Xva, Yva = cdr.load(40)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fit = SlimTrainRegressor(cdr.network, batch_size=10, max_iter=1, random_state=0).fit(Xtr, Ytr)
expected = (cdr.loss(fit.predict(Xtr), Ytr), cdr.loss(fit.predict(Xva), Yva))
assert np.allclose(res["refit"], expected, rtol=1e-9), (res["refit"], expected)
print("same")
"""
    assert _run("-c", code).stdout.strip() == "same"


def test_autoencoder_benchmark_quick():
    out = _run("benchmarks/autoencoder.py", "--quick").stdout
    assert "## Figure 8" in out and "| Adam lambda=1e-10 |" in out and "## Figure 10" in out and "| 100 |" in out
    assert "± nan" in out  # one seed: no sample standard deviation (ddof=1)
    out = _run("benchmarks/autoencoder.py", "--quick", "--curves-only").stdout
    assert "epoch CPU time / slimTrain's" in out and "## Figure 10" not in out


def test_conv_head_benchmark_quick():
    out = _run("benchmarks/conv_head.py", "--quick").stdout
    difference = float(out.rsplit("explicit products:", 1)[1].split()[0])
    assert difference < 1e-12  # the fast statistics equal the explicit products


def test_compiled_step_experiment_quick():
    # numba is optional: without it the script says so; with it, the compiled kernel must
    # follow SlimTikHead.step (same ridge path) in every row
    out = _run("benchmarks/compiled_step.py", "--quick").stdout
    try:
        import numba  # noqa: F401
    except ImportError:
        assert "numba is not installed" in out
    else:
        assert out.count("| True |") == 4 and "| False |" not in out and "slimTrain (compiled) / Adam" in out


def test_weights_benchmark_quick():
    out = _run("benchmarks/weights.py", "--quick").stdout
    assert "## cost" in out and "| MLPRegressor(max_iter=8) | 1/sigma^2 |" in out  # 4x the quick run's 2 epochs
    assert "refit_head=True" in out and "refit_head=False" in out  # both timings
    assert out.count("| SlimTrainRegressor") == 10  # five configurations, without and with weights


def test_input_scale_benchmark_quick():
    out = _run("benchmarks/input_scale.py", "--quick").stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(("| x ", "| + "))]
    rms = {row[0][2:]: float(row[1]) for row in rows}
    assert rms["x 0.01"] == 0.01 and rms["x 30"] == 30.0 and rms["+ 3"] == 3.16  # standardised, then changed
    # diabetes as scikit-learn ships it: each column of norm 1 over 442 rows, 1/sqrt(442) = 0.048
    assert "| peaks | " in out and "| diabetes | " in out and "as shipped (RMS 0.048)" in out
    out = _run("benchmarks/input_scale.py", "--quick", "--search").stdout
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in out.splitlines() if line.startswith("| d")}
    assert float(rows["diabetes"][1]) in (1.0, 0.5, 0.25) and "| ishigami | " in out  # a factor of the grid
    out = _run("benchmarks/input_scale.py", "--quick", "--builtin").stdout
    cells = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith(("| d", "| i"))]
    rows = {row[0]: row for row in cells}
    assert set(rows) == {"diabetes", "ishigami"}
    for row in rows.values():  # factor 1, then each rule's factor and the test R2 of the fit at it, then the best
        assert len(row) == 11 and all(float(f) in (1.0, 0.5, 0.25) for f in row[2:-1:2])
        assert max(float(v) for v in row[1:-1:2]) <= float(row[-1])  # no rule beats the best factor on the test rows


def test_adam_baseline_head_solve_and_independent_init():
    # benchmarks/_common: Adam's head is drawn independently of the extractor it follows, and
    # head_solve applies the package's own final head solve to Adam's network
    import copy
    import warnings

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import fit_adam, head_solve

    from sklearn_slimtrain import ResNetFeatures, SlimTrainRegressor
    from sklearn_slimtrain.datasets import make_peaks

    X, y = make_peaks(300, random_state=0)
    torch.manual_seed(0)
    extractor = ResNetFeatures(2, width=16)
    predict = fit_adam(X, y, extractor=extractor, epochs=0, seed=0)  # the initial weights
    head, opening = predict.head.weight.detach().ravel(), extractor.opening.weight.detach().ravel()[:16]
    assert abs(np.corrcoef(head, opening)[0, 1]) < 0.9  # was exactly 1: the same stream, rescaled
    predict = fit_adam(X, y, extractor=extractor, epochs=1, seed=0)
    solved = head_solve(predict, X, y)
    frozen = copy.deepcopy(extractor).requires_grad_(False)  # a module without trainable weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SlimTrainRegressor(frozen, max_iter=1, random_state=0).fit(X, y)  # its final head solve
    np.testing.assert_allclose(solved(X), model.predict(X), rtol=0, atol=1e-8 * np.abs(y).max())
    assert np.mean((solved(X) - y) ** 2) < np.mean((predict(X) - y) ** 2)


def test_adam_baseline_splits_epochs_as_the_estimator():
    # benchmarks/_common: Adam's epoch has the batches of SlimTrainRegressor._epoch (the
    # remainder rows join the last batch), so both make the same number of steps per epoch
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import batch_bounds, fit_adam_layer

    from sklearn_slimtrain import SlimTrainRegressor
    from sklearn_slimtrain.datasets import make_peaks

    class Recording(SlimTrainRegressor):
        def _step(self, xb, *args, **kwargs):
            self.sizes_.append(xb.shape[0])
            return super()._step(xb, *args, **kwargs)

    for n in (20, 50, 100, 2000):
        X, y = make_peaks(n, random_state=0)
        model = Recording(batch_size=32, max_iter=1, refit_head=False, random_state=0)
        model.sizes_ = []
        model.fit(X, y)
        adam = []
        torch.manual_seed(0)
        head = torch.nn.Linear(4, 1)
        head.register_forward_pre_hook(lambda module, inputs, sizes=adam: sizes.append(inputs[0].shape[0]))
        fit_adam_layer(X, y, extractor=torch.nn.Linear(2, 4), head=head, batch_size=32, epochs=1)
        bounds = [stop - start for start, stop in batch_bounds(n, 32)]
        assert model.sizes_ == adam == bounds, (n, model.sizes_, adam)
        assert len(adam) == max(n // 32, 1) and sum(adam) == n
    assert [stop - start for start, stop in batch_bounds(50, 32)] == [50]  # one step, not 32 + 18
    assert [stop - start for start, stop in batch_bounds(100, 32)] == [32, 32, 36]
    assert [stop - start for start, stop in batch_bounds(2000, 32)] == [32] * 61 + [48]  # 62 steps, not 63
    assert np.sum([stop - start for start, stop in batch_bounds(400, 10)]) == 400
