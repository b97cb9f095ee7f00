"""The verdict: a pure function of a run's findings and test outcomes.

Pass only when every selected test ran to the end and nothing failing or blocking
was found. Failing findings win over blocking ones: a GPU known to be broken is
reported broken even when another test could not finish.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from enum import IntEnum, StrEnum
from typing import Any

from harness.records import Code, Finding, Severity


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCOMPLETE = "incomplete"


class ExitCode(IntEnum):
    """What every gpu-burnin command exits with."""

    PASS = 0
    FAIL = 1
    INCOMPLETE = 2
    USAGE = 4
    """Usage or configuration error: nothing was run and nothing was changed."""


class TestOutcome(StrEnum):
    """How a selected test ended."""

    __test__ = False  # not a pytest test class, whatever its name

    PASSED = "passed"
    FAILED = "failed"
    """It ran and a finding failed it."""
    ERROR = "error"
    SKIPPED = "skipped"
    NOT_RUN = "not-run"
    """It never reported (the run was cut short)."""
    INTERRUPTED = "interrupted"
    """It was running when the run was stopped (Ctrl-C, SIGTERM): never a pass; what it measured is kept."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    status: Status
    reasons: tuple[str, ...] = ()
    """Why, one line each; empty for a pass."""

    @property
    def exit_code(self) -> ExitCode:
        return {
            Status.PASS: ExitCode.PASS,
            Status.FAIL: ExitCode.FAIL,
            Status.INCOMPLETE: ExitCode.INCOMPLETE,
        }[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {"status": str(self.status), "reasons": list(self.reasons), "exit_code": int(self.exit_code)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(status=Status(data["status"]), reasons=tuple(data.get("reasons", ())))

    @classmethod
    def unfinished(cls) -> Verdict:
        """What a result file says until its run has been judged."""
        return cls(status=Status.INCOMPLETE, reasons=("the run has not finished (or was killed before it could)",))


def decide(findings: Iterable[Finding], outcomes: Mapping[str, TestOutcome]) -> Verdict:
    """Judge a run. `outcomes` maps the node id of every selected test to how it ended."""
    # Findings about the hardware lead; a FAULT_INJECTED note never hides the hang or mismatch it caused.
    findings = sorted(findings, key=lambda f: f.code is Code.FAULT_INJECTED)
    failing = [f for f in findings if f.severity is Severity.FAIL]
    if failing:
        return Verdict(status=Status.FAIL, reasons=tuple(_line(f) for f in failing))

    blocking = [_line(f) for f in findings if f.severity is Severity.INCOMPLETE]
    if not outcomes:
        blocking.append("no burn-in test was selected")
    explained = {f.test for f in findings if f.severity in (Severity.FAIL, Severity.INCOMPLETE)}
    for test, outcome in outcomes.items():
        if outcome is not TestOutcome.PASSED and test not in explained:
            blocking.append(f"{test} ended {outcome}")
    if blocking:
        return Verdict(status=Status.INCOMPLETE, reasons=tuple(blocking))
    return Verdict(status=Status.PASS)


def _line(finding: Finding) -> str:
    return f"{finding.code}: {finding.message}"
