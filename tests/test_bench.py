"""The benchmark scripts still run (their figures are read by people, not asserted here)."""

import os
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("script", ["gpu_check.sh", "nccl_compare.sh"])
def test_the_shell_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(REPO / "bench" / script)]).returncode == 0


def test_nccl_compare_without_nccl_tests_says_so_and_exits_4(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ALL_REDUCE_PERF"}
    env["PATH"] = "/usr/bin:/bin"
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "nccl_compare.sh"), str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 4 and "all_reduce_perf not found" in done.stderr
