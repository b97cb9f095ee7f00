"""The burn-in session: the run's options, and the result document it fills in.

The plugin (gputests/plugin.py) owns the pytest hooks and hands what they see to
this object; the object decides nothing by itself that is not a pure function of
what it was given (the verdict comes from harness.verdict.decide). Everything it
records lives in one `ResultDocument`, which is what the result file holds.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from gputests.health_watch import Watch
from harness import compare, lock, outbox, results
from harness.baselines import Baseline
from harness.devices import Device, Inventory, discover, node_name
from harness.errors import ConfigError
from harness.groups import stressing
from harness.options import RunOptions
from harness.records import NODE, Code, Finding, Measurement, Remediation, Severity
from harness.results import BaselineUse, ResultDocument, RunState, TestRecord
from harness.verdict import TestOutcome, Verdict, decide
from harness.workers.devicetest import Outcome, Scope
from harness.workers.faults import Fault

if TYPE_CHECKING:
    from harness.distributed import Mpi

UNMEASURED = ("health", "dcgm")
"""Groups whose tests judge state, not figures: a baseline has no metrics for them."""


class BurnIn:
    def __init__(self, options: RunOptions, *, parent_holds_lock: bool = False):
        self.options = options
        self.parent_holds_lock = parent_holds_lock
        """A gpu-burnin command started this pytest and holds the node's burn lock for it."""
        self._held = contextlib.ExitStack()
        self.active = False
        self.inventory = Inventory(devices=(), host={}, problem="the run has not started")
        self.baseline_for: dict[str, Baseline | None] = {}
        self.doc = ResultDocument(
            run_id=options.run_id,
            node=node_name(),
            started_at=results.utcnow(),
            device_kind=options.device,
            entrypoint=options.entrypoint,
            profile=options.profile,
            selection=options.selection,
            faults=[str(f) for f in options.faults],
        )
        self.verdict: Verdict | None = None
        self.watch: Watch | None = None
        """Health snapshots, telemetry and Xids, where there is NVML (or nvidia-smi, or a simulation)."""
        self.mpi: Mpi | None = None
        """The job's MPI world when an MPI launcher started this run: one process per node."""
        self._tests: dict[str, TestRecord] = {}

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.inventory.devices

    @property
    def findings(self) -> list[Finding]:
        return self.doc.findings

    @property
    def measurements(self) -> list[Measurement]:
        return self.doc.measurements

    @property
    def result_path(self) -> Path:
        return results.path_for(self.options.results_dir, self.doc.node, self.doc.run_id)

    def start(self, tests: Iterable[tuple[str, str]]) -> None:
        """Called once the tests are selected: find the devices and their baselines."""
        results.ensure_directory(self.options.results_dir)
        self.active = True
        self._join_mpi_job()
        self._take_lock()  # a ConfigError here ends the session as a usage error: nothing is written
        for nodeid, group in tests:  # reports from collection (skipped or broken modules) are already here
            self._test(nodeid).group = group
        self.inventory = discover(
            self.options.device,
            startup_timeout_s=self.options.profile.startup_timeout_s,
            cpu_devices=self.options.cpu_devices,
        )
        # Where the CPU self-test is allowed and no count was expected, say how to run it.
        if not self.devices and self.options.entrypoint in ("pytest", "run") and self.options.expect_gpus is None:
            hint = f"{self.inventory.problem}; use {self.options.flag('device')} cpu for the CPU self-test"
            self.inventory = dataclasses.replace(self.inventory, problem=hint)
        on_node = collections.Counter((d.kind, d.name) for d in self.devices)  # the whole node, before any share
        if self.mpi is not None and self.mpi.place.local_size > 1 and self.options.device == "cuda":
            self.inventory = _share(self.inventory, self.mpi.place.local_rank, self.mpi.place.local_size)
        self.baseline_for = {
            d.uuid: self.options.baselines.for_device(d.kind, d.name, on_node[(d.kind, d.name)]) for d in self.devices
        }
        known = {d.index for d in self.devices}
        for fault in self.options.faults:
            if self.devices and fault.device not in known:
                raise ConfigError(
                    f"{fault} names device {fault.device}; this node has {sorted(known)}", option="inject"
                )
        used = {b.path: b for b in self.baseline_for.values() if b is not None}
        self.doc.host = dict(self.inventory.host)
        if self.mpi is not None:
            self.doc.host["mpi"] = f"rank {self.mpi.place.rank} of {self.mpi.place.size}"
        self.doc.devices = list(self.devices)
        self.doc.device_problem = self.inventory.problem
        self.doc.baselines = [
            BaselineUse(model=b.model, file=str(path), sha256=b.sha256, driver=b.driver) for path, b in used.items()
        ]
        self.findings.extend(self._session_findings())
        if self.devices and (self.options.device == "cuda" or self.options.nvml.startswith("sim:")):
            self.watch = Watch(
                self.options.nvml,
                self.devices,
                self.options.baselines,
                startup_s=self.options.profile.startup_timeout_s,
                xid_table=self.options.xid_table,
            ).__enter__()
            self.findings.extend(self.watch.start())
            self.doc.health = self.watch.snapshots
        self.checkpoint()

    def _take_lock(self) -> None:
        """One burn at a time on a node (harness/lock.py): a gpu-burnin parent holds the lock for its
        child, which checks that it really does; pytest started by hand takes it itself. Under MPI,
        the processes of one host share its GPUs on purpose: the host's first takes it for all."""
        directory, run_id = self.options.results_dir, self.doc.run_id
        if self.parent_holds_lock:
            lock.check_held(directory, run_id, os.getppid())
        elif self.mpi is None or self.mpi.place.local_rank == 0:
            self._held.enter_context(lock.hold(directory, run_id))

    def scope(self, test: str, group: str) -> Scope:
        """What a device test of `group` runs on."""
        return Scope(
            devices=self.devices,
            profile=self.options.profile,
            test=test,
            group=group,
            faults=self.faults_for(group),
            baselines=self.baseline_for,
            node=self.doc.node,
            mpi=self.mpi,
        )

    def faults_for(self, group: str) -> dict[int, Fault]:
        return {f.device: f for f in self.options.faults if f.applies_to(group)}

    def add(self, outcome: Outcome) -> None:
        self.measurements.extend(outcome.measurements)
        self.findings.extend(outcome.findings)
        self.doc.host.update(outcome.facts)

    def before_test(self, nodeid: str, group: str) -> None:
        """A stress test is about to load the GPUs: a snapshot, and telemetry from now on."""
        if self.watch is not None and group in stressing():
            self.watch.before(nodeid, group)

    def after_test(self, nodeid: str, group: str) -> None:
        """A stress test ended: what rose during it, and what the GPUs did."""
        if self.watch is not None and group in stressing():
            self.findings.extend(self.watch.after(nodeid, group))
            self.doc.telemetry = self.watch.telemetry

    def judge_test(self, nodeid: str, group: str, *, finished: bool = True) -> list[Finding]:
        """After a test body returned: compare its figures; returns its findings that stop a pass.
        A test that did not finish is not told what it did not get to measure."""
        mine = [m for m in self.measurements if m.test == nodeid]
        # Findings that say why figures are missing, and themselves stop a pass: information (a worker
        # stopped because another failed) excuses nothing, or a device could pass without its figures.
        stands_for = (Code.HANG, Code.TEST_ERROR, Code.NOTHING_TO_TEST)
        blocking = (Severity.FAIL, Severity.INCOMPLETE)
        excused = {f.gpu for f in self.findings if f.test == nodeid and f.code in stands_for and f.severity in blocking}
        found = compare.findings(compare.assess(mine, self.devices, self.baseline_for))
        if self.watch is not None:
            found = [self.watch.explain(f) for f in found]
        if finished and group not in UNMEASURED:
            alone = {f.gpu for f in self.findings if f.test == nodeid and f.code is Code.NOTHING_TO_TEST}
            found += compare.missing(
                self.devices, self.baseline_for, mine, group=group, test=nodeid, excused=excused, nothing_to_test=alone
            )
        self.findings.extend(found)
        stopping = [f for f in self.findings if f.test == nodeid and f.severity in (Severity.FAIL, Severity.INCOMPLETE)]
        return sorted(stopping, key=lambda f: f.severity is not Severity.FAIL)

    def interrupted(self, nodeid: str, group: str, duration_s: float, outcomes: Iterable[Outcome]) -> None:
        """The run was stopped while `nodeid` ran: it is recorded as interrupted (never a pass), with
        how long it ran and what it had measured, judged as far as it goes."""
        test = self._test(nodeid)
        test.outcome = TestOutcome.INTERRUPTED
        test.duration_s = round(duration_s, 3)
        for outcome in outcomes:
            self.add(outcome)
        if group:
            self.judge_test(nodeid, group, finished=False)

    def on_report(
        self,
        nodeid: str,
        when: str,
        outcome: str,
        duration: float,
        summary: str,
        trace: str = "",
        *,
        judged: bool = False,
    ) -> None:
        """Record how a phase of a test ended (pytest's outcome words); errors and skips become findings.

        `summary` is one line (the exception, or the skip reason); `trace` the full report;
        `judged`: the test was failed by its own findings (judge_test), not by an exception.
        """
        test = self._test(nodeid)
        test.duration_s = round(test.duration_s + duration, 3)
        if outcome == "skipped":
            test.outcome = TestOutcome.SKIPPED
            self._blocked(Code.TEST_SKIPPED, nodeid, f"{nodeid} was skipped: {summary}", Remediation.CHECK_CONFIG)
        elif outcome == "failed":
            failing = any(f.test == nodeid and f.severity is Severity.FAIL for f in self.findings)
            if when == "call" and judged:
                test.outcome = TestOutcome.FAILED if failing else TestOutcome.ERROR
            else:
                test.outcome = TestOutcome.ERROR
                self._blocked(
                    Code.TEST_ERROR,
                    nodeid,
                    f"{nodeid} raised in {when}: {summary or 'see traceback'}",
                    Remediation.RERUN,
                    trace,
                )
        elif when == "call":
            test.outcome = TestOutcome.PASSED

    def finish(self, abnormal: tuple[Code, str] | None = None) -> Verdict:
        """Decide and write the final result; `abnormal` is why pytest itself did not end normally.

        When the final write fails, that is a finding too and the verdict is decided again:
        a pass that leaves no record is not a pass."""
        if self.watch is not None:
            self.findings.extend(self.watch.finish())
            self.watch.__exit__(None)
            self.doc.health = self.watch.snapshots
        self.doc.ended_at = results.utcnow()
        if abnormal is not None:
            self._blocked(abnormal[0], "", abnormal[1], Remediation.RERUN)
        self._decide()
        try:
            results.write(self.result_path, self._document(RunState.FINISHED))
        except OSError as err:
            sys.stderr.write(f"gpu-burnin: could not write the result file {self.result_path}: {err}\n")
            self._blocked(Code.RESULT_UNWRITTEN, "", f"the result file could not be written: {err}", Remediation.RERUN)
            self._decide()
        if self.mpi is not None:
            self._gather_job(self.mpi)
        if self.options.results_url and self.options.entrypoint == "pytest" and self.result_path.exists():
            # pytest started by hand sends its own result; a gpu-burnin command sends its child's (harness/runner.py)
            outbox.deliver(self.options.results_dir, self.doc.node, self.doc.run_id, self.options.results_url)
        self._held.close()
        assert self.verdict is not None
        return self.verdict

    def _join_mpi_job(self) -> None:
        """Under an MPI launcher: join the job's world, share rank 0's run id, and name this
        process's node (host-rank where one host runs several)."""
        from harness import distributed

        if not distributed.launched_by_mpi():
            return
        self.mpi = distributed.Mpi()
        place = self.mpi.place
        if place.local_size > 1:
            self.doc.node = f"{self.doc.node}-{place.local_rank}"
        self.doc.run_id = self.mpi.bcast(self.doc.run_id, limit_s=self.options.profile.startup_timeout_s)
        self.mpi.choose_meeting_host(self.options.rendezvous_address, limit_s=self.options.profile.startup_timeout_s)

    def _gather_job(self, mpi: Mpi) -> None:
        """Every node's result to rank 0, which writes the job's one file with each node's verdict."""
        from harness import distributed

        limit_s = 2 * self.options.profile.startup_timeout_s
        try:
            gathered = mpi.gather((self.doc.node, self.doc.to_dict()), limit_s=limit_s, missing=None)
        except distributed.Stuck as err:
            sys.stderr.write(f"gpu-burnin: this node's result did not reach MPI rank 0: {err}\n")
            return
        if gathered is None:
            return
        nodes: list[tuple[str, ResultDocument | None, str]] = []
        for rank, entry in enumerate(gathered):
            if entry is None:
                nodes.append((f"rank {rank}", None, f"no result from MPI rank {rank} within {limit_s:.0f} s"))
            else:
                nodes.append((entry[0], ResultDocument.from_dict(entry[1]), ""))
        path = results.job_path(self.options.results_dir, self.doc.run_id)
        try:
            results.write_job(path, self.doc.run_id, nodes)
        except OSError as err:
            sys.stderr.write(f"gpu-burnin: could not write the job result {path}: {err}\n")
            return
        sys.stderr.write(f"gpu-burnin: job result for {len(nodes)} nodes: {path}\n")

    def assessments(self) -> list[compare.Assessment]:
        return compare.assess(self.measurements, self.devices, self.baseline_for)

    def checkpoint(self) -> None:
        """Write the result file as it stands; a checkpoint that cannot be written is reported
        and the run goes on (the final write decides)."""
        try:
            results.write(self.result_path, self._document(RunState.RUNNING))
        except OSError as err:
            sys.stderr.write(f"gpu-burnin: could not write the result checkpoint {self.result_path}: {err}\n")

    def _decide(self) -> None:
        self.verdict = decide(self.findings, self.doc.outcomes())
        self.doc.verdict = self.verdict

    def _document(self, state: RunState) -> ResultDocument:
        self.doc.state = state
        if state is RunState.RUNNING:
            self.doc.verdict = Verdict.unfinished()
        return self.doc

    def _test(self, nodeid: str) -> TestRecord:
        if nodeid not in self._tests:
            self._tests[nodeid] = TestRecord(nodeid=nodeid)
            self.doc.tests.append(self._tests[nodeid])
        return self._tests[nodeid]

    def _session_findings(self) -> list[Finding]:
        found = []
        expected = self.options.expect_gpus
        if not self.devices and expected is None and self.options.gpu_node:
            found.append(
                Finding(
                    code=Code.GPU_MISSING,
                    severity=Severity.FAIL,
                    message=f"this node is labelled as having GPUs and none is visible: {self.inventory.problem}",
                    remediation=Remediation.REBOOT_NODE,
                )
            )
        elif not self.devices and expected is None:  # nothing said how many there should be: no decision
            found.append(
                Finding(
                    code=Code.NO_GPUS,
                    severity=Severity.INCOMPLETE,
                    message=self.inventory.problem,
                    remediation=Remediation.REBOOT_NODE,
                )
            )
        if expected is not None and len(self.devices) != expected:  # none at all is the worst of it
            seen = f"{len(self.devices)}" if self.devices else f"none ({self.inventory.problem})"
            found.append(
                Finding(
                    code=Code.GPU_COUNT_MISMATCH,
                    severity=Severity.FAIL,
                    message=f"expected {expected} GPUs, found {seen}: a GPU may have fallen off the bus",
                    remediation=Remediation.REBOOT_NODE,
                    details={"expected": expected, "found": len(self.devices)},
                )
            )
        uncovered: dict[str, list[str]] = {}
        for device in self.devices:
            baseline = self.baseline_for[device.uuid]
            if baseline is None:
                uncovered.setdefault(device.name, []).append(device.label)
            elif baseline.driver and baseline.driver != self.inventory.host.get("driver"):
                found.append(
                    Finding(
                        code=Code.BASELINE_DRIVER_DIFFERS,
                        severity=Severity.WARNING,
                        gpu=device.uuid,
                        message=f"{baseline.path.name} was taken with driver {baseline.driver}; "
                        f"this node runs {self.inventory.host.get('driver') or 'unknown'}",
                    )
                )
        for name, labels in uncovered.items():
            sizes = self.options.baselines.counts_for(self.options.device, name)
            size_note = (
                f" on a node with {len(labels)} of them (files exist for {' and '.join(map(str, sizes))}: "
                "a GPU may be missing)"
                if sizes
                else ""
            )
            found.append(
                Finding(
                    code=Code.NO_BASELINE,
                    severity=Severity.INCOMPLETE,
                    message=f"no baseline in {self.options.baselines.source} covers {name!r}{size_note} "
                    f"({', '.join(labels)}): figures are recorded but not judged",
                    remediation=Remediation.CHECK_CONFIG,
                    details={"name": name},
                )
            )
        for fault in self.options.faults:
            found.append(
                Finding(
                    code=Code.FAULT_INJECTED,
                    severity=Severity.INCOMPLETE,
                    message=f"fault {fault} injected on purpose ({self.options.flag('inject')}): this run cannot pass",
                    remediation=Remediation.CHECK_CONFIG,
                )
            )
        return found

    def _blocked(self, code: Code, test: str, message: str, remediation: Remediation, trace: str = "") -> None:
        details = {"traceback": trace} if trace else {}
        self.findings.append(
            Finding(
                code=code,
                severity=Severity.INCOMPLETE,
                gpu=NODE,
                message=message,
                remediation=remediation,
                test=test,
                details=details,
            )
        )


def _share(inventory: Inventory, index: int, count: int) -> Inventory:
    """One of `count` processes on a host (MPI local ranks) takes its contiguous share of the GPUs."""
    per = -(-len(inventory.devices) // count)
    return dataclasses.replace(inventory, devices=inventory.devices[index * per : (index + 1) * per])
