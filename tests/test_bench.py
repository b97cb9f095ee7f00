"""The benchmark scripts still run (their figures are read by people, not asserted here)."""

import subprocess
import sys

from tests.helpers import REPO


def test_matmul_overhead_prints_both_figures_and_their_ratio():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "matmul_overhead.py"),
            "--device",
            "cpu",
            "--size",
            "64",
            "--rounds",
            "2",
            "--seconds",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "median TFLOP/s: bare " in done.stdout and "ratio harness/bare: " in done.stdout


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_check.sh")]).returncode == 0
