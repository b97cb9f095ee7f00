"""Results off the node, end to end: real gpu-burnin processes (the CPU self-test), moto's real S3 API,
the fake API server for preflight and periodic, and the report reading the bucket back."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import outbox
from tests.helpers import REPO, documents
from tests.kube_fake import FakeApiServer

pytestmark = pytest.mark.slow

FAST = ("--device", "cpu", "-m", "matmul", "--duration", "0.4")


def gpu_burnin(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`gpu-burnin ARGS` with the store's patience cut to tests.store_node.PATIENCE_S."""
    command = [sys.executable, "-m", "tests.store_node", *args]
    environ = {**os.environ, "NODE_NAME": "node-a", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=environ)


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_run_puts_one_object_and_the_report_over_the_bucket_shows_it(s3, tmp_path):
    results = tmp_path / "results"
    done = gpu_burnin("run", *FAST, "--results", str(results), "--results-url", s3.url)
    assert done.returncode == 0, done.stderr
    [doc] = documents(results)
    key = f"fleet/node-a/{doc['run_id']}.json"
    assert s3.objects() == {key: (results / f"node-a_{doc['run_id']}.json").read_bytes()}
    assert s3.puts() == [f"/{s3.name}/{key}"]
    assert f"gpu-burnin: result sent to s3://{s3.name}/{key}" in done.stderr
    assert outbox.waiting(results) == 0

    report = gpu_burnin("report", s3.url, "-o", str(tmp_path / "r.html"), "--csv", str(tmp_path / "m.csv"))
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("gpu-burnin report: 1 files (0 broken, skipped), 1 runs, 1 nodes")
    assert "latest run per node: 1 pass, 0 fail, 0 incomplete" in report.stdout
    rows = (tmp_path / "m.csv").read_text().splitlines()[1:]
    assert rows and all(f",{doc['run_id']},node-a," in f",{row}" for row in rows)


def test_with_the_store_down_the_verdict_stands_the_result_waits_and_the_next_run_sends_it(s3, tmp_path):
    results = tmp_path / "results"
    down = gpu_burnin(
        "run", *FAST, "--results", str(results), "--results-url", s3.url, "--metrics-textfile",
        str(tmp_path / "m.prom"), env={"AWS_ENDPOINT_URL": closed_port()},
    )  # fmt: skip
    assert down.returncode == 0, down.stderr  # a pass, as without a store
    [first] = documents(results)
    assert first["verdict"]["status"] == "pass"
    assert "gpu-burnin: warning: 1 result(s) wait in" in down.stderr and "Could not connect" in down.stderr
    assert outbox.waiting(results) == 1 and s3.objects() == {}
    assert 'gpu_burnin_results_outbox{node="node-a"} 1.0' in (tmp_path / "m.prom").read_text()

    again = gpu_burnin(
        "run", *FAST, "--results", str(results), "--results-url", s3.url, "--metrics-textfile", str(tmp_path / "m.prom")
    )
    assert again.returncode == 0, again.stderr
    runs = sorted(d["run_id"] for d in documents(results))
    assert outbox.waiting(results) == 0
    assert sorted(s3.objects()) == [f"fleet/node-a/{run}.json" for run in runs]
    assert s3.puts() == [f"/{s3.name}/fleet/node-a/{run}.json" for run in runs]  # oldest first, each once
    assert 'gpu_burnin_results_outbox{node="node-a"} 0.0' in (tmp_path / "m.prom").read_text()


def test_pytest_itself_sends_its_result_with_gpu_results_url(s3, tmp_path):
    command = [
        sys.executable, "-m", "pytest", "-p", "gputests.plugin", "-p", "no:cacheprovider", "--pyargs", "gputests",
        "-m", "matmul", "--gpu-device", "cpu", "--gpu-duration", "0.4", "--gpu-results", str(tmp_path),
        "--gpu-results-url", s3.url,
    ]  # fmt: skip
    environ = {**os.environ, "NODE_NAME": "node-b"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO, env=environ)
    assert done.returncode == 0, done.stdout + done.stderr
    [doc] = documents(tmp_path)
    sent = (tmp_path / f"node-b_{doc['run_id']}.json").read_bytes()
    assert s3.objects() == {f"fleet/node-b/{doc['run_id']}.json": sent}


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


def test_preflight_json_is_one_line_on_stdout_and_the_result_goes_to_the_store(server, s3, tmp_path):
    server.add_node("n1", labels={"gpu-burnin/preflight": "pending", "nvidia.com/gpu.present": "true"},
                    taints=[{"key": "gpu-burnin/preflight", "effect": "NoSchedule"}])  # fmt: skip
    argv = [
        sys.executable, "-m", "tests.store_node", "preflight", *FAST, "--node", "n1", "--kubeconfig",
        str(server.kubeconfig(tmp_path)), "--results", str(tmp_path / "results"), "--results-url", s3.url,
        "--json", "--stay",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = process.stdout.readline()
        errors = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            errors.append(process.stderr.readline())
            if "waiting to be stopped" in errors[-1] or not errors[-1]:
                break
        process.send_signal(signal.SIGTERM)
        rest, err = process.communicate(timeout=30)
    finally:
        process.kill()
    [doc] = documents(tmp_path / "results")
    assert json.loads(line) == doc and line.endswith("}\n") and rest == "", "".join(errors) + err
    said = "".join(errors)
    assert "released" in said and "gpu-burnin: result sent to" in said  # everything else: stderr
    assert list(s3.objects()) == [f"fleet/n1/{doc['run_id']}.json"]


def test_periodic_json_is_one_line_on_stdout_and_nothing_else(server, tmp_path):
    server.add_node("n1", labels={"nvidia.com/gpu.present": "true"})
    argv = [
        "periodic", *FAST, "--node", "n1", "--kubeconfig", str(server.kubeconfig(tmp_path)),
        "--results", str(tmp_path / "results"), "--json",
    ]  # fmt: skip
    done = gpu_burnin(*argv)
    assert done.returncode == 0, done.stderr
    [doc] = documents(tmp_path / "results")
    assert done.stdout.count("\n") == 1 and json.loads(done.stdout) == doc
    assert "gpu-burnin verdict: PASS" in done.stderr
