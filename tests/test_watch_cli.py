"""`gpu-burnin watch` as the DaemonSet runs it: a real process, the real client, the fake API server;
its exit codes, its refusals, and that it never imports torch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cli
from harness.kube import node as nodes
from tests.kube_fake import FakeApiServer
from tests.watch_fleet import DATA, GPU_NODE, SCENARIOS, WRITES

pytestmark = pytest.mark.slow


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        fake.add_node("n1", labels=GPU_NODE)
        for n in range(3):
            fake.add_node(f"other-{n}", labels=GPU_NODE)
        yield fake


def args(tmp_path: Path, kubeconfig: Path, *more: str) -> list[str]:
    return [
        "watch",
        "--node",
        "n1",
        "--kubeconfig",
        str(kubeconfig),
        "--journal",
        str(tmp_path / "state" / "journal.jsonl"),
        "--metrics-textfile",
        str(tmp_path / "metrics" / "watch.prom"),
        "--api-timeout",
        "2",
        *more,
    ]


def node_writes(server: FakeApiServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests if r.method in WRITES]


def test_the_watch_process_acts_exits_0_on_sigterm_and_never_imports_torch(server, tmp_path):
    kubeconfig = server.kubeconfig(tmp_path)
    fast = ["--interval", "0.2", "--hold", "2", "--window", "2"]
    command = [sys.executable, "-X", "importtime", "-m", "harness.cli"]
    command += args(tmp_path, kubeconfig, "--nvml", f"sim:{SCENARIOS / 'row-remap-pending.toml'}", *fast)
    log = tmp_path / "stderr.log"  # a file: the import log would fill a pipe and block the child
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "gpu-burnin/health" not in server.node("n1")["metadata"]["labels"]:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    err = log.read_text()
    assert process.returncode == 0, err[-2000:]
    assert "watching 2 GPUs of node n1" in out
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in err.splitlines() if line.startswith("import time:")
    }
    assert "harness" in imported and "kubernetes" in imported  # the import log is complete...
    assert "torch" not in imported  # ...and the GPUs are never touched through torch
    node = server.node("n1")
    assert node["metadata"]["labels"]["gpu-burnin/health"] == "failing" and not node["spec"].get("unschedulable")
    assert (nodes.condition(node, nodes.WATCH_CONDITION) or {})["reason"] == "ROW_REMAP_PENDING"
    ops = [json.loads(line)["op"] for line in (tmp_path / "state" / "journal.jsonl").read_text().splitlines()]
    assert ops[0] == "start" and ops.count("request") == 2  # begin and done
    assert "gpu_burnin_watch_last_poll_timestamp_seconds" in (tmp_path / "metrics" / "watch.prom").read_text()


def test_without_a_driver_the_condition_reads_unknown_and_the_watch_keeps_running(server, tmp_path):
    """No libnvidia-ml here (a GKE node without the driver mounted, CDI without the runtime class): the watch
    says Unknown and waits for NVML, instead of exiting into a crash loop."""
    command = [sys.executable, "-m", "harness.cli", *args(tmp_path, server.kubeconfig(tmp_path))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        cond: dict = {}
        while time.monotonic() < deadline and process.poll() is None:
            cond = nodes.condition(server.node("n1"), nodes.WATCH_CONDITION) or {}
            if cond:
                break
            time.sleep(0.2)
        time.sleep(1)
        assert process.poll() is None  # still running
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    if "nvidia-ml-py is not installed" in err:
        pytest.skip("nvidia-ml-py is not installed here")
    assert process.returncode == 0, err
    assert "NVML could not start" in err
    assert (cond["status"], cond["reason"]) == ("Unknown", "NvmlUnavailable")
    assert not server.node("n1")["spec"].get("unschedulable")


def test_an_unreachable_api_server_at_start_exits_2(tmp_path):
    with FakeApiServer() as fake:
        kubeconfig = fake.kubeconfig(tmp_path)
    code = cli.main(args(tmp_path, kubeconfig, "--nvml", f"sim:{DATA / 'busy.toml'}", "--api-timeout", "0.5"))
    assert code == 2


@pytest.mark.parametrize(
    ("more", "says"),
    [
        (["--hold", "0"], "--hold"),
        (["--interval", "60", "--window", "300"], "--window"),
        (["--on-fail", "evict"], "--on-fail"),
        (["--heartbeat", "900"], "--heartbeat"),
        (["--nvml", "sim:/no/such/scenario.toml"], "/no/such/scenario.toml"),
        (["--baseline-dir", "/no/such/dir"], "/no/such/dir"),
    ],
)
def test_bad_options_exit_4_with_the_flag_or_file_and_change_nothing(server, tmp_path, capsys, more, says):
    code = cli.main(args(tmp_path, server.kubeconfig(tmp_path), *more))
    assert code == 4
    assert says in capsys.readouterr().err
    assert node_writes(server) == []


def test_a_simulated_nvml_is_refused_without_an_explicit_kubeconfig(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path)))
    journal = str(tmp_path / "j.jsonl")
    code = cli.main(["watch", "--node", "n1", "--journal", journal, "--nvml", f"sim:{DATA / 'busy.toml'}"])
    assert code == 4
    assert "a simulated NVML must not act on a real node" in capsys.readouterr().err
    assert node_writes(server) == []


def test_a_journal_path_that_is_a_directory_exits_4_naming_it_and_writes_nothing(server, tmp_path, capsys):
    """A path that cannot be a journal is a person's doing: said, exit 4. (What a journal file holds never
    stops the watch: tests/test_watch_journal.py.)"""
    journal = tmp_path / "state" / "journal.jsonl"
    journal.mkdir(parents=True)
    code = cli.main(args(tmp_path, server.kubeconfig(tmp_path), "--nvml", f"sim:{DATA / 'busy.toml'}"))
    assert code == 4
    err = capsys.readouterr().err
    assert str(journal) in err and "--journal" in err and "not a regular file" in err
    assert node_writes(server) == []


def test_the_cost_bench_still_runs_and_reports_the_childs_own_figures():
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent.parent / "bench" / "watch_cost.py"),
            "--duration",
            "4",
            "--interval",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    figures = json.loads(done.stdout)
    assert figures["exit_code"] == 0 and figures["startup_line"].startswith("gpu-burnin watch: watching 8 GPUs")
    assert 0 < figures["cpu_s"] and 0 < figures["peak_rss_mb"] < 100  # judged over 10 minutes, not here


# -- the readiness probe: gpu-burnin watch-ready --------------------------------------------------------


def ready(tmp_path: Path, *more: str) -> int:
    return cli.main(["watch-ready", "--state-dir", str(tmp_path), *more])


def test_watch_ready_reads_the_age_of_the_last_poll(tmp_path, capsys):
    last = tmp_path / "last-poll"
    assert ready(tmp_path) == 1
    assert "no poll yet" in capsys.readouterr().err
    last.write_text(f"{time.time() - 10:.3f}\n")
    assert ready(tmp_path, "--max-age", "120") == 0 and capsys.readouterr().err == ""
    last.write_text(f"{time.time() - 300:.3f}\n")
    assert ready(tmp_path, "--max-age", "120") == 1
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "the last poll was 300 s ago, --max-age is 120 s" in said[0]
    last.write_text("nan\n")
    assert ready(tmp_path) == 1 and "does not hold a time" in capsys.readouterr().err


@pytest.mark.parametrize("more", [["--max-age", "0"], ["--max-age", "soon"], ["--max-age", "nan"], ["--bogus"]])
def test_watch_ready_bad_flags_exit_4(tmp_path, capsys, more):
    assert ready(tmp_path, *more) == 4
    assert capsys.readouterr().err.startswith("gpu-burnin: error:")


def test_a_running_watch_is_ready_and_its_probe_costs_no_api_call(server, tmp_path):
    """The real process, polling every second: the probe passes on the file its polls keep fresh."""
    command = [sys.executable, "-m", "harness.cli", *args(tmp_path, server.kubeconfig(tmp_path), "--interval", "1")]
    command += ["--nvml", f"sim:{DATA / 'busy.toml'}", "--window", "10"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and ready(tmp_path / "state", "--max-age", "5") != 0:
            time.sleep(0.2)
        before = len(server.requests)
        assert ready(tmp_path / "state", "--max-age", "5") == 0
        time.sleep(3)  # three polls, quiet
        assert ready(tmp_path / "state", "--max-age", "5") == 0
        assert server.requests[before:] == []
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
