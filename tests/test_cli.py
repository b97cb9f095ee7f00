"""`gpu-burnin run` as a user runs it: a real process, real exit codes, real files."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import cli, devices, results, runner
from harness.records import Code, Finding, Severity

FAST = ("--duration", "0.4")


def gpu_burnin(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "harness.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def documents(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def test_the_cpu_self_test_exits_0_with_one_result(tmp_path):
    done = gpu_burnin("run", "--device", "cpu", "-m", "matmul", "--results", str(tmp_path), *FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    [doc] = documents(tmp_path)
    assert doc["verdict"]["status"] == "pass" and doc["state"] == "finished"
    assert doc["selection"] == "matmul"
    uuid = doc["devices"][0]["uuid"]
    assert {m["metric"] for m in doc["measurements"] if m["gpu"] == uuid} >= {
        "matmul.fp32.tflops",
        "matmul.bf16.tflops",
    }
    assert "gpu-burnin verdict: PASS" in done.stdout


def test_auto_runs_the_self_test_only_where_there_is_no_nvidia_driver(tmp_path, monkeypatch):
    done = gpu_burnin("run", "--device", "auto", "--results", str(tmp_path), *FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no NVIDIA driver on this machine; running the CPU self-test" in done.stderr
    assert documents(tmp_path)[0]["device_kind"] == "cpu"
    # With a driver present (here pretended), auto means the GPUs, whatever NVML answers.
    chosen = []
    monkeypatch.setattr(devices, "DRIVER_MARKERS", (tmp_path,))
    monkeypatch.setattr(runner, "run", lambda request: chosen.append(request.device) or 2)
    assert cli.main(["run", "--device", "auto"]) == 2
    assert chosen == ["cuda"]


def test_usage_errors_exit_4_and_run_nothing(tmp_path):
    for args in (
        ["run", "--device", "tpu"],
        ["run", "--duration", "-1"],
        [],
        ["run", "--baseline", "a", "--baseline-dir", "b"],
    ):
        done = gpu_burnin(*args, "--results", str(tmp_path)) if args else gpu_burnin()
        assert done.returncode == 4, (args, done.stderr)
        assert "error:" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_results_directory_that_cannot_be_made_exits_4(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = gpu_burnin("run", "--device", "cpu", "--results", str(blocker / "results"), *FAST)
    assert done.returncode == 4
    assert f"{blocker / 'results'}: cannot create the results directory" in done.stderr


def test_a_crash_of_the_command_itself_is_incomplete_never_fail(monkeypatch, capsys):
    def broken(request):
        raise RuntimeError("bug")

    monkeypatch.setattr(runner, "run", broken)
    assert cli.main(["run", "--device", "cpu"]) == 2
    assert "internal error; the run is incomplete" in capsys.readouterr().err


def test_a_malformed_baseline_exits_4_naming_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'schema_version = 1\nmodel = "x"\ndevice = "cpu"\nnames = ["*"]\n[metrics."matmul.fp32.tflops"]\nunit = "u"\n'
    )
    out = tmp_path / "results"
    done = gpu_burnin("run", "--device", "cpu", "--baseline", str(bad), "--results", str(out), *FAST)
    assert done.returncode == 4
    assert f"{bad}: metrics.'matmul.fp32.tflops'.direction: missing" in done.stderr
    assert documents(out) == []


def test_the_watchdog_ends_a_run_that_hangs_past_its_timeout(tmp_path):
    began = time.monotonic()
    done = gpu_burnin(
        "run",
        "--device",
        "cpu",
        "--results",
        str(tmp_path),
        "--inject",
        "hang",
        "--hang-timeout",
        "600",
        "--timeout",
        "15",
        *FAST,
    )
    assert time.monotonic() - began < 60
    assert done.returncode == 2
    [doc] = documents(tmp_path)
    assert doc["state"] == "abandoned" and doc["verdict"]["status"] == "incomplete"
    codes = [f["code"] for f in doc["findings"]]
    assert "RUN_TIMEOUT" in codes and "FAULT_INJECTED" in codes  # the checkpoint's findings are kept
    assert "did not finish within --timeout 15 s" in done.stderr


def test_sigterm_still_leaves_a_finished_incomplete_result(tmp_path):
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--device",
        "cpu",
        "--results",
        str(tmp_path),
        "--duration",
        "120",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob("*.json")):
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 2
    [doc] = documents(tmp_path)
    assert doc["verdict"]["status"] == "incomplete"
    assert "INTERRUPTED" in [f["code"] for f in doc["findings"]]


def test_a_child_that_dies_without_a_final_result_is_finished_as_incomplete(tmp_path, capsys):
    started = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    path = results.path_for(tmp_path, "node", "r1")
    assert runner._settle(runner._Run(path, "r1", started, "cuda"), -9, []) == 2
    doc = results.load(path)
    assert doc["state"] == "abandoned" and doc["device_kind"] == "cuda"
    assert doc["findings"][0]["message"] == "the test process ended (exit code -9) before it wrote a final result"


def test_a_failure_found_before_the_run_died_still_fails_it(tmp_path, capsys):
    started = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    path = results.path_for(tmp_path, "node", "r1")
    doc = results.skeleton(run_id="r1", node="node", started_at=started, device_kind="cuda")
    doc["findings"].append(
        Finding(code=Code.DATA_MISMATCH, severity=Severity.FAIL, message="GPU 3 disagrees").to_dict()
    )
    results.write(path, doc)
    assert runner._settle(runner._Run(path, "r1", started, "cuda"), 1, []) == 1
    assert results.load(path)["verdict"]["status"] == "fail"


def test_pytest_arguments_pass_through(tmp_path):
    argv = runner.pytest_argv(
        runner.RunRequest(
            device="cpu",
            profile="quick",
            results=tmp_path,
            timeout_s=1,
            markexpr="matmul",
            inject=("hang",),
            pytest_args=("-x",),
        ),
        "r1",
    )
    assert argv[:3] == [sys.executable, "-m", "pytest"]
    assert argv[-1] == "-x" and ["-m", "matmul"] == argv[argv.index("-m", 3) : argv.index("-m", 3) + 2]
    assert ["--gpu-inject", "hang"] == argv[argv.index("--gpu-inject") : argv.index("--gpu-inject") + 2]
    assert os.path.basename(argv[0]).startswith("python")


def test_a_test_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "GRACE_S", 2.0)
    request = runner.RunRequest(
        device="cpu",
        profile="quick",
        results=tmp_path,
        timeout_s=300,
        duration=60.0,
        pytest_args=("-p", "tests.sigterm_deaf"),
    )

    def stop_once_started():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tmp_path.glob("*.json")):
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_once_started, daemon=True).start()
    began = time.monotonic()
    assert runner.run(request) == 2
    assert time.monotonic() - began < 90
    [doc] = documents(tmp_path)
    assert doc["state"] == "abandoned"
    assert doc["findings"][-1]["message"] == "the test process did not stop within 2 s of SIGTERM"
