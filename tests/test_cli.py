"""`gpu-burnin run` as a user runs it: a real process, real exit codes, real files."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import harness
from harness import cli, devices, entrypoints, options, results, runner
from harness.baselines import default_dir
from harness.groups import MatmulSection
from harness.kube import actions
from harness.records import Code, Finding, Severity
from harness.results import ResultDocument, RunState
from tests.helpers import alive, documents

FAST = ("--duration", "0.4")


def gpu_burnin(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "harness.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def requested(monkeypatch, *args: str) -> runner.RunRequest:
    """What `gpu-burnin run ARGS` would hand the runner, without running it."""
    seen = []
    monkeypatch.setattr(runner, "run", lambda request: seen.append(request) or 2)
    assert cli.main(["run", *args]) == 2
    return seen[0]


@pytest.mark.slow
def test_the_cpu_self_test_passes_shows_progress_and_prints_its_result_as_json(tmp_path):
    done = gpu_burnin("run", "--device", "cpu", "-m", "matmul", "--results", str(tmp_path), "--duration", "6", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    [doc] = documents(tmp_path)
    assert json.loads(done.stdout) == doc  # stdout holds the document and nothing else
    assert doc["verdict"]["status"] == "pass" and doc["state"] == "finished"
    assert doc["selection"] == "matmul"
    uuid = doc["devices"][0]["uuid"]
    assert {m["metric"] for m in doc["measurements"] if m["gpu"] == uuid} >= {
        "matmul.fp32.tflops",
        "matmul.bf16.tflops",
    }
    assert "gpu-burnin verdict: PASS" in done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("CPU 0   matmul ")]
    # Figures, or the phase a slow start is in ("ready" when the worker took seconds to start on a busy machine).
    assert progress and all(any(w in line for w in ("TFLOP/s", "start", "ready")) for line in progress), done.stderr


def test_auto_means_the_gpus_wherever_a_driver_is_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(devices, "DRIVER_MARKERS", (tmp_path / "absent",))
    without = requested(monkeypatch, "--device", "auto", "--results", str(tmp_path))
    assert "no NVIDIA driver on this machine; running the CPU self-test" in capsys.readouterr().err
    monkeypatch.setattr(devices, "DRIVER_MARKERS", (tmp_path,))  # a driver, whatever NVML answers
    with_driver = requested(monkeypatch, "--device", "auto", "--results", str(tmp_path))
    assert (without.options.device, with_driver.options.device) == ("cpu", "cuda")
    assert ["--gpu-device", "cpu"] == list(without.argv[without.argv.index("--gpu-device") :][:2])
    assert without.options.profile.section(MatmulSection).size == 128  # the self-test's sizes, decided once


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["run", "--duration", "-1"], "argument --duration: expected a positive, finite number of seconds, got -1"),
        (["run", "--duration", "inf"], "argument --duration: expected a positive, finite number of seconds, got inf"),
        (["run", "--duration", "1e308"], "argument --duration: 1e308 s is more than a week"),
        (["run", "--hang-timeout", "inf"], "argument --hang-timeout: expected a positive, finite number of seconds"),
        (["run", "--timeout", "nan"], "argument --timeout: expected a positive, finite number of seconds, got nan"),
        (["run", "--hang-timeout", "1e-6"], "argument --hang-timeout: 1e-6 s is below the minimum of 3 s"),
        (["run", "--duration", "0.001"], "argument --duration: 0.001 s is below the minimum of 0.1 s"),
        (["run", "--timeout", "1"], "argument --timeout: 1 s is below the minimum of 10 s"),
        (["preflight", "--hang-timeout", "0.5"], "argument --hang-timeout: 0.5 s is below the minimum of 3 s"),
        (["run", "--expect-gpus", "0"], "argument --expect-gpus: expected at least 1, got 0"),
        (["run", "--device", "cpu", "--expect-gpus", "8"], "--expect-gpus: counts GPUs: it cannot be used with"),
        (["run", "--inject", "melt"], "argument --inject: unknown fault 'melt'"),
        (["run", "--device", "cpu", "--inject", "hang:3"], "--inject: hang:3 names device 3; this node has [0, 1]"),
        (["run", "--device", "cpu", "-m", "matmul and ("], "-m: 'matmul and (' is not a marker expression"),
        (["run", "--device", "cpu", "-m", "nvlnk"], "-m: unknown marker 'nvlnk'; the markers are matmul, memory,"),
        (["run", "--device", "cpu", "-m", "matmul or nvlnk"], "-m: unknown marker 'nvlnk'; the markers are"),
        (["run", "--device", "cpu", "-m", "matmul and memory"], "-m: 'matmul and memory' selects no test: each"),
        (["periodic", "--node", "n1", "-m", "slow"], "-m: unknown marker 'slow'; the markers are matmul"),
        (["run", "--baseline", "a.toml", "--baseline-dir", "b"], "--baseline: give a baseline file or a baseline"),
        (["run", "--baseline", "no-such.toml"], "no-such.toml: cannot read: No such file or directory"),
        (["run", "--device", "cpu", "--xid-table", "/nonexistent"], "--xid-table: /nonexistent: cannot read: No such"),
        (["run", "--baseline", ""], "argument --baseline: expected a path, got an empty string"),
        (["run", "--baseline-dir", ""], "argument --baseline-dir: expected a path, got an empty string"),
        ([], "the following arguments are required: command"),
        (["run", "-q"], "unrecognized arguments: -q; pytest's own arguments go after -- (see gpu-burnin run --help)"),
        (["status", "--bogus"], "unrecognized arguments: --bogus (see gpu-burnin status --help)"),
        (["baseline", "propose", "r", "--baseline", "b", "-y"], ": -y (see gpu-burnin baseline propose --help)"),
        (["preflight", "--preflight-taint", "bad"], "argument --preflight-taint: 'bad' is not KEY[=VALUE]:NoSchedule"),
        (["remediator", "--max-unhealthy-share", "2"], "argument --max-unhealthy-share: expected a fraction from 0 to"),
        # The brake is the remediator's alone: the node agents take no part in it.
        (["periodic", "--max-unhealthy-share", "0.05"], "unrecognized arguments: --max-unhealthy-share"),
        (["watch", "--max-unhealthy-share", "0.05"], "unrecognized arguments: --max-unhealthy-share 0.05"),
        (["watch", "--on-critical", "evict"], "argument --on-critical: invalid choice: 'evict'"),
        (["preflight", "--device", "cpu"], "--node: name the node: --node NAME, or NODE_NAME from the downward API"),
        (
            ["preflight", "--device", "cuda", "--node", "n1", "--kubeconfig", "no-such"],
            "gpu-burnin: error: no-such: --kubeconfig: no such kubeconfig file",
        ),
        (["retest"], "the following arguments are required: --node"),
        # A node's verdict comes from its GPUs: never from the CPU self-test.
        (["preflight", "--device", "cpu", "--node", "n1"], "--device: preflight decides about a GPU node"),
        (["periodic", "--device", "cpu", "--node", "n1"], "--device: periodic decides about a GPU node"),
        # Only this tool's keys, in Kubernetes' syntax, and taints that never evict.
        (
            ["preflight", "--node", "n1", "--preflight-taint", "nvidia.com/gpu:NoSchedule"],
            "--preflight-taint: 'nvidia.com/gpu' is not one of gpu-burnin's keys",
        ),
        (["preflight", "--node", "n1", "--preflight-label", "team=x"], "--preflight-label: 'team' is not one of"),
        (
            ["retest", "--node", "n1", "--unhealthy-taint", "nvidia.com/gpu:NoSchedule"],
            "--unhealthy-taint: 'nvidia.com/gpu' is not one of gpu-burnin's keys",
        ),
        (
            ["retest", "--node", "n1", "--preflight-taint", "gpu-burnin/bad key!:NoSchedule"],
            "--preflight-taint: 'gpu-burnin/bad key!' is not a valid key",
        ),
        (
            ["retest", "--node", "n1", "--unhealthy-taint", "gpu-burnin/x:NoExecute"],
            "argument --unhealthy-taint: 'gpu-burnin/x:NoExecute' is not KEY[=VALUE]:NoSchedule",
        ),
        (
            ["retest", "--node", "n1", "--unhealthy-label", "gpu-burnin/health=no way"],
            "argument --unhealthy-label: 'no way' is not a valid value",
        ),
        (["retest", "--node", "n1", "--mark-prefix", "gpu burnin"], "argument --mark-prefix: 'gpu burnin' is not"),
        (
            [
                "retest",
                "--node",
                "n1",
                "--mark-prefix",
                "example.com/",
                "--preflight-taint",
                "gpu-burnin/preflight:NoSchedule",
            ],
            "--preflight-taint: 'gpu-burnin/preflight' is not one of gpu-burnin's keys: they begin with 'example.com/'",
        ),
        # Node names are checked before any API call, or any burn.
        (["retest", "--node", ""], "argument --node: '' is not a node name"),
        (["preflight", "--node", "Bad_Node"], "argument --node: 'Bad_Node' is not a node name"),
        (["periodic", "--node", "n1/../x"], "argument --node: 'n1/../x' is not a node name"),
    ],
)
def test_bad_input_is_one_line_exit_4_and_runs_nothing(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.setattr(runner, "run_for", lambda request: pytest.fail("the suite ran"))
    ran = []
    monkeypatch.setattr(runner, "run", lambda request: ran.append(request) or 0)
    assert cli.main(args) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpu-burnin: error: ") and message in err, err
    assert ran == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "preflight", "periodic"])
def test_a_metrics_textfile_that_cannot_be_written_is_found_before_the_burn(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_for", lambda request: pytest.fail("the suite ran"))
    monkeypatch.setattr(runner, "run", lambda request: pytest.fail("the suite ran"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for path, problem in [
        (tmp_path, "is a directory"),
        (blocker / "gpu-burnin.prom", "is not a directory"),
        (tmp_path / "new" / "dir" / ".." / "gpu-burnin.prom", ""),
        ("", "expected a file name"),
    ]:
        code = cli.main([command, "--device", "cpu", "--node", "n1", "--metrics-textfile", str(path), "--bogus"])
        err = capsys.readouterr().err
        assert code == 4
        if problem:
            assert err.startswith("gpu-burnin: error: argument --metrics-textfile: ") and problem in err, err
        else:  # a directory still to be made is made when the file is written
            assert "--metrics-textfile" not in err and "--bogus" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_version_is_printed_and_exits_0(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gpu-burnin {harness.__version__}"


def test_a_results_directory_that_cannot_be_made_exits_4(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = gpu_burnin("run", "--device", "cpu", "--results", str(blocker / "results"), *FAST)
    assert done.returncode == 4
    assert f"{blocker / 'results'}: cannot create the results directory" in done.stderr


def test_an_error_the_test_process_finds_names_gpu_burnins_flags_not_pytests(tmp_path):
    h100 = default_dir() / "h100-sxm-80gb.toml"
    done = gpu_burnin("run", "--device", "cpu", "--baseline", str(h100), "--results", str(tmp_path), *FAST)
    assert done.returncode == 4
    assert f"{h100}: names: --baseline: this baseline covers" in done.stderr and "--gpu-" not in done.stderr


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


@pytest.mark.slow
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
        "10",
        *FAST,
    )
    assert time.monotonic() - began < 60
    assert done.returncode == 2
    [doc] = documents(tmp_path)
    assert doc["state"] == "abandoned" and doc["verdict"]["status"] == "incomplete"
    codes = [f["code"] for f in doc["findings"]]
    assert "RUN_TIMEOUT" in codes and "FAULT_INJECTED" in codes  # the checkpoint's findings are kept
    assert "did not finish within --timeout 10 s" in done.stderr


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_says_so_once_and_keeps_the_running_tests_time_and_figures(tmp_path, stop):
    """Ctrl-C (or a pod's SIGTERM) in the middle of matmul: once its bf16 figures are in, while fp16 burns."""
    command = [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "-m", "matmul", "--duration", "24"]
    process = subprocess.Popen(
        [*command, "--results", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(" matmul  fp16 " in line for line in lines):
        time.sleep(0.2)
    assert process.poll() is None, "".join(lines)
    process.send_signal(stop)
    assert process.wait(timeout=60) == 2
    reader.join(timeout=10)
    output = "".join(lines)
    assert output.count(f"Interrupted: the run was interrupted by {stop.name} !") == 1, output
    assert "KeyboardInterrupt" not in output and "--full-trace" not in output and "Traceback" not in output
    [doc] = documents(tmp_path)
    assert doc["state"] == "finished" and doc["verdict"]["status"] == "incomplete"
    [test] = doc["tests"]
    assert test["outcome"] == "interrupted" and test["duration_s"] > 1.0
    measured = {(m["metric"], m["gpu"]) for m in doc["measurements"]}
    assert {("matmul.bf16.tflops", d["uuid"]) for d in doc["devices"]} <= measured
    codes = {(f["code"], f["severity"]) for f in doc["findings"]}
    assert ("INTERRUPTED", "incomplete") in codes and ("TEST_ERROR", "incomplete") not in codes, codes
    assert not [c for c, severity in codes if severity == "fail"]


def test_a_child_that_dies_without_a_final_result_is_finished_as_incomplete(tmp_path, capsys):
    started = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    path = results.path_for(tmp_path, "node", "r1")
    assert runner._settle(runner._Run(path, "r1", started, "cuda"), -9, []) == 2
    doc = results.load(path)
    assert doc.state is RunState.ABANDONED and doc.device_kind == "cuda"
    assert doc.findings[0].message == "the test process ended (exit code -9) before it wrote a final result"


def test_a_failure_found_before_the_run_died_still_fails_it(tmp_path, capsys):
    started = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    path = results.path_for(tmp_path, "node", "r1")
    doc = ResultDocument(run_id="r1", node="node", started_at=started, device_kind="cuda")
    doc.findings.append(Finding(code=Code.DATA_MISMATCH, severity=Severity.FAIL, message="GPU 3 disagrees"))
    results.write(path, doc)
    assert runner._settle(runner._Run(path, "r1", started, "cuda"), 1, []) == 1
    assert results.load(path).verdict.status == "fail"


def test_the_child_gets_every_option_and_the_pytest_arguments_last(tmp_path, monkeypatch):
    request = requested(
        monkeypatch, "--device", "cpu", "-m", "matmul", "--inject", "hang", "--results", str(tmp_path), "--", "-x"
    )
    argv = request.argv
    assert list(argv[:3]) == [sys.executable, "-m", "pytest"] and os.path.basename(argv[0]).startswith("python")
    assert argv[-1] == "-x"
    for flag, value in [("-m", "matmul"), ("--gpu-inject", "hang:0"), ("--gpu-results", str(tmp_path))]:
        assert [flag, value] == list(argv[argv.index(flag, 3) :][:2])
    assert not any(arg.startswith(("--gpu-run-id", "--gpu-entrypoint")) for arg in argv)  # no such options
    assert (request.options.entrypoint, request.options.gpu_node) == ("run", False)  # the child gets them by env


def test_the_default_timeout_grows_with_the_resolved_duration(tmp_path, monkeypatch):
    cpu = requested(monkeypatch, "--device", "cpu", "--results", str(tmp_path))
    assert cpu.timeout_s == options.TIMEOUT_BASE_S + options.TIMEOUT_PER_DURATION * 4.0  # the self-test caps it at 4 s
    soak = requested(monkeypatch, "--profile", "soak", "--results", str(tmp_path))
    assert soak.timeout_s == options.TIMEOUT_BASE_S + options.TIMEOUT_PER_DURATION * 1800.0


@pytest.mark.slow
def test_a_test_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "GRACE_S", 2.0)
    values = {"device": "cpu", "duration": 60.0, "results": tmp_path, "run_id": "r-deaf"}
    request = runner.RunRequest(
        options=options.resolve(values),
        argv=tuple(runner.pytest_argv(values, ["-p", "tests.sigterm_deaf"])),
        timeout_s=300,
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


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task") if os.path.exists(f"/proc/{parent}/task") else []:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = [int(k) for k in children.read().split()]
            except OSError:
                continue
            found.update(kids)
            todo += kids
    return found


@pytest.mark.slow
def test_sigkill_of_gpu_burnin_run_leaves_nothing_burning_and_nothing_written_later(tmp_path):
    command = [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "--results", str(tmp_path)]
    process = subprocess.Popen([*command, "--duration", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob("*.json")):
        time.sleep(0.2)
    time.sleep(1.0)  # the workers are burning now
    below = _descendants(process.pid)
    assert below, "the run started no test process"
    process.kill()
    process.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(pid) for pid in below):
        time.sleep(0.2)
    assert not [pid for pid in below if alive(pid)]
    [path] = tmp_path.glob("*.json")
    before = path.read_bytes()
    time.sleep(2.0)
    assert path.read_bytes() == before and list(tmp_path.glob("*.json")) == [path]
    doc = json.loads(before)
    assert doc["state"] == "running" and doc["verdict"]["status"] == "incomplete"


def test_the_command_line_loads_no_kubernetes_client_pandas_or_torch_until_a_command_needs_them():
    """`gpu-burnin run` on a GPU box needs no Kubernetes client; the node commands load no pandas."""
    code = (
        "import sys, harness.cli; harness.cli.build_parser()\n"
        "print(sorted(m for m in ('kubernetes', 'pandas', 'plotly', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


KUBECONFIGS = {
    "garbage": (b"apiVersion: v1\nclusters: [\n", "not a YAML kubeconfig"),
    "scalar": (b"42\n", "a YAML mapping is needed, this is a int"),
    "list": (b"- a\n", "a YAML mapping is needed, this is a list"),
    "tag": (b"!!python/object/apply:os.system ['touch PWNED']\n", "not a YAML kubeconfig"),
    "utf8": (b"apiVersion: v1\nkind: Config\n\xff\xfe: x\n", "not UTF-8 text"),
    "tabs": (b"apiVersion: v1\n\tkind: Config\n", "not a YAML kubeconfig"),
    "clusters": (b"apiVersion: v1\nclusters: 3\n", "clusters must be a list"),
    "empty": (b"", "a YAML mapping is needed"),
}
NOT_A_URL = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "SERVER"}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


@pytest.mark.parametrize("kind", [*KUBECONFIGS, "no-url", "ftp-url", "bad-port"])
def test_a_bad_kubeconfig_is_one_line_naming_the_file(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"{kind}.yaml"
    if kind in KUBECONFIGS:
        content, message = KUBECONFIGS[kind]
    else:
        server = {"no-url": "not a url", "ftp-url": "ftp://example.com", "bad-port": "https://h:port"}[kind]
        content, message = NOT_A_URL.replace("SERVER", server).encode(), "is not an https:// URL"
    path.write_bytes(content)
    assert cli.main(["status", "--kubeconfig", str(path), "--api-timeout", "1"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"gpu-burnin: error: {path}: --kubeconfig: ") and message in err, err
    assert not (tmp_path / "PWNED").exists()


def test_status_escapes_what_nodes_carry_before_it_reaches_a_terminal():
    hostile = actions.NodeState(
        name="n1",
        state="healthy",
        since="",
        for_s=None,
        run_id="\x1b]0;owned\x07",
        codes=("X\x1b[2J", "\u202egnp.exe"),
        stuck=False,
    )
    text = "\n".join(entrypoints.status_table([hostile], 7200))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b]0;owned\\x07" in text and "X\\x1b[2J" in text and "\\u202egnp.exe" in text


LONG = "9" * 400  # longer than any file name a filesystem takes: looking it up fails with ENAMETOOLONG


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--baseline", "/dev/zero"], "/dev/zero: is not a regular file (a character device)"),
        (["run", "--device", "cpu", "--xid-table", "/dev/zero"], "/dev/zero: is not a regular file"),
        (["run", "--device", "cpu", "--metrics-textfile", LONG], "File name too long"),
        (["run", "--device", "cpu", "--baseline-dir", LONG], "File name too long"),
        (["status", "--kubeconfig", LONG], "File name too long"),
        (["report", ".", "--baseline-dir", LONG], "File name too long"),
        (["run", "--device", "cpu", "--metrics-textfile", "\x1b[2J"], "\\x1b[2J is a directory"),
        (["retest", "--node", "\x1b]0;owned\x07"], "\\x1b]0;owned\\x07"),
    ],
)
def test_hostile_paths_and_names_are_one_escaped_line_exit_4(args, message, tmp_path, monkeypatch, capsys):
    """A device named as a file is never read (it would never end), a name too long to look up is a usage
    error, not a traceback, and what the user typed reaches the terminal escaped."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "\x1b[2J").mkdir()  # a directory whose name clears the screen
    monkeypatch.setattr(runner, "run_for", lambda request: pytest.fail("the suite ran"))
    assert cli.main(args) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpu-burnin: error: ") and message in err, err
    assert "\x1b" not in err and "\x07" not in err and "Traceback" not in err
