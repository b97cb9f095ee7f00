"""Xid findings: the Xids of a run's window, judged, as one finding per GPU and Xid.

Each event is judged in context, as NVIDIA's catalog says (harness/nvml/xid_rules.py),
against the table of what each Xid means (harness/nvml/xid_table.py: data a site can
extend, `--xid-table`); the events come from the kernel log (harness/nvml/kernel_log.py)
or NVML's event stream. A burn-in that did not judge them would pass a GPU that fell off
the bus and came back, or one that logged uncorrectable ECC errors while the run's
products still happened to match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.nvml import xid_rules
from harness.nvml.kernel_log import XidEvent, pci_or_raw, short_pci_bus_id
from harness.nvml.xid_rules import Reading
from harness.nvml.xid_table import XidInfo, XidTable
from harness.records import Code, Finding, Remediation, Severity

MAX_EVENTS_IN_DETAILS = 20
"""A GPU in trouble can log thousands of Xids; a finding keeps the first ones, and the count."""


def findings(
    events: Iterable[XidEvent],
    gpus_by_pci: Mapping[str, str],
    table: XidTable,
    *,
    test: str = "",
    own_burn: bool = False,
    earlier: Sequence[XidEvent] = (),
) -> list[Finding]:
    """One finding per (GPU, Xid): how often, when first and last, and what to do.

    Give it the events of the run's window (`in_window`). `gpus_by_pci` maps PCI bus ids
    to GPU UUIDs; the bus ids of both may be in any form (NVML's, the driver's). An Xid on
    a bus id no GPU of the run has is still judged, with the bus id as its `gpu`: a GPU
    that fell off the bus is no longer listed by NVML.

    Each event is judged in context (harness/nvml/xid_rules.py): by what its message decodes
    to, by the Xids around it (`earlier`: events before these, read for causes and repeats,
    not judged again), and, with `own_burn`, as the Xid of gpu-burnin's own known-good
    workload. A finding takes the strictest of its events' judgements.
    """
    listed = list(events)
    context = xid_rules.Context(own_burn=own_burn, earlier=tuple(earlier))
    known = {pci_or_raw(pci): uuid for pci, uuid in gpus_by_pci.items()}
    groups: dict[tuple[str, int], list[XidEvent]] = {}
    for event in listed:
        groups.setdefault((pci_or_raw(event.pci_bus_id), event.xid), []).append(event)
    found = []
    for (pci, number), group in sorted(groups.items()):
        readings = [xid_rules.read(event, table, context, listed) for event in group]
        found.append(_finding(pci, known.get(pci), table.get(number), number, group, readings, test))
    return found


def _finding(
    pci: str,
    uuid: str | None,
    info: XidInfo | None,
    xid: int,
    events: list[XidEvent],
    readings: list[Reading],
    test: str,
) -> Finding:
    reading = max(reversed(readings), key=lambda r: xid_rules.strictness(r.judgement))  # the latest of the strictest
    judgement = reading.judgement
    label = info.label if info else "not in the table"
    who = f"GPU {_short_or_raw(pci)} ({uuid})" if uuid else f"PCI {_short_or_raw(pci)} (not a GPU this run knows)"
    why = f" ({reading.why})" if reading.why else ""
    details = _details(pci, xid, info, events)
    if info is not None:
        details["judged_as"] = reading.bucket
    whys = list(dict.fromkeys(r.why for r in readings if r.why))
    details.update(decoded=whys[:MAX_EVENTS_IN_DETAILS], escalated=any(r.escalated for r in readings))
    return Finding(
        code=Code.XID,
        severity=judgement.severity,
        remediation=judgement.remediation,
        gpu=uuid or pci,
        test=test,
        message=f"{who}: Xid {xid} ({label}) x{len(events)} in this run: {judgement.action}{why}",
        details=details,
    )


def _short_or_raw(pci: str) -> str:
    try:
        return short_pci_bus_id(pci)
    except ValueError:
        return pci


def _details(pci: str, xid: int, info: XidInfo | None, events: list[XidEvent]) -> dict[str, Any]:
    times = sorted(event.when for event in events if event.when is not None)
    details: dict[str, Any] = {
        "pci_bus_id": pci,
        "xid": xid,
        "count": len(events),
        "first": times[0].isoformat() if times else None,
        "last": times[-1].isoformat() if times else None,
        "events": [event.to_dict() for event in events[:MAX_EVENTS_IN_DETAILS]],
        "events_left_out": max(0, len(events) - MAX_EVENTS_IN_DETAILS),
    }
    if info is None:
        details["in_table"] = False
        return details
    details.update(
        in_table=True,
        name=info.name,
        description=info.description,
        bucket=info.bucket,
        judged_as=info.judged_bucket,
        investigatory=info.investigatory,
        note=info.note,
        table=info.source,
    )
    return details


def untimed_finding(count: int, *, test: str = "") -> Finding | None:
    """The warning for Xid lines the log could not date: seen, not judged."""
    if count <= 0:
        return None
    return Finding(
        code=Code.XID,
        severity=Severity.WARNING,
        remediation=Remediation.CHECK_CONFIG,
        test=test,
        message=f"{count} Xid line(s) in the kernel log carry no time this run can place, so they were not judged; "
        "read the log with dmesg --time-format iso or journalctl -o short-iso",
        details={"untimed": count},
    )
