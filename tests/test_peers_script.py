"""The peers benchmark: its test functions against the literature, and a smoke run of the script."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import sici
from sklearn.datasets import make_friedman1

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _functions import ISHIGAMI_A, ISHIGAMI_B, PROBLEMS, SOBOL_G_A, make_problem


def test_registry_shapes_and_determinism():
    assert len([p for p in PROBLEMS if p != "peaks"]) >= 8
    for name, problem in PROBLEMS.items():
        X, y = make_problem(name, 50, random_state=0)
        assert X.shape == (50, problem.n_features) and y.shape == (50,) and np.isfinite(y).all()
        assert (X >= np.asarray(problem.low)).all() and (X <= np.asarray(problem.high)).all()
        np.testing.assert_array_equal(make_problem(name, 50, random_state=0)[1], y)
    with pytest.raises(ValueError, match="unknown problem"):
        make_problem("nope", 5)


def test_ishigami_moments():
    # Analytic moments (Ishigami and Homma 1990; Sobol' and Levitan 1999; listed by VLSE):
    # mean a/2, variance a^2/8 + b pi^4/5 + b^2 pi^8/18 + 1/2 (= 13.8446 for a=7, b=0.1).
    a, b = ISHIGAMI_A, ISHIGAMI_B
    variance = a**2 / 8 + b * math.pi**4 / 5 + b**2 * math.pi**8 / 18 + 0.5
    assert variance == pytest.approx(13.8446, abs=1e-4)
    _, y = make_problem("ishigami", 400_000, random_state=0)
    # Monte Carlo standard errors at n = 4e5: mean 0.006, variance about 0.03
    assert y.mean() == pytest.approx(a / 2, abs=0.03)
    assert y.var() == pytest.approx(variance, abs=0.15)


def test_sobol_g_moments():
    # E[f] = 1 and Var[f] = prod_i (1 + 1 / (3 (1 + a_i)^2)) - 1 (Saltelli and Sobol' 1995).
    a = np.asarray(SOBOL_G_A)
    variance = np.prod(1 + 1 / (3 * (1 + a) ** 2)) - 1
    _, y = make_problem("sobol_g", 400_000, random_state=1)
    assert y.mean() == pytest.approx(1.0, abs=0.01)
    assert y.var() == pytest.approx(variance, rel=0.03)


def test_friedman_matches_scikit_learn_and_its_mean():
    X, y = make_friedman1(n_samples=100, n_features=5, noise=0.0, random_state=0)
    np.testing.assert_allclose(PROBLEMS["friedman"](X), y, rtol=1e-12)
    # E[f] = 10 Cin(pi)/pi + 20/12 + 5 + 2.5, Cin(pi) = gamma + ln(pi) - Ci(pi)
    cin = np.euler_gamma + math.log(math.pi) - sici(math.pi)[1]
    _, y = make_problem("friedman", 200_000, random_state=0)
    assert y.mean() == pytest.approx(10 * cin / math.pi + 20 / 12 + 7.5, abs=0.03)


def test_hartmann6_global_minimum():
    # VLSE hart6: f(x*) = -3.32237 at x* = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
    x_star = np.array([[0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]])
    assert PROBLEMS["hartmann6"](x_star)[0] == pytest.approx(-3.32237, abs=1e-5)
    _, y = make_problem("hartmann6", 10_000, random_state=0)
    assert y.min() > -3.32237


def test_robot_arm_stretched_and_bounded():
    # All angles zero: the arm is straight, its end at distance L1 + L2 + L3 + L4 (An and Owen 2001).
    X = np.array([[0, 0, 0, 0, 0.1, 0.2, 0.3, 0.4], [math.pi, 0, 0, 0, 1, 1, 1, 1]])
    np.testing.assert_allclose(PROBLEMS["robot_arm"](X), [1.0, 4.0])
    _, y = make_problem("robot_arm", 1000, random_state=0)
    assert (y >= 0).all() and (y <= 4).all()


def test_peaks_value():
    # MATLAB peaks(0, 0) = 3 e^-1 - e^-1 / 3
    assert PROBLEMS["peaks"](np.zeros((1, 2)))[0] == pytest.approx(8 / (3 * math.e))


# Values of the independent implementations in UQTestFuns 0.7.0 (D. Wicaksono, M. Hecht, JOSS 8(90):5671,
# 2023) at x = low + 0.3 (high - low) of our input boxes.  (UQTestFuns's Franke squares (9 x2 + 1) in the
# second term; VLSE's code and Franke (1979) do not, and neither do we.)
UQTESTFUNS_AT_30_PERCENT = {
    "borehole": 47.397402787612656,
    "otl_circuit": 5.2269168752975785,
    "piston": 0.4774791989884159,
    "wing_weight": 220.62088442063217,
    "welch": -0.748,
    "ishigami": 5.143340594035016,
}


@pytest.mark.parametrize("name", sorted(UQTESTFUNS_AT_30_PERCENT))
def test_point_values_match_uqtestfuns(name):
    problem = PROBLEMS[name]
    low, high = np.asarray(problem.low, float), np.asarray(problem.high, float)
    x = low + 0.3 * (high - low)
    assert problem(x[None])[0] == pytest.approx(UQTESTFUNS_AT_30_PERCENT[name], rel=1e-12)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True)


def test_peers_benchmark_quick():
    out = _run("benchmarks/peers.py", "--quick").stdout
    assert "| peaks | 2 | 200/100 |" in out
    assert "problems." in out and "## early convergence" in out and "| peaks | 2 |" in out
    try:
        import skorch  # noqa: F401
    except ImportError:
        assert "skorch is not installed" in out
    else:
        assert "skorch (Adam, same net)" in out


def test_peers_without_skorch_and_figure(monkeypatch, tmp_path, capsys):
    import importlib.util

    monkeypatch.setitem(sys.modules, "skorch", None)  # `import skorch` raises ImportError
    spec = importlib.util.spec_from_file_location("peers_no_skorch", ROOT / "benchmarks" / "peers.py")
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    assert not peers.HAVE_SKORCH
    figure = tmp_path / "r2.png"
    peers.main(["--problems", "diabetes", "--seeds", "0", "--epochs", "1", "--early-problems", "--figure", str(figure)])
    out = capsys.readouterr().out
    assert "skorch is not installed" in out and "skorch (Adam" not in out and "| diabetes | 10 |" in out
    assert figure.stat().st_size > 1000


def test_peers_models_option_with_pass_inputs(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("peers_models", ROOT / "benchmarks" / "peers.py")
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    peers.main(["--problems", "diabetes", "--seeds", "0", "--epochs", "1", "--early-problems",
                "--models", "RidgeCV", peers.PASS_INPUTS])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| problem | d |"))
    assert header.split("|")[4:7] == [" RidgeCV ", f" {peers.PASS_INPUTS} ", f" {peers.PASS_INPUTS} - best "]
    assert f"{peers.PASS_INPUTS} is the best or within" in out and "figure:" not in out  # no default figure
    # the variant's network sees the 10 inputs and 16 features: its head has 26 weights
    pipe = peers.make_model(peers.PASS_INPUTS, 0, 10, epochs=1)
    X, _, y, _ = peers.load("diabetes", 0)
    assert pipe.fit(X, y)[-1].coef_.shape == (26,)
