"""gpu-burnin preflight and periodic as the DaemonSet and the CronJob run them: real processes,
the CPU self-test, the real Kubernetes client, and the fake API server (tests/kube_fake.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from harness import lock
from harness.baselines import default_dir
from harness.kube import node as nodes
from tests import contract_policy
from tests.helpers import ON_GPU_BOX, REPO, documents
from tests.kube_fake import FakeApiServer

pytestmark = pytest.mark.slow

GPU = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
PREFLIGHT = {"key": "gpu-burnin/preflight", "effect": "NoSchedule"}
UNHEALTHY = {"key": "gpu-burnin/unhealthy", "effect": "NoSchedule"}
GPU_NODE = {"nvidia.com/gpu.present": "true"}
NODE = "/api/v1/nodes/n1"


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


def command(verb: str, tmp_path, kubeconfig, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.cpu_node",  # gpu-burnin, with preflight and periodic allowed on the CPU self-test
        verb,
        "--device",
        "cpu",
        "-m",
        "matmul",
        "--duration",
        "0.4",
        "--node",
        "n1",
        "--kubeconfig",
        str(kubeconfig),
        "--results",
        str(tmp_path / "results"),
        *args,
    ]


def gpu_burnin(verb, tmp_path, kubeconfig, *args, timeout=120) -> subprocess.CompletedProcess:
    argv = command(verb, tmp_path, kubeconfig, *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def joining(server):
    server.add_node(
        "n1",
        labels={"gpu-burnin/preflight": "pending", "team": "vision", **GPU_NODE},
        annotations={"owner": "infra"},
        taints=[GPU, PREFLIGHT],
    )


def unreachable_floors(tmp_path):
    """The packaged baselines, with CPU floors no machine meets."""
    target = tmp_path / "impossible"
    shutil.copytree(default_dir(), target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    cpu = target / "cpu-selftest.toml"
    cpu.write_text(cpu.read_text().replace("floor = 0.000001", "floor = 1000000.0"))
    return target


def test_preflight_passes_through_409_429_and_500_releases_the_node_and_idles_until_stopped(server, tmp_path):
    joining(server)
    other = {"key": "example.com/maintenance", "effect": "NoSchedule"}
    server.fail("GET", NODE, 500)
    edit = lambda s: s.edit_node("n1", lambda n: n["spec"]["taints"].append(other))  # noqa: E731
    server.after("GET", NODE, lambda s: s.after("GET", NODE, edit))  # the read after the burn, not the one before
    server.fail("PATCH", NODE, 429, headers={"Retry-After": "1"})
    metrics = tmp_path / "metrics" / "gpu-burnin.prom"
    argv = command("preflight", tmp_path, server.kubeconfig(tmp_path), "--stay", "--metrics-textfile", str(metrics))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "waiting to be stopped" in line or not line:
            break
    assert any("released" in line for line in lines), "".join(lines) + process.stderr.read()
    assert process.poll() is None  # idle, not exited: a DaemonSet would restart it into a second burn
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    node = server.node("n1")
    assert node["spec"]["taints"] == [GPU, other]
    assert "gpu-burnin/preflight" not in node["metadata"]["labels"] and node["metadata"]["labels"]["team"] == "vision"
    assert node["metadata"]["annotations"]["owner"] == "infra"
    assert nodes.condition(node)["status"] == "True"
    [doc] = documents(tmp_path / "results")
    assert doc["verdict"]["status"] == "pass" and doc["entrypoint"] == "preflight" and doc["node"] == "n1"
    assert nodes.last_result(node)["run_id"] == doc["run_id"]
    assert 'gpu_burnin_verdict{node="n1",status="pass"} 1.0' in metrics.read_text()
    statuses = [(r.method, r.path, r.status) for r in server.requests if r.path == NODE]
    assert statuses == [
        ("GET", NODE, 500),
        ("GET", NODE, 200),  # before the burn: the node exists and may be read
        ("GET", NODE, 200),
        ("PATCH", NODE, 429),
        ("PATCH", NODE, 409),
        ("GET", NODE, 200),
        ("PATCH", NODE, 200),  # the taint
        ("PATCH", NODE, 200),  # the label, last: its removal deletes the pod
    ]


def test_preflight_failure_and_incomplete_keep_the_taint_and_say_why(server, tmp_path):
    joining(server)
    kubeconfig = server.kubeconfig(tmp_path)
    failed = gpu_burnin("preflight", tmp_path, kubeconfig, "--baseline-dir", str(unreachable_floors(tmp_path)))
    assert failed.returncode == 1, failed.stderr
    node = server.node("n1")
    assert PREFLIGHT in node["spec"]["taints"] and node["metadata"]["labels"]["gpu-burnin/preflight"] == "failed"
    assert nodes.condition(node)["status"] == "False" and "LOW_THROUGHPUT" in nodes.condition(node)["reason"]
    assert server.events[-1]["reason"] == "GPUBurnInFailed" and "remediation" in server.events[-1]["message"]
    empty = tmp_path / "empty"
    empty.mkdir()
    # Other baselines than the failed result's: that result is not reused, the node is burned again.
    incomplete = gpu_burnin("preflight", tmp_path, kubeconfig, "--baseline-dir", str(empty), "--preflight-retries", "0")
    assert incomplete.returncode == 2, incomplete.stderr
    node = server.node("n1")
    assert PREFLIGHT in node["spec"]["taints"] and node["metadata"]["labels"]["gpu-burnin/preflight"] == "incomplete"
    assert nodes.condition(node)["status"] == "Unknown" and server.events[-1]["reason"] == "GPUBurnInIncomplete"
    assert len(documents(tmp_path / "results")) == 2


def test_an_unreachable_or_refusing_api_leaves_the_node_and_the_next_attempt_reuses_the_result(server, tmp_path):
    joining(server)
    before = server.node("n1")
    with FakeApiServer() as gone:
        dead = gone.kubeconfig(tmp_path / "dead")
    unreachable = gpu_burnin("preflight", tmp_path, dead, "--api-timeout", "2")
    assert unreachable.returncode == 2 and "could not be read before the burn" in unreachable.stderr
    assert not (tmp_path / "results").exists()  # the node is read first: nothing burned, nothing written

    server.forbid("patch", "nodes")
    kubeconfig = server.kubeconfig(tmp_path)
    refused = gpu_burnin("preflight", tmp_path, kubeconfig)
    assert refused.returncode == 2 and 'cannot patch resource "nodes"' in refused.stderr
    assert server.node("n1") == before
    [doc] = documents(tmp_path / "results")

    with FakeApiServer() as fresh:  # the permission granted, as a pod restarted after the fix would find it
        fresh.add_node("n1", labels={"gpu-burnin/preflight": "pending"}, taints=[GPU, PREFLIGHT])
        began = time.monotonic()
        again = gpu_burnin("preflight", tmp_path, fresh.kubeconfig(tmp_path / "fresh"))
        assert again.returncode == 0, again.stderr
        assert "acting on the recent result" in again.stdout  # not burned again
        assert time.monotonic() - began < 30
        assert fresh.node("n1")["spec"]["taints"] == [GPU]
        assert nodes.last_result(fresh.node("n1"))["run_id"] == doc["run_id"]
    assert len(documents(tmp_path / "results")) == 1


def test_periodic_asks_for_a_failing_node_to_go_and_the_remediator_takes_it_out(server, tmp_path):
    """The CronJob's pod as periodic's service account on n1 (the node agents' rights: no list, no cordon;
    every write checked against the contract), then the remediator's one pass, each a real process."""
    contract_policy.install(server)
    server.add_node("n1", labels=GPU_NODE, taints=[GPU])
    for i in range(2, 21):
        server.add_node(f"n{i}", labels=GPU_NODE)
    kubeconfig = server.kubeconfig(tmp_path / "periodic", token=contract_policy.agent_token(server, "periodic", "n1"))
    before = server.node("n1")
    passed = gpu_burnin("periodic", tmp_path, kubeconfig)
    assert passed.returncode == 0, passed.stderr
    after = server.node("n1")
    assert after["spec"] == before["spec"] and after["metadata"]["labels"] == before["metadata"]["labels"]
    assert nodes.condition(after)["status"] == "True" and server.events == []
    failed = gpu_burnin("periodic", tmp_path, kubeconfig, "--baseline-dir", str(unreachable_floors(tmp_path)))
    assert failed.returncode == 1, failed.stderr
    node = server.node("n1")
    assert "unschedulable" not in node["spec"] and node["spec"]["taints"] == [GPU]
    labels = node["metadata"]["labels"]
    assert (labels["gpu-burnin/health"], labels["gpu-burnin/severity"]) == ("failing", "fail")
    assert [d["entrypoint"] for d in documents(tmp_path / "results")] == ["periodic", "periodic"]
    assert all(r.status < 300 for r in server.requests)  # nothing refused: RBAC and the contract's admission
    remediator = server.kubeconfig(tmp_path / "remediator", token=contract_policy.remediator_token(server))
    argv = [sys.executable, "-m", "harness.cli", "remediator", "--kubeconfig", str(remediator), "--once"]
    once = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert once.returncode == 0, once.stderr
    node = server.node("n1")
    assert node["spec"]["unschedulable"] is True and node["spec"]["taints"] == [GPU, UNHEALTHY]
    assert node["metadata"]["labels"]["gpu-burnin/health"] == "unhealthy"


def test_retest_and_status_for_a_person(server, tmp_path):
    server.add_node("n1", labels={**GPU_NODE, "gpu-burnin/health": "unhealthy"}, taints=[GPU, UNHEALTHY])
    server.add_node("n2", labels={**GPU_NODE, "gpu-burnin/preflight": "pending"}, created="2026-01-01T00:00:00Z")
    kubeconfig = str(server.kubeconfig(tmp_path))
    run = [sys.executable, "-m", "harness.cli"]
    shown = subprocess.run([*run, "status", "--kubeconfig", kubeconfig], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert any(line.startswith("n2") and "STUCK" in line for line in shown.stdout.splitlines()), shown.stdout
    retested = subprocess.run(
        [*run, "retest", "--node", "n1", "--kubeconfig", kubeconfig], capture_output=True, text=True, timeout=60
    )
    assert retested.returncode == 0 and "back in preflight" in retested.stdout
    listed = subprocess.run(
        [*run, "status", "--kubeconfig", kubeconfig, "--json"], capture_output=True, text=True, timeout=60
    )
    states = {s["name"]: s["state"] for s in json.loads(listed.stdout)}
    assert states == {"n1": "preflight-pending", "n2": "preflight-pending"}


def periodic_failure_of(doc: dict, tmp_path) -> None:
    """A newer result of the node beside `doc`: a periodic failure, as a CronJob run would leave it."""
    newer = json.loads(json.dumps(doc))
    newer.update(run_id="29991231T235959Z-ffffff", entrypoint="periodic")
    newer["verdict"] = {"status": "fail", "reasons": ["DATA_MISMATCH: GPU 1"], "exit_code": 1}
    (tmp_path / "results" / f"n1_{newer['run_id']}.json").write_text(json.dumps(newer))


def test_preflight_never_reuses_a_pass_older_than_the_nodes_newest_result(server, tmp_path):
    joining(server)
    server.forbid("patch", "nodes")
    kubeconfig = server.kubeconfig(tmp_path)
    refused = gpu_burnin("preflight", tmp_path, kubeconfig)
    assert refused.returncode == 2, refused.stderr
    [passed] = documents(tmp_path / "results")
    assert passed["verdict"]["status"] == "pass"
    periodic_failure_of(passed, tmp_path)
    with FakeApiServer() as fresh:
        joining(fresh)
        again = gpu_burnin("preflight", tmp_path, fresh.kubeconfig(tmp_path / "fresh"))
        assert "acting on the recent result" not in again.stdout  # burned again, across the newer failure
        assert again.returncode == 0, again.stderr
        assert nodes.last_result(fresh.node("n1"))["run_id"] not in (passed["run_id"], "29991231T235959Z-ffffff")
    assert len(documents(tmp_path / "results")) == 3


def test_a_result_that_calls_itself_a_preflight_is_never_reused(server, tmp_path):
    """`run` writes a pass; edited to say entrypoint = preflight, it is still not this node's own
    preflight (whose run id preflight keeps before it burns), so preflight burns."""
    joining(server)
    ran = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "-m", "matmul", "--duration", "0.4"]
        + ["--results", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_NAME": "n1"},
    )
    assert ran.returncode == 0, ran.stderr
    [path] = (tmp_path / "results").glob("n1_*.json")
    forged = json.loads(path.read_text())
    forged["entrypoint"] = "preflight"
    path.write_text(json.dumps(forged))
    done = gpu_burnin("preflight", tmp_path, server.kubeconfig(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "acting on the recent result" not in done.stdout
    assert nodes.last_result(server.node("n1"))["run_id"] != forged["run_id"]
    assert len(documents(tmp_path / "results")) == 2


def test_the_internal_options_cannot_be_given_from_outside(tmp_path):
    pytest_args = [sys.executable, "-m", "pytest", "-p", "gputests.plugin", "--pyargs", "gputests", "-m", "matmul"]
    for flag, value in (("--gpu-entrypoint", "preflight"), ("--gpu-run-id", "x/../../../ESCAPED")):
        given = subprocess.run([*pytest_args, flag, value], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert given.returncode == 4 and "unrecognized arguments" in given.stderr, given.stderr
    # The parent's word through the environment, with no parent holding the node's lock for it.
    child = '{"run_id": "20261207T000000Z-abcdef", "entrypoint": "preflight", "gpu_node": false}'
    env = {**os.environ, "GPU_BURNIN_CHILD": child}
    claimed = subprocess.run(
        [*pytest_args, "--gpu-device", "cpu", "--gpu-results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert claimed.returncode == 4 and "burn lock is not held" in claimed.stderr, claimed.stdout + claimed.stderr
    assert not list((tmp_path / "r").glob("*.json"))
    escape = '{"run_id": "x/../../../ESCAPED", "entrypoint": "run", "gpu_node": false}'
    traversal = subprocess.run(
        [*pytest_args, "--gpu-device", "cpu", "--gpu-results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "GPU_BURNIN_CHILD": escape},
    )
    assert traversal.returncode == 4 and "GPU_BURNIN_CHILD is malformed" in traversal.stderr
    assert not list(tmp_path.rglob("*ESCAPED*"))


def test_a_second_run_on_the_node_exits_4_at_once_naming_the_holder(server, tmp_path):
    joining(server)
    before = server.node("n1")
    (tmp_path / "results").mkdir()
    with lock.hold(tmp_path / "results", "20261207T000000Z-holder"):
        began = time.monotonic()
        second = gpu_burnin("preflight", tmp_path, server.kubeconfig(tmp_path))
        assert second.returncode == 4, second.stderr
        assert f"pid {os.getpid()}, run '20261207T000000Z-holder'" in second.stderr
        assert second.stderr.count("\n") == 1
        run = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "--results", str(tmp_path / "results")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 4 and "another gpu-burnin run is burning this node's GPUs" in run.stderr
        assert time.monotonic() - began < 60  # at once: neither burned
    assert server.node("n1") == before
    assert documents(tmp_path / "results") == []


def test_a_node_that_is_missing_or_forbidden_is_exit_4_before_any_burn(server, tmp_path):
    kubeconfig = server.kubeconfig(tmp_path)
    missing = gpu_burnin("preflight", tmp_path, kubeconfig)
    assert missing.returncode == 4 and "node 'n1' does not exist" in missing.stderr, missing.stderr
    joining(server)
    server.forbid("get", "nodes")
    forbidden = gpu_burnin("periodic", tmp_path, kubeconfig)
    assert forbidden.returncode == 4 and "cannot read node 'n1'" in forbidden.stderr, forbidden.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(ON_GPU_BOX, reason="needs a machine where no NVIDIA GPU is visible")
@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_a_gpu_node_where_no_gpu_is_visible_fails_gpu_missing_and_stays_out(server, tmp_path, device):
    joining(server)  # labelled nvidia.com/gpu.present=true
    argv = command("preflight", tmp_path, server.kubeconfig(tmp_path))
    argv[argv.index("tests.cpu_node")] = "harness.cli"  # the product itself: no CPU self-test here
    argv[argv.index("--device") + 1] = device
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1, done.stderr
    [doc] = documents(tmp_path / "results")
    assert doc["device_kind"] == "cuda" and "GPU_MISSING" in [f["code"] for f in doc["findings"]]
    node = server.node("n1")
    assert PREFLIGHT in node["spec"]["taints"] and node["metadata"]["labels"]["gpu-burnin/preflight"] == "failed"


def test_a_sigterm_before_the_burn_exits_at_once_burning_nothing_and_releasing_nothing(server, tmp_path):
    """In a container the process is PID 1, which ignores a signal left to its default action: the handler is
    installed first thing, so a SIGTERM that comes while the node is read (before the lock, before the burn)
    is heard: exit 2 at once, no burn, no change to the node."""
    joining(server)
    argv = command("preflight", tmp_path, server.kubeconfig(tmp_path), "--stay")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    server.before("GET", NODE, lambda s: process.send_signal(signal.SIGTERM))
    began = time.monotonic()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert time.monotonic() - began < 30
    assert "stopped by SIGTERM before the burn: nothing was run" in err
    assert [r.method for r in server.requests] == ["GET"]  # the node read, nothing written
    assert not (tmp_path / "results").exists() or documents(tmp_path / "results") == []
    node = server.node("n1")
    assert PREFLIGHT in node["spec"]["taints"] and node["metadata"]["labels"]["gpu-burnin/preflight"] == "pending"


def test_an_incomplete_preflight_is_burned_again_before_it_needs_a_person_and_a_failure_never(server, tmp_path):
    joining(server)
    kubeconfig = server.kubeconfig(tmp_path)
    empty = tmp_path / "empty"  # no baseline: every run is incomplete
    empty.mkdir()
    retry = ("--preflight-retries", "2", "--preflight-retry-wait", "0.2")
    incomplete = gpu_burnin("preflight", tmp_path, kubeconfig, "--baseline-dir", str(empty), *retry)
    assert incomplete.returncode == 2, incomplete.stderr
    assert incomplete.stdout.count("was incomplete; burning again") == 2
    runs = documents(tmp_path / "results")
    assert len(runs) == 3 and len({d["run_id"] for d in runs}) == 3  # each a fresh burn, its own result
    assert all(d["verdict"]["status"] == "incomplete" for d in runs)
    # The node was acted on once, after the last attempt: the label kept the pod until then.
    assert [r.method for r in server.requests if r.path == NODE].count("PATCH") == 1
    assert server.node("n1")["metadata"]["labels"]["gpu-burnin/preflight"] == "incomplete"
    assert [e["reason"] for e in server.events] == ["GPUBurnInIncomplete"]

    server.edit_node("n1", lambda n: n["metadata"]["labels"].update({"gpu-burnin/preflight": "pending"}))
    failed = gpu_burnin("preflight", tmp_path, kubeconfig, "--baseline-dir", str(unreachable_floors(tmp_path)), *retry)
    assert failed.returncode == 1, failed.stderr
    assert "burning again" not in failed.stdout
    assert len(documents(tmp_path / "results")) == 4  # a failure is never retried into a pass


@pytest.mark.parametrize(
    "given",
    [
        ["--preflight-retries", "-1"],
        ["--preflight-retries", "11"],
        ["--preflight-retries", "x"],
        ["--preflight-retry-wait", "0"],
    ],
)
def test_bad_retry_flags_exit_4_before_anything_runs(server, tmp_path, given):
    joining(server)
    done = gpu_burnin("preflight", tmp_path, server.kubeconfig(tmp_path), *given)
    assert done.returncode == 4 and given[0] in done.stderr
    assert server.requests == []
