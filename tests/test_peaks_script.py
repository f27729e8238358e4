"""Smoke run of benchmarks/peaks.py (the paper's section 4.1 reproduction); a script, not a test of results."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True)


def test_peaks_benchmark_quick(tmp_path):
    out = _run("benchmarks/peaks.py", "--quick", "--n-jobs", "1", "--figures", str(tmp_path)).stdout
    # per-configuration table: 1 batch x 1 memory x 2 modes x 2 ridges
    assert out.count("| 10 | 0 | 10 / 9 |") == 4
    assert "## (a) spread of the final loss" in out and "| all | geo. mean |" in out
    assert "## (b) ridge selected by sGCV" in out and "per-step ridge, init 1e-10" in out
    assert "sGCV spread smaller than fixed in" in out
    for name in ("loss_curves", "ridge_heatmap", "predictions"):
        assert (tmp_path / f"peaks_{name}.png").stat().st_size > 0
