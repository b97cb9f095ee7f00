"""What a run loads: a GPU box may lack the packages of the parts it does not use.

The lent GPU machines of bench/gpu_check.sh, like many GPU images, have torch, pytest and
NVML but not necessarily prometheus_client or the Kubernetes client, and nothing can be
installed there: `gpu-burnin run` must not import them unless it writes a metrics file."""

import subprocess
import sys

import pytest

from tests.helpers import REPO, only_result

HEALTHY = REPO / "harness" / "nvml" / "scenarios" / "healthy.toml"


def _loaded(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_command_line_loads_no_prometheus_client_until_a_metrics_file_is_written():
    code = (
        "import sys, harness.cli; harness.cli.build_parser()\n"
        "print(sorted(m for m in ('prometheus_client', 'kubernetes') if m in sys.modules))"
    )
    assert _loaded(code) == "[]"


def test_the_watch_loads_no_prometheus_client_until_it_writes_its_textfile():
    code = (
        "import sys, harness.watch.command, harness.watch.loop\n"
        "print(sorted(m for m in ('prometheus_client', 'kubernetes') if m in sys.modules))"
    )
    assert _loaded(code) == "[]"


@pytest.fixture
def without_clients(tmp_path):
    """A PYTHONPATH under which importing prometheus_client or kubernetes fails, as where they are missing."""
    blocker = tmp_path / "blocked"
    for name in ("prometheus_client", "kubernetes"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return {"PYTHONPATH": f"{blocker}:{REPO}", "PATH": "/usr/bin:/bin"}


@pytest.mark.slow
def test_a_run_needs_neither_prometheus_client_nor_the_kubernetes_client(tmp_path, without_clients):
    results = tmp_path / "results"
    args = ["run", "--device", "cpu", "--cpu-devices", "1", "-m", "health", "--nvml", f"sim:{HEALTHY}"]
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args, "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env=without_clients,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and only_result(results)["verdict"]["status"] == "pass"
    # Where prometheus_client is there, the metrics file asked for is written as before.
    metrics = tmp_path / "m.prom"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args, "--results", str(tmp_path / "again")]
        + ["--metrics-textfile", str(metrics)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert 'status="pass"} 1.0' in metrics.read_text()


def test_a_metrics_file_without_prometheus_client_is_a_usage_error_before_anything_runs(tmp_path, without_clients):
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "-m", "health", "--results", str(results)]
        + ["--metrics-textfile", str(tmp_path / "m.prom")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=without_clients,
    )
    assert done.returncode == 4, done.stderr
    assert done.stderr.strip().splitlines() == [
        "gpu-burnin: error: --metrics-textfile: needs prometheus_client, which cannot be imported: "
        "prometheus_client is not installed here"
    ]
    assert not results.exists() and not (tmp_path / "m.prom").exists()
