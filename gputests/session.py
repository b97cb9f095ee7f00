"""The burn-in session: every option read once, and everything a run records.

The plugin (gputests/plugin.py) owns the pytest hooks and hands what they see to
this object; the object decides nothing by itself that is not a pure function of
what it was given (the verdict comes from harness.verdict.decide).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gputests import faults as fault_specs
from gputests.faults import Fault
from harness import baselines, compare, results
from harness.baselines import Baseline, BaselineSet
from harness.devices import Device, Inventory, discover, node_name
from harness.errors import ConfigError
from harness.profiles import Profile, by_name
from harness.records import NODE, Code, Finding, Measurement, Remediation, Severity
from harness.verdict import NOT_RUN, PASSED, Verdict, decide


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    device_kind: str
    profile: Profile
    baselines: BaselineSet
    results_dir: Path | None
    expect_gpus: int | None
    faults: tuple[Fault, ...]
    run_id: str

    @classmethod
    def from_values(
        cls,
        *,
        device: str,
        profile: str,
        duration: float | None,
        hang_timeout: float | None,
        baseline: Path | None,
        baseline_dir: Path | None,
        results_dir: Path | None,
        expect_gpus: int | None,
        inject: Sequence[str],
        run_id: str | None,
    ) -> Options:
        chosen = by_name(profile)
        if device == "cpu":
            chosen = chosen.for_cpu()
        if baseline is not None and baseline_dir is not None:
            raise ConfigError("give --gpu-baseline or --gpu-baseline-dir, not both", field="--gpu-baseline")
        if expect_gpus is not None and (expect_gpus < 1 or device != "cuda"):
            raise ConfigError("takes a count of at least 1, with --gpu-device cuda", field="--gpu-expect-gpus")
        loaded = (
            baselines.load_one(baseline) if baseline else baselines.load_dir(baseline_dir or baselines.default_dir())
        )
        if results_dir is not None:
            results.ensure_directory(results_dir)
        return cls(
            device_kind=device,
            profile=chosen.with_duration(duration).with_hang_timeout(hang_timeout),
            baselines=loaded,
            results_dir=results_dir,
            expect_gpus=expect_gpus,
            faults=tuple(fault_specs.parse(spec) for spec in inject),
            run_id=run_id or results.new_run_id(),
        )


class BurnIn:
    def __init__(self, options: Options):
        self.options = options
        self.started_at = results.utcnow()
        self.ended_at: Any = None
        self.active = False
        self.selection = ""
        self.inventory = Inventory(devices=(), host={}, problem="the run has not started")
        self.baseline_for: dict[str, Baseline | None] = {}
        self.measurements: list[Measurement] = []
        self.findings: list[Finding] = []
        self.tests: dict[str, dict[str, Any]] = {}
        self.verdict: Verdict | None = None

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.inventory.devices

    @property
    def result_path(self) -> Path | None:
        if self.options.results_dir is None:
            return None
        return results.path_for(self.options.results_dir, node_name(), self.options.run_id)

    def start(self, tests: Iterable[tuple[str, str]], selection: str) -> None:
        """Called once the tests are selected: find the devices and their baselines."""
        self.active = True
        self.selection = selection
        for nodeid, group in tests:  # reports from collection (skipped or broken modules) are already here
            self.tests.setdefault(nodeid, {"nodeid": nodeid, "group": group, "outcome": NOT_RUN, "duration_s": 0.0})
        self.inventory = discover(self.options.device_kind, startup_timeout_s=self.options.profile.startup_timeout_s)
        self.baseline_for = {d.uuid: self.options.baselines.for_device(d.kind, d.name) for d in self.devices}
        known = {d.index for d in self.devices}
        for fault in self.options.faults:
            if self.devices and fault.device not in known:
                raise ConfigError(
                    f"{fault} names device {fault.device}; this node has {sorted(known)}", field="--gpu-inject"
                )
        self.findings.extend(self._session_findings())
        self.checkpoint()

    def faults_for(self, group: str) -> dict[int, Fault]:
        return {f.device: f for f in self.options.faults if f.applies_to(group)}

    def add(self, measurements: Iterable[Measurement] = (), found: Iterable[Finding] = ()) -> None:
        self.measurements.extend(measurements)
        self.findings.extend(found)

    def judge_test(self, nodeid: str, group: str) -> list[Finding]:
        """After a test body returned: compare its figures; returns the failing findings."""
        mine = [m for m in self.measurements if m.test == nodeid]
        excused = {f.gpu for f in self.findings if f.test == nodeid and f.code in (Code.HANG, Code.TEST_ERROR)}
        found = compare.findings(compare.assess(mine, self.devices, self.baseline_for))
        found += compare.missing(self.devices, self.baseline_for, mine, group=group, test=nodeid, excused=excused)
        self.findings.extend(found)
        return [f for f in self.findings if f.test == nodeid and f.severity is Severity.FAIL]

    def on_report(self, nodeid: str, when: str, outcome: str, duration: float, summary: str, trace: str = "") -> None:
        """Record how a phase of a test ended; errors and skips become findings.

        `summary` is one line (the exception, or the skip reason); `trace` the full report.
        """
        test = self.tests.setdefault(nodeid, {"nodeid": nodeid, "group": "", "outcome": NOT_RUN, "duration_s": 0.0})
        test["duration_s"] = round(test["duration_s"] + duration, 3)
        if outcome == "skipped":
            test["outcome"] = "skipped"
            self._blocked(Code.TEST_SKIPPED, nodeid, f"{nodeid} was skipped: {summary}", Remediation.CHECK_CONFIG)
        elif outcome == "failed":
            failing = any(f.test == nodeid and f.severity is Severity.FAIL for f in self.findings)
            if when == "call" and failing:
                test["outcome"] = "failed"
            else:
                test["outcome"] = "error"
                self._blocked(
                    Code.TEST_ERROR,
                    nodeid,
                    f"{nodeid} raised in {when}: {summary or 'see traceback'}",
                    Remediation.RERUN,
                    trace,
                )
        elif when == "call":
            test["outcome"] = PASSED

    def finish(self, abnormal: tuple[Code, str] | None = None) -> Verdict:
        """Decide and write the final result; `abnormal` is why pytest itself did not end normally."""
        self.ended_at = results.utcnow()
        if abnormal is not None:
            self._blocked(abnormal[0], "", abnormal[1], Remediation.RERUN)
        self.verdict = decide(self.findings, {nodeid: t["outcome"] for nodeid, t in self.tests.items()})
        self.checkpoint(results.FINISHED)
        return self.verdict

    def assessments(self) -> list[compare.Assessment]:
        return compare.assess(self.measurements, self.devices, self.baseline_for)

    def checkpoint(self, state: str = results.RUNNING) -> Path | None:
        """Write the result file. Raises OSError only for the final write: a checkpoint
        that cannot be written is reported and the run goes on, and the final write
        decides (a pass that leaves no record is not a pass)."""
        path = self.result_path
        if path is None:
            return None
        try:
            return results.write(path, self.document(state))
        except OSError as err:
            if state == results.FINISHED:
                raise
            sys.stderr.write(f"gpu-burnin: could not write the result checkpoint {path}: {err}\n")
            return None

    def document(self, state: str) -> dict[str, Any]:
        document = results.skeleton(
            run_id=self.options.run_id,
            node=node_name(),
            started_at=self.started_at,
            device_kind=self.options.device_kind,
        )
        used = {b.path: b for b in self.baseline_for.values() if b is not None}
        document.update(
            state=state,
            ended_at=results.timestamp(self.ended_at) if self.ended_at else None,
            profile=dataclasses.asdict(self.options.profile),
            selection=self.selection,
            faults=[str(f) for f in self.options.faults],
            host=self.inventory.host,
            devices=[d.to_dict() for d in self.devices],
            device_problem=self.inventory.problem,
            baselines=[
                {"model": b.model, "file": str(path), "sha256": b.sha256, "driver": b.driver}
                for path, b in used.items()
            ],
            tests=list(self.tests.values()),
            measurements=[m.to_dict() for m in self.measurements],
            findings=[f.to_dict() for f in self.findings],
        )
        if state == results.FINISHED and self.verdict is not None:
            document["verdict"] = self.verdict.to_dict()
        return document

    def _session_findings(self) -> list[Finding]:
        found = []
        if not self.devices:
            found.append(
                Finding(
                    code=Code.NO_GPUS,
                    severity=Severity.INCOMPLETE,
                    message=self.inventory.problem,
                    remediation=Remediation.REBOOT_NODE,
                )
            )
        expected = self.options.expect_gpus
        if expected is not None and self.devices and len(self.devices) != expected:
            found.append(
                Finding(
                    code=Code.GPU_COUNT_MISMATCH,
                    severity=Severity.FAIL,
                    message=f"expected {expected} GPUs, found {len(self.devices)}: a GPU may have fallen off the bus",
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
            found.append(
                Finding(
                    code=Code.NO_BASELINE,
                    severity=Severity.INCOMPLETE,
                    message=f"no baseline in {self.options.baselines.source} covers {name!r} ({', '.join(labels)}): "
                    "figures are recorded but not judged",
                    remediation=Remediation.CHECK_CONFIG,
                    details={"name": name},
                )
            )
        for fault in self.options.faults:
            found.append(
                Finding(
                    code=Code.FAULT_INJECTED,
                    severity=Severity.INCOMPLETE,
                    message=f"fault {fault} injected on purpose (--gpu-inject): this run cannot pass",
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
