"""The benchmark scripts still run (their figures are read by people, not asserted here)."""

import json
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


@pytest.mark.slow
def test_the_remediator_scale_bench_runs_small_and_meets_its_goal(tmp_path):
    out = tmp_path / "figures.json"
    argv = [sys.executable, str(REPO / "bench" / "remediator_scale.py"), "--nodes", "200", "--failing", "30"]
    done = subprocess.run([*argv, "--max-nodes", "5", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert (figures["taken_out"], figures["braked_events"], figures["exact"]) == (5, 25, True)
