"""A fleet of watches for the tests: simulated NVML per node, one fake API server, one virtual clock.

Each node's watch is the real thing (harness/watch/loop.py) with the real Kubernetes
client, as its own service account bound to its node (every write checked against the
contract's admission rules, tests/contract_policy.py); only time is virtual, so hours of
polling take seconds.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

from harness import baselines
from harness.kube.api import Api, Patience, connect
from harness.kube.node import Marks
from harness.nvml import binding, xid_table
from harness.watch import act, loop
from harness.watch.config import Policy, WatchConfig
from tests import contract_policy
from tests.kube_fake import FakeApiServer

DATA = Path(__file__).parent / "data" / "watch"
SCENARIOS = Path(__file__).resolve().parent.parent / "harness" / "nvml" / "scenarios"
EPOCH = dt.datetime(2026, 11, 28, 0, 0, tzinfo=dt.UTC)
GPU_NODE = {"nvidia.com/gpu.present": "true"}
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class Clock:
    """Monotonic seconds and the wall time they stand for; moved by the test."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=self.t)


class Nodes:
    """Watches on nodes of one fake API server, polled in step."""

    def __init__(self, server: FakeApiServer, tmp: Path, *, bystanders: int = 9, **config: Any) -> None:
        self.server = server
        self.tmp = tmp
        self.clock = Clock()
        self.config = config
        contract_policy.install(server)
        self.watches: dict[str, loop.Watch] = {}
        self.scenarios: dict[str, Path] = {}
        self.logs: dict[str, io.StringIO] = {}
        self.baselines = baselines.load_dir(baselines.default_dir())
        self.table = xid_table.load_table()
        self.apis: dict[str, Api] = {}
        for n in range(bystanders):  # healthy GPU nodes without a watch here: the brake's denominator
            server.add_node(f"other-{n}", labels=GPU_NODE)

    def add(self, name: str, scenario: Path, *, start: bool = True, **labels: str) -> loop.Watch:
        try:
            self.server.node(name)
        except KeyError:
            self.server.add_node(name, labels={**GPU_NODE, **labels})
        self.scenarios[name] = scenario
        return self.restart(name) if start else self.build(name)

    def build(self, name: str) -> loop.Watch:
        """A new watch process for the node: a fresh NVML binding (the scenario's timeline goes on), the
        same journal on disk."""
        settings: dict[str, Any] = {"interval_s": 30.0, **self.config}
        config = WatchConfig(
            node=name,
            journal=self.tmp / name / "journal.jsonl",
            nvml=f"sim:{self.scenarios[name]}",
            boot_id="boot-1",
            timeline_origin=0.0,
            **settings,
        )
        self.logs[name] = io.StringIO()
        writer = act.NodeWriter(self.api(name), name, Marks(), boot="boot-1")
        watch = loop.Watch(
            config,
            nv=binding.load(config.nvml),
            writer=writer,
            baselines=self.baselines,
            table=self.table,
            clock=self.clock,
            wall=self.clock.wall,
            log=self.logs[name],
        )
        self.watches[name] = watch
        return watch

    def api(self, name: str) -> Api:
        """The watch pod's client on `name`: the watch's service account, its token bound to that node."""
        if name not in self.apis:
            token = contract_policy.agent_token(self.server, "watch", name)
            config = self.server.kubeconfig(self.tmp / f"kubeconfig-{name}", token=token)
            self.apis[name] = connect(config, patience=Patience(total_s=0.3, first_backoff_s=0.01))
        return self.apis[name]

    def restart(self, name: str) -> loop.Watch:
        watch = self.build(name)
        watch.start()
        return watch

    def run(self, seconds: float, *, every: float | None = None) -> None:
        """Poll every watch each interval for `seconds` of virtual time."""
        step = every or next(iter(self.watches.values())).config.interval_s
        end = self.clock.t + seconds
        while self.clock.t < end:
            for watch in self.watches.values():
                watch.poll()
            self.clock.t += step


def writes(server: FakeApiServer, node: str | None = None) -> list[tuple[str, str, int]]:
    """Every write request the server saw (refused ones too), for one node or all."""
    found = []
    for r in server.requests:
        if r.method not in WRITES:
            continue
        if r.path.startswith("/api/v1/nodes/"):
            about = r.path.split("/")[4]
        elif r.path.endswith("/eviction"):
            about = "pods"  # an eviction names a pod, not a node
        else:
            about = _event_node(r.body)
        if node is None or about == node:
            found.append((r.method, r.path, r.status))
    return found


def events(server: FakeApiServer, node: str | None = None) -> list[tuple[str, str]]:
    return [
        (e["involvedObject"]["name"], e["reason"])
        for e in server.events
        if node is None or e["involvedObject"]["name"] == node
    ]


def _event_node(body: Any) -> str:
    if isinstance(body, dict):
        return str((body.get("involvedObject") or {}).get("name", ""))
    return ""


def policy(**given: str) -> Policy:
    return Policy(**given)
