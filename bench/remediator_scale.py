"""The brake at fleet scale: `gpu-burnin remediator` against 12,500 GPU nodes of realistic size.

    python bench/remediator_scale.py [--nodes 12500] [--failing 600] [--max-nodes 50] [--out FILE]

The fake API server of tests/ runs in this process with --nodes GPU nodes, each the size of a real GPU
node as `kubectl get node -o json` shows one (about 19 KB: some 80 labels from node-feature-discovery
and GPU feature discovery, their managed fields, 50 container images, conditions, capacity). The real
command (`python -m harness.cli remediator`) runs as a child process with the remediator's own
credentials and RBAC. Once it leads and has listed the nodes, --failing nodes are labelled failing
within one second, as their node agents would (a bad driver roll-out). The bench waits until the
child says it has served them, checks that exactly the brake's number were taken out and every other
request braked with one Warning Event, stops the child and reports: seconds from the first request to
settled, the child's peak RSS (the kernel's high-water mark, VmHWM), and its API calls by kind. Goal:
under 256 MB and under 30 s.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.node_model import node_parts  # noqa: E402 - after the path above
from harness.remediator.brake import limit  # noqa: E402
from tests import contract_policy  # noqa: E402
from tests.kube_fake import FakeApiServer  # noqa: E402

RSS_BAR_MB = 256.0
SETTLE_BAR_S = 30.0
SELECTOR = "nvidia.com/gpu.present=true"


def build(server: FakeApiServer, count: int) -> tuple[int, int]:
    """The fleet; the size in bytes of one node's JSON as the API server would send it, and of its metadata."""
    for index in range(count):
        parts = node_parts(index)
        server.add_node(
            parts["name"],
            labels=parts["labels"],
            annotations=parts["annotations"],
            taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
            conditions=parts["conditions"],
            created="2026-11-01T00:00:00Z",
            status=parts["status"],
            managed_fields=parts["managed"],
        )
    node = server.node(node_parts(0)["name"])
    return len(json.dumps(node)), len(json.dumps({"metadata": node["metadata"]}))


def ask(server: FakeApiServer, names: list[str]) -> None:
    """Each node's agent asks for it to be taken out (its request as it lands), all within a second."""
    when = dt.datetime.now(dt.UTC)
    with server.together():  # the watch sees them after the last, as after a burst from hundreds of nodes
        _ask(server, names, when)


def _ask(server: FakeApiServer, names: list[str], when: dt.datetime) -> None:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    requested = json.dumps({"by": "gpu-burnin watch", "reason": "Xid 79", "codes": ["XID"], "time": stamp})

    def change(node: dict[str, Any]) -> None:
        node["metadata"]["labels"].update({"gpu-burnin/health": "failing", "gpu-burnin/severity": "fail"})
        node["metadata"]["annotations"]["gpu-burnin/requested"] = requested

    for name in names:
        server.edit_node(name, change)


class Child:
    """The remediator process, its stderr read line by line on a thread (a full pipe would stop it)."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[tuple[float, str]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.changed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.changed.notify_all()

    def wait_for(self, test: Any, timeout: float) -> float | None:
        """When the first line passing `test` came (monotonic), or None after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, line in self.lines:
                    if test(line):
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    return None
                self.changed.wait(min(left, 0.5))

    def peak_mb(self) -> float:
        """The child's peak RSS: the kernel's high-water mark of its own memory (VmHWM). Not wait4's
        ru_maxrss: exec keeps the high-water mark of the memory it replaces, and that is this process's,
        whose fake API server holds the whole fleet."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024

    def stop(self) -> tuple[int, float]:
        """SIGTERM; (exit code, peak RSS in MB, read just before)."""
        peak = self.peak_mb()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return self.process.returncode, peak


def served(lines: list[tuple[float, str]]) -> tuple[int, int]:
    """Nodes taken out and requests braked, as the child's "pass done" lines add them up."""
    taken = braked = 0
    for _, line in lines:
        if match := re.search(r"pass done: (\d+) taken out, (\d+) braked", line):
            taken, braked = taken + int(match[1]), braked + int(match[2])
    return taken, braked


def calls(server: FakeApiServer, since: int, until: int | None = None) -> dict[str, int]:
    """The requests from `since` to `until`, by method and path (node and lease names folded)."""
    kinds: collections.Counter[str] = collections.Counter()
    for r in server.requests[since:until]:
        path = re.sub(r"/nodes/[^/]+", "/nodes/NAME", r.path)
        path = re.sub(r"/leases/[^/]+", "/leases/NAME", path)
        watch = " (watch)" if r.query.get("watch") == "true" else ""
        table = " (Table)" if r.query.get("includeObject") else ""
        kinds[f"{r.method} {path}{watch}{table}"] += 1
    return dict(sorted(kinds.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=12_500)
    parser.add_argument("--failing", type=int, default=600)
    parser.add_argument("--max-nodes", type=int, default=50, help="the child's --max-unhealthy-nodes")
    parser.add_argument("--out", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args()
    expected = min(args.failing, limit(args.nodes, 0.05, args.max_nodes))
    with tempfile.TemporaryDirectory() as tmp, FakeApiServer(history=20_000) as server:
        began = time.monotonic()
        node_bytes, metadata_bytes = build(server, args.nodes)
        built = time.monotonic() - began
        print(f"fleet: {args.nodes} GPU nodes of {node_bytes / 1024:.1f} KB each, built in {built:.0f} s")
        token = contract_policy.remediator_token(server)
        kubeconfig = server.kubeconfig(Path(tmp) / "kubeconfig", token=token)
        argv = [
            sys.executable,
            "-m",
            "harness.cli",
            "remediator",
            "--kubeconfig",
            str(kubeconfig),
            "--identity",
            "bench",
            "--max-unhealthy-nodes",
            str(args.max_nodes),
            "--metrics-port",
            "0",
        ]
        first = len(server.requests)
        started = time.monotonic()
        child = Child(argv, {**os.environ, "PYTHONPATH": str(REPO)})
        listed = child.wait_for(lambda line: "listed" in line and "GPU nodes" in line, 300)
        leading = child.wait_for(lambda line: "leading" in line, 60)
        if listed is None or leading is None:
            child.stop()
            print("the remediator did not start:\n" + "\n".join(line for _, line in child.lines), file=sys.stderr)
            return 2
        time.sleep(3)  # its first passes over a quiet fleet
        before = len(server.requests)
        names = [node_parts(i)["name"] for i in range(0, args.nodes, max(1, args.nodes // args.failing))][
            : args.failing
        ]
        asked = time.monotonic()
        ask(server, names)
        asking_s = time.monotonic() - asked
        done = None
        while time.monotonic() - asked < SETTLE_BAR_S * 4 and child.process.poll() is None:
            with child.changed:
                if served(child.lines) == (expected, args.failing - expected):
                    done = child.lines[-1][0]
                    break
                child.changed.wait(0.5)
        startup, storm = calls(server, first, before), calls(server, before)
        code, rss_mb = child.stop()
        taken = sum(
            1 for name in names if server.node(name)["metadata"]["labels"].get("gpu-burnin/health") == "unhealthy"
        )
        reasons = collections.Counter(e["reason"] for e in server.events)
        exact = (taken, reasons["GPUBurnInTakenOut"], reasons["GPUBurnInBraked"]) == (
            expected,
            expected,
            args.failing - expected,
        )
    figures = {
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}",
        "date": dt.date.today().isoformat(),
        "nodes": args.nodes,
        "node_kb": round(node_bytes / 1024, 1),
        "metadata_kb": round(metadata_bytes / 1024, 1),
        "whole_list_mb": round(node_bytes * args.nodes / 2**20),
        "metadata_list_mb": round(metadata_bytes * args.nodes / 2**20),
        "failing": args.failing,
        "asked_within_s": round(asking_s, 2),
        "brake_limit": expected,
        "taken_out": taken,
        "taken_out_events": reasons["GPUBurnInTakenOut"],
        "braked_events": reasons["GPUBurnInBraked"],
        "exact": exact,
        "start_to_listed_s": round(listed - started, 1),
        "settle_s": round(done - asked, 1) if done is not None else None,
        "peak_rss_mb": round(rss_mb, 1),
        "exit_code": code,
        "api_calls_to_start": startup,
        "api_calls_from_the_requests_to_settled": storm,
    }
    print(json.dumps(figures, indent=1))
    if not exact or done is None:
        print("the remediator said:\n" + "\n".join(line for _, line in child.lines[-40:]), file=sys.stderr)
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    ok = exact and done is not None and figures["settle_s"] <= SETTLE_BAR_S and rss_mb <= RSS_BAR_MB
    goal = f"under {RSS_BAR_MB:.0f} MB and {SETTLE_BAR_S:.0f} s, exactly the brake's number"
    print(f"{'meets' if ok else 'MISSES'} the goal: {goal}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
