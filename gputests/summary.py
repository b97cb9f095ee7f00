"""The terminal summary: one table per run, the findings that matter, one verdict line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.compare import Assessment
from harness.records import Finding, Severity
from harness.verdict import Verdict

HEADER = ("device", "metric", "value", "floor", "vs best", "status")
_SHOWN = (Severity.FAIL, Severity.INCOMPLETE, Severity.WARNING)


def table(assessments: Sequence[Assessment]) -> list[str]:
    if not assessments:
        return ["no measurements"]
    rows = [HEADER] + [_row(a) for a in sorted(assessments, key=_order)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    numeric = {2, 3, 4}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i in numeric and n else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def finding_lines(findings: Iterable[Finding]) -> list[str]:
    shown = sorted((f for f in findings if f.severity in _SHOWN), key=lambda f: _SHOWN.index(f.severity))
    return [f"{f.severity.upper():<10} {f.code:<20} {f.message}" for f in shown]


def verdict_line(verdict: Verdict, devices: int, path: Path | None) -> str:
    where = f"; result: {path}" if path else ""
    if verdict.reasons:
        why = verdict.reasons[0] + (f" (and {len(verdict.reasons) - 1} more)" if len(verdict.reasons) > 1 else "")
        return f"gpu-burnin verdict: {verdict.status.upper()} ({devices} devices): {why}{where}"
    return f"gpu-burnin verdict: {verdict.status.upper()} ({devices} devices){where}"


def _row(a: Assessment) -> tuple[str, str, str, str, str, str]:
    m = a.measurement
    device = a.device.label if a.device else m.gpu
    floor = f"{a.spec.limit:.4g}" if a.spec else "-"
    ratio = f"{a.ratio:.3f}" if a.ratio is not None else "-"
    return (device, m.metric, f"{m.value:.4g} {m.unit}", floor, ratio, a.status)


def _order(a: Assessment) -> tuple[int, str]:
    return (a.device.index if a.device else -1, a.measurement.metric)
