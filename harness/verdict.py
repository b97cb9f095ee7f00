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

from harness.records import Finding, Severity


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


PASSED = "passed"
NOT_RUN = "not-run"
"""The outcome of a selected test that never reported (the run was cut short)."""


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


def decide(findings: Iterable[Finding], outcomes: Mapping[str, str]) -> Verdict:
    """Judge a run.

    `outcomes` maps the node id of every selected test to how it ended: "passed",
    "failed", "error", "skipped" or "not-run".
    """
    findings = list(findings)
    failing = [f for f in findings if f.severity is Severity.FAIL]
    if failing:
        return Verdict(status=Status.FAIL, reasons=tuple(_line(f) for f in failing))

    blocking = [_line(f) for f in findings if f.severity is Severity.INCOMPLETE]
    if not outcomes:
        blocking.append("no burn-in test was selected")
    explained = {f.test for f in findings if f.severity in (Severity.FAIL, Severity.INCOMPLETE)}
    for test, outcome in outcomes.items():
        if outcome != PASSED and test not in explained:
            blocking.append(f"{test} ended {outcome}")
    if blocking:
        return Verdict(status=Status.INCOMPLETE, reasons=tuple(blocking))
    return Verdict(status=Status.PASS)


def _line(finding: Finding) -> str:
    return f"{finding.code}: {finding.message}"
