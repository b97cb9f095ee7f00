"""A remediator replica for the tests: the real process's parts (harness/remediator/command.Process) with
the real client, as the remediator's service account (its RBAC, every write checked against the contract),
stepped by the test on a virtual clock instead of by its threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.kube.api import Patience, connect
from harness.remediator.command import Process
from harness.remediator.config import Config
from tests import contract_policy
from tests.kube_fake import FakeApiServer
from tests.watch_fleet import Clock


class Replica:
    def __init__(
        self, server: FakeApiServer, tmp: Path, name: str = "remediator-0", *, clock: Clock | None = None, **given: Any
    ) -> None:
        self.name = name
        self.token = contract_policy.remediator_token(server, name)
        config_file = server.kubeconfig(tmp / f"kubeconfig-{name}", token=self.token)
        self.api = connect(config_file, patience=Patience(total_s=0.3, first_backoff_s=0.01))
        self.clock = clock or Clock()
        self.config = Config(identity=name, metrics_port=0, **given)
        self.lines: list[str] = []
        self.process = Process(self.api, self.config, clock=self.clock, wall=self.clock.wall, log=self.lines.append)
        self.led = False

    @property
    def metrics(self) -> str:
        return self.process.metrics.exporter.text()

    def step(self) -> bool:
        """What the process does each period: try for the Lease; while leading, a pass over a fresh view.
        Whether it led."""
        if not self.process.elector.tick():
            self.led = False
            return False
        if not self.led:
            self.process.remediator.begin()
            self.led = True
        self.process.view.relist()
        self.process.remediator.run_pass()
        return True
