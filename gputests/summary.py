"""The terminal summary: one table per run, the findings that matter, one verdict line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.compare import Assessment, Standing
from harness.records import Code, Direction, Finding, Severity
from harness.verdict import Verdict

HEADER = ("device", "metric", "value", "limit", "vs best", "status")
OVER_CEILING = "HIGH"
"""The status of a figure over its ceiling (the comparison calls both misses `Standing.BELOW_LIMIT`)."""
_SHOWN = (Severity.FAIL, Severity.INCOMPLETE, Severity.WARNING)
_LAST = (Code.FAULT_INJECTED,)
"""Findings that only say how the run was set up go after those about the hardware."""


def table(assessments: Sequence[Assessment], findings: Iterable[Finding] = ()) -> list[str]:
    """A row per figure of one GPU; figures of pairs follow as matrices (`matrices`)."""
    if not assessments:
        return ["no measurements"]
    worst = _worst_by_metric(findings)
    single = [a for a in assessments if not a.measurement.peer]
    if not single:
        return matrices(assessments, findings)
    rows = [HEADER] + [_row(a, worst) for a in sorted(single, key=_order)]
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
    return lines + matrices(assessments, findings)


MARKS = {Standing.BELOW_LIMIT: "*", Standing.BEHIND_NODE: "<"}


def matrices(assessments: Sequence[Assessment], findings: Iterable[Finding] = ()) -> list[str]:
    """Each metric of pairs as a matrix, a row per source GPU and a column per peer; a figure
    below its floor is marked *, one behind the node's median pair <, a pair with another
    finding that stops a pass (copies that did not match) !."""
    flagged = {
        (f.gpu, f.details.get("peer"), f.metric)
        for f in findings
        if f.details.get("peer") and f.severity in (Severity.FAIL, Severity.INCOMPLETE)
    }
    by_metric: dict[str, list[Assessment]] = {}
    for a in assessments:
        if a.measurement.peer and a.device is not None and a.peer is not None:
            by_metric.setdefault(a.measurement.metric, []).append(a)
    lines: list[str] = []
    for metric, found in sorted(by_metric.items()):
        devices = sorted({d for a in found for d in (a.device, a.peer) if d is not None}, key=lambda d: d.index)
        cells = {(a.device.uuid, a.peer.uuid): a for a in found if a.device and a.peer}
        unit = found[0].measurement.unit
        rows = [["", *(d.label for d in devices)]]
        for source in devices:
            row = [source.label]
            for peer in devices:
                cell = cells.get((source.uuid, peer.uuid))
                if cell is None:
                    row.append("-")
                    continue
                mark = MARKS.get(cell.status) or ("!" if (source.uuid, peer.uuid, metric) in flagged else "")
                row.append(f"{cell.measurement.value:.4g}{mark}")
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        legend = "* below the floor, < behind the median pair, ! see findings"
        lines += ["", f"{metric} ({unit}), from row to column: {legend}"]
        lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first; within a severity, findings about the hardware before the run's own."""
    shown = [f for f in findings if f.severity in _SHOWN]
    return sorted(shown, key=lambda f: (_SHOWN.index(f.severity), f.code in _LAST))


def finding_lines(findings: Iterable[Finding]) -> list[str]:
    return [f"{f.severity.upper():<10} {f.code:<20} {f.message}" for f in ordered(findings)]


def verdict_line(verdict: Verdict, devices: int, path: Path | None) -> str:
    where = f"; result: {path}" if path else ""
    counted = f"{devices} device" + ("" if devices == 1 else "s")
    if verdict.reasons:
        why = verdict.reasons[0] + (f" (and {len(verdict.reasons) - 1} more)" if len(verdict.reasons) > 1 else "")
        return f"gpu-burnin verdict: {verdict.status.upper()} ({counted}): {why}{where}"
    return f"gpu-burnin verdict: {verdict.status.upper()} ({counted}){where}"


def _worst_by_metric(findings: Iterable[Finding]) -> dict[tuple[str, str], Finding]:
    """Per (GPU, metric), the most severe finding that stops a pass."""
    worst: dict[tuple[str, str], Finding] = {}
    for f in ordered(findings):
        if f.metric and f.severity in (Severity.FAIL, Severity.INCOMPLETE):
            worst.setdefault((f.gpu, f.metric), f)
    return worst


def _row(a: Assessment, worst: dict[tuple[str, str], Finding]) -> tuple[str, str, str, str, str, str]:
    m = a.measurement
    device = a.device.label if a.device else m.gpu
    limit = "-"
    if a.spec:
        limit = f"{'>=' if a.spec.direction is Direction.HIGHER else '<='} {a.spec.limit:.4g} {a.spec.unit}"
    ratio = f"{a.ratio:.3f}" if a.ratio is not None else "-"
    status: str = a.status
    if a.status is Standing.BELOW_LIMIT and a.spec is not None and a.spec.direction is Direction.LOWER:
        # A count of bad words over its ceiling is not low.
        status = OVER_CEILING
    found = worst.get((m.gpu, m.metric))
    if a.status is Standing.OK and found is not None:  # a figure met its floor, but something else is wrong with it
        status = str(found.code)
    return (device, m.metric, f"{m.value:.4g} {m.unit}", limit, ratio, status)


def _order(a: Assessment) -> tuple[int, str]:
    return (a.device.index if a.device else -1, a.measurement.metric)
