"""How one Xid event is judged: by NVIDIA's resolution bucket, by what its message decodes to where
NVIDIA publishes a decode, and by its context (the Xids around it, and whose workload it was).

NVIDIA's Xid catalog (https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html) gives each
Xid an immediate-action bucket. For some, the bucket is a workflow that reads the message:

- WORKFLOW_XID_45: the driver appends `caused by previous Xid N` to a 45 that is not solo. NVIDIA
  ignores such a 45 and follows Xid N, so it is judged as that N; only a solo 45 is "restart Fabric
  Manager" (a 45 is also logged whenever a process with GPU work is killed).
- WORKFLOW_NVLINK5_ERR (144-150): the catalog's "XID 144-150 Decode" sheet, by the IntrInfo bits and
  the error status the message prints (`nvlink5` rows in xid.toml); many rows are IGNORE.
- XID_154: the message names the recovery action the driver now asks for (None, Drain P2P, Drain and
  Reset, GPU Reset Required, Node Reboot Required; newer drivers add others and other words).
- WORKFLOW_NVLINK_ERR (74): the bits set in the error registers the message prints; some are benign,
  some count only when they repeat on a link.

And the context: during gpu-burnin's own burn the application is known good, so an Xid NVIDIA blames
on the application is the GPU's (a table entry's `in_burn`: 13, 31, 43; 32, mostly PCI link quality);
outside it (the watch), such an Xid in separate bursts on one GPU within a day is too (`suspect_after`:
NVSentinel's rule, 13 or 31 twice on one GPU).

Nothing here fails a decode silently: a message this module cannot read is judged by the Xid's whole
bucket, which is never milder than a decode, and the finding says it was not decoded.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING

from harness.nvml.kernel_log import XidEvent, normalise_pci_bus_id
from harness.records import Remediation, Severity

if TYPE_CHECKING:
    from harness.nvml.xid_table import XidTable  # which imports this module


@dataclasses.dataclass(frozen=True)
class Judgement:
    """What one resolution bucket does to the verdict, and the words that tell a person what to do."""

    severity: Severity
    remediation: Remediation
    action: str


BUCKETS: Mapping[str, Judgement] = MappingProxyType(
    {
        "IGNORE": Judgement(Severity.INFO, Remediation.NONE, "no action (NVIDIA: ignore)"),
        "RESTART_APP": Judgement(Severity.WARNING, Remediation.RESTART_APP, "restart the application"),
        "RESET_GPU": Judgement(Severity.FAIL, Remediation.RESET_GPU, "reset the GPU"),
        "RESTART_BM": Judgement(Severity.FAIL, Remediation.REBOOT_NODE, "reboot the node"),
        "RESTART_VM": Judgement(Severity.FAIL, Remediation.REBOOT_NODE, "restart the VM (reboot the node)"),
        "CONTACT_SUPPORT": Judgement(
            Severity.FAIL, Remediation.REPLACE_GPU, "contact NVIDIA support (replace the GPU)"
        ),
        "WORKFLOW_XID_48": Judgement(
            Severity.FAIL, Remediation.RESET_GPU, "reset the GPU (drain the node first if Xid 63 or 64 came with it)"
        ),
        "WORKFLOW_XID_45": Judgement(
            Severity.WARNING,
            Remediation.RESTART_APP,
            "alone, restart Fabric Manager (a 45 is also logged whenever a process with GPU work is killed)",
        ),
        "WORKFLOW_NVLINK_ERR": Judgement(
            Severity.FAIL, Remediation.REBOOT_NODE, "reset the GPU or reboot the node (see nvidia-smi nvlink)"
        ),
        "WORKFLOW_NVLINK5_ERR": Judgement(Severity.FAIL, Remediation.RESET_GPU, "reset the GPU"),
        "CHECK_MECHANICALS": Judgement(
            Severity.FAIL, Remediation.REPLACE_GPU, "check the GPU's power cabling and seating"
        ),
        "UPDATE_SWFW": Judgement(Severity.FAIL, Remediation.CHECK_CONFIG, "update the driver and firmware"),
        "XID_154": Judgement(Severity.FAIL, Remediation.REBOOT_NODE, "do the recovery action the message names"),
        "CHECK_UVM": Judgement(
            Severity.WARNING,
            Remediation.RESET_GPU,
            "reset the GPU if its jobs use UVM (managed memory) or it hosts vGPUs; otherwise nothing",
        ),
        # Not NVIDIA's immediate buckets: the judgements this harness gives decodes and contexts.
        "XID_154_EVAL": Judgement(
            Severity.WARNING, Remediation.RESTART_APP, "follow the Xid 154 logged with it; without one, restart the app"
        ),
        "DRAIN_P2P": Judgement(
            Severity.FAIL,
            Remediation.RESET_GPU,
            "drain the GPU's peer-to-peer traffic (end its jobs), then do the recovery action the driver names next",
        ),
        "DRAIN_AND_RESET": Judgement(Severity.FAIL, Remediation.RESET_GPU, "drain the GPU's jobs, then reset it"),
        "SUSPECT_GPU": Judgement(
            Severity.FAIL,
            Remediation.INSPECT_HARDWARE,
            "suspect the GPU: run DCGM diagnostics (dcgmi diag -r 3), then field diagnostics",
        ),
        "CHECK_PCIE": Judgement(
            Severity.WARNING,
            Remediation.INSPECT_HARDWARE,
            "check the GPU's PCIe link (reseat it; the slot, riser or retimer), then restart the application",
        ),
        "PCIE_FAULT": Judgement(
            Severity.FAIL, Remediation.INSPECT_HARDWARE, "the GPU's PCIe link is suspect: reseat it, check the slot"
        ),
        "CHECK_NVLINK_CONNECTIONS": Judgement(
            Severity.FAIL,
            Remediation.INSPECT_HARDWARE,
            "check the NVLink's mechanical connections and reseat; run field diagnostics if it persists",
        ),
        "ENABLE_ECC": Judgement(Severity.FAIL, Remediation.CHECK_CONFIG, "enable ECC (row remapping) and reboot"),
        "NOTE": Judgement(Severity.WARNING, Remediation.NONE, "no action now; worth a look if it recurs"),
        "NOT_GIVEN": Judgement(Severity.FAIL, Remediation.REBOOT_NODE, "reboot the node (the catalog gives no action)"),
    }
)
"""NVIDIA's immediate-action buckets as this harness judges them (see the header of xid.toml), and the
harness's own for decodes and contexts. NOT_GIVEN: the catalog lists the Xid with no bucket yet."""

UNKNOWN_XID = Judgement(Severity.FAIL, Remediation.REBOOT_NODE, "reboot the node")
"""An Xid the table does not know: a new driver's fault is still a fault."""

_SEVERITY = (Severity.INFO, Severity.WARNING, Severity.INCOMPLETE, Severity.FAIL)
_REMEDIATION = (
    Remediation.NONE,
    Remediation.RERUN,
    Remediation.RESTART_APP,
    Remediation.CHECK_CONFIG,
    Remediation.RESET_GPU,
    Remediation.INSPECT_HARDWARE,
    Remediation.REBOOT_NODE,
    Remediation.REPLACE_GPU,
)


def strictness(judgement: Judgement) -> tuple[int, int]:
    """For picking the strictest of several: severity first, then the more drastic remediation."""
    return _SEVERITY.index(judgement.severity), _REMEDIATION.index(judgement.remediation)


@dataclasses.dataclass(frozen=True)
class Reading:
    """How one event is judged."""

    bucket: str
    """The bucket it is judged by; "" for an Xid the table does not know."""
    why: str = ""
    """What its message or its context says, in a few words, where that decided it."""
    escalated: bool = False
    """Judged stricter than its own bucket because it repeated (the watch acts on it anew)."""

    @property
    def judgement(self) -> Judgement:
        return BUCKETS[self.bucket] if self.bucket else UNKNOWN_XID


@dataclasses.dataclass(frozen=True, kw_only=True)
class Nvlink5Row:
    """One row of the catalog's "XID 144-150 Decode" sheet."""

    xid: int
    unit: str
    """The sub-component the message prints: `NETIR_LINK_EVT`; two names as V1/V2 (drivers before / from R575)."""
    v1: str
    """IntrInfo bits (32, most significant first; '-' any) for drivers before R575."""
    v2: str
    """The same from R575."""
    status: tuple[int, ...] = ()
    """The error status values it is for; empty: any (the link events)."""
    bucket: str
    investigatory: str = ""
    severity: str = ""
    promoted: tuple[str, str, str] = ("", "", "")
    """NVIDIA's "Action 2": IntrInfo bits (V1, V2) under which the row's bucket is this one instead."""

    def matches(self, intr: int, status: int | None) -> bool:
        by_status = not self.status or status in self.status
        return by_status and any(_bits(pattern, intr) for pattern in (self.v1, self.v2, *self.promoted[:2]))

    def names(self, unit: str) -> bool:
        return unit in self.unit.split("/")

    def bucket_for(self, intr: int) -> str:
        v1, v2, bucket = self.promoted
        return bucket if bucket and (_bits(v1, intr) or _bits(v2, intr)) else self.bucket


def _bits(pattern: str, value: int) -> bool:
    if not pattern:
        return False
    bits = f"{value & 0xFFFFFFFF:032b}"
    return all(want in ("-", got) for want, got in zip(pattern, bits, strict=True))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Context:
    own_burn: bool = False
    """gpu-burnin's own stress tests ran on these GPUs: the application is known good."""
    earlier: Sequence[XidEvent] = ()
    """Events before the ones judged (the watch's last day): for causes and repeats, never judged again."""


REPEAT_WINDOW = timedelta(hours=24)
"""How far back repeats count (NVSentinel queries the last 24 hours of Xid 13 and 31)."""
BURST_GAP = timedelta(seconds=60)
"""Events closer than this are one burst: one application fault logs an Xid 13 for every SM it hit."""


def read(event: XidEvent, table: XidTable, context: Context, events: Sequence[XidEvent]) -> Reading:
    """How `event` is judged; `events` are those judged with it (the run's, or the poll's)."""
    info = table.get(event.xid)
    if info is None:
        return Reading("")
    if info.judge_as:  # this table's own judgement, or a site's: no decode
        reading = Reading(info.judge_as)
    else:
        decode = _DECODERS.get(info.bucket)
        reading = decode(event, table, context, events) if decode else Reading(info.bucket)
    if info.in_burn and context.own_burn:
        return Reading(info.in_burn, "in gpu-burnin's own burn, whose application is known good")
    if info.suspect_after and not context.own_burn:
        bursts = _bursts(event, [*context.earlier, *events])
        if bursts >= info.suspect_after:
            why = f"{bursts} separate bursts of it on this GPU within {REPEAT_WINDOW.total_seconds() / 3600:g} h"
            return Reading(info.in_burn or "SUSPECT_GPU", why, escalated=True)
    return reading


# --- the decodes ------------------------------------------------------------------------------------------------

Decoder = Callable[["XidEvent", "XidTable", Context, Sequence["XidEvent"]], Reading]

_CAUSE = re.compile(r"caused by previous Xid\s+(\d+)", re.IGNORECASE)


def _xid_45(event: XidEvent, table: XidTable, context: Context, events: Sequence[XidEvent]) -> Reading:
    found = _CAUSE.search(event.message or event.line)
    cause = int(found[1]) if found else 45
    if cause == 45:
        return Reading("WORKFLOW_XID_45", "solo: no 'caused by previous Xid'")
    before = [e for e in [*context.earlier, *events] if e.xid == cause and _same_gpu(e, event) and _not_after(e, event)]
    # The cause's own line, or where the log has none (before the run's window), the cause by its number alone.
    cause_event = before[-1] if before else dataclasses.replace(event, xid=cause, message="", line="")
    base = read(cause_event, table, context, events)
    said = f"caused by previous Xid {cause}: judged as that Xid (NVIDIA: ignore the 45, follow the other)"
    return Reading(base.bucket, f"{said}; {base.why}" if base.why else said, base.escalated)


_ACTION_CODES = {
    0: ("IGNORE", "None"),
    1: ("RESET_GPU", "GPU Reset"),
    2: ("RESTART_BM", "Node Reboot"),
    3: ("DRAIN_P2P", "Drain P2P"),
    4: ("DRAIN_AND_RESET", "Drain and Reset"),
    5: ("XID_154", "Recover IMEX Domain"),
    6: ("RESET_GPU", "Bus Reset"),
    7: ("RESTART_BM", "System Reboot"),
}
"""nvmlDeviceGpuRecoveryAction_t, as `to 0xN (...)` in an Xid 154 message."""
_ACTION_WORDS = (
    ("drain and reset", 4),
    ("drain p2p", 3),
    ("node reboot", 2),
    ("system reboot", 7),
    ("bus reset", 6),
    ("gpu reset", 1),
    ("reset", 1),
    ("none", 0),
)
"""Words a driver may name the action by, most specific first, for wordings without the number."""
_ACTION = re.compile(r"\bto\s+(?:0x(?P<code>[0-9A-Fa-f]+)\s*)?(?:\((?P<words>[^)]*)\)|(?P<bare>[A-Za-z][\w ]*))?")


def _xid_154(event: XidEvent, table: XidTable, context: Context, events: Sequence[XidEvent]) -> Reading:
    found = None
    for found in _ACTION.finditer(event.message or event.line):  # noqa: B007 - the last "to ...": the action now
        pass
    code = int(found["code"], 16) if found and found["code"] else None
    words = ((found["words"] or found["bare"] or "") if found else "").strip()
    if code is None:
        code = next((number for phrase, number in _ACTION_WORDS if phrase in words.lower()), None)
    if code not in _ACTION_CODES:
        return Reading("XID_154", "the recovery action the message names was not recognised")
    bucket, name = _ACTION_CODES[code]
    return Reading(bucket, f"the driver now asks for: {words or name} (0x{code:x})")


_REGISTERS = re.compile(r"(?P<unit>[A-Z][A-Z0-9_]*(?:/[A-Z0-9_]+)*)?[^(\[]*[(\[](?P<values>[^)\]]*)[)\]]")
_HEX = re.compile(r"0x[0-9A-Fa-f]+")


def _nvlink5(event: XidEvent, table: XidTable, context: Context, events: Sequence[XidEvent]) -> Reading:
    """The message: `<unit> <Fatal|Nonfatal> XC0 i0 Link NN (<IntrInfo> <error status> <debug data>...)`."""
    found = _REGISTERS.search(event.message or "")
    values = [int(text, 16) for text in _HEX.findall(found["values"])] if found else []
    if not values:
        return Reading("WORKFLOW_NVLINK5_ERR", "not decoded: the message prints no IntrInfo")
    unit = found["unit"] if found and found["unit"] else ""
    intr, status = values[0], values[1] if len(values) > 1 else None
    matching = [row for row in table.nvlink5 if row.xid == event.xid and row.matches(intr, status)]
    rows = [row for row in matching if row.names(unit)] or matching
    said = f"{unit or 'unit not named'}, IntrInfo 0x{intr:08x}"
    said += f", error status 0x{status:08x}" if status is not None else ""
    if not rows:
        return Reading("WORKFLOW_NVLINK5_ERR", f"{said}: no row of NVIDIA's 144-150 decode matches")
    row = max(rows, key=lambda r: strictness(BUCKETS[r.bucket_for(intr)]))
    bucket = row.bucket_for(intr)
    then = f", then {row.investigatory}" if row.investigatory else ""
    return Reading(bucket, f"{said}: NVIDIA's decode, {row.unit} {row.severity}: {bucket}{then}")


_LINK_REGISTERS = re.compile(r"link\s*(?P<link>\d+)\s*\((?P<values>[^)]*)\)", re.IGNORECASE)
_NVLINK_BITS: dict[tuple[int, int], str] = {
    **{(0, bit): "ignore" for bit in (0, 23, 30)},
    **{(0, bit): "sympathetic" for bit in (1, 20)},
    **{(0, bit): "ecc_parity" for bit in (4, 5)},
    **{(0, bit): "mechanical" for bit in (8, 9, 12, 16, 17, 24, 28)},
    **{(0, bit): "marginal_si" for bit in (21, 22)},
    **{(0, bit): "repeats" for bit in (27, 29)},
    **{(2, bit): "ecc_parity" for bit in (0, 1, 2, 6)},
    (2, 13): "unexpected",
    **{(2, bit): "repeats" for bit in (16, 17, 18, 19)},
    **{(3, bit): "sympathetic" for bit in (16, 17)},
    (3, 18): "fabric_reset",
    **{(4, bit): "ecc_parity" for bit in (18, 19, 21, 22, 24, 25, 27, 28)},
    **{(4, bit): "threshold" for bit in (20, 23, 26, 29)},
}
"""WORKFLOW_NVLINK_ERR: (register, bit) -> class. Registers 0, 2, 3 and 4 are the ones NVIDIA reads."""
_NVLINK_CLASS = {
    "ignore": "IGNORE",
    "threshold": "IGNORE",  # ECC errors over a threshold, none uncorrectable: continue
    "mechanical": "CHECK_NVLINK_CONNECTIONS",
    "unexpected": "CONTACT_SUPPORT",  # not expected in production: report a bug
}
_WITH_OTHERS = {"sympathetic", "fabric_reset", "marginal_si"}
"""Judged by the other errors when there are any (other bits, other Xids on the GPU); solo, on their own."""


def _xid_74(event: XidEvent, table: XidTable, context: Context, events: Sequence[XidEvent]) -> Reading:
    """The message: `NVLink: fatal error detected on link 14(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)`."""
    registers = _registers(event)
    if registers is None:
        return Reading("WORKFLOW_NVLINK_ERR", "not decoded: the message prints no error registers")
    link, values = registers
    bits = _set_bits(values)
    unknown = sorted(bits - set(_NVLINK_BITS))
    if unknown or not bits:
        listed = ", ".join(f"register {reg} bit {bit}" for reg, bit in unknown) or "no bit set"
        return Reading("WORKFLOW_NVLINK_ERR", f"link {link}: {listed}, which NVIDIA's workflow does not list")
    classes = {_NVLINK_BITS[found] for found in bits}
    others = classes - _WITH_OTHERS - {"ignore", "threshold"}
    other_xids = any(e.xid != 74 and _same_gpu(e, event) for e in [*context.earlier, *events])
    readings = []
    for kind in sorted(classes):
        if kind in _WITH_OTHERS and (others or other_xids):
            continue  # NVIDIA: follow the resolution of the others
        if kind in ("ecc_parity", "repeats"):
            seen = sum(1 for e in [*context.earlier, *events] if e.xid == 74 and _has(e, event, link, kind))
            over = seen > 2 if kind == "ecc_parity" else seen >= 2
            bucket = "CONTACT_SUPPORT" if over else "NOTE"
            readings.append(Reading(bucket, f"link {link}: {kind.replace('_', '/')} bits, {seen} time(s)"))
        elif kind == "marginal_si":
            readings.append(Reading("CHECK_NVLINK_CONNECTIONS", f"link {link}: marginal channel signal integrity"))
        elif kind in _WITH_OTHERS:  # sympathetic or fabric reset bits alone: NVIDIA: report a bug
            readings.append(Reading("WORKFLOW_NVLINK_ERR", f"link {link}: {kind.replace('_', ' ')} bits alone"))
        else:
            readings.append(Reading(_NVLINK_CLASS[kind], f"link {link}: {kind} bits"))
    if not readings:  # only secondary bits, beside other Xids on the GPU: those are judged, each on its own
        return Reading("IGNORE", f"link {link}: secondary bits beside other Xids on this GPU, judged by those")
    return max(readings, key=lambda r: strictness(r.judgement))


def _registers(event: XidEvent) -> tuple[int, list[int]] | None:
    found = _LINK_REGISTERS.search(event.message or "")
    values = [int(text, 16) for text in _HEX.findall(found["values"])] if found else []
    if not found or len(values) < 5:
        return None
    return int(found["link"]), values


def _has(event: XidEvent, like: XidEvent, link: int, kind: str) -> bool:
    """`event` is an Xid 74 on the GPU of `like`, on `link`, with bits of `kind` set."""
    registers = _registers(event) if _same_gpu(event, like) else None
    if registers is None or registers[0] != link:
        return False
    return any(_NVLINK_BITS.get(found) == kind for found in _set_bits(registers[1]))


def _set_bits(values: list[int]) -> set[tuple[int, int]]:
    """(register, bit) of every bit set in the registers NVIDIA's workflow reads: the first, third, fourth, fifth."""
    return {(reg, bit) for reg in (0, 2, 3, 4) for bit in range(32) if values[reg] >> bit & 1}


_DECODERS: Mapping[str, Decoder] = MappingProxyType(
    {
        "WORKFLOW_XID_45": _xid_45,
        "WORKFLOW_NVLINK5_ERR": _nvlink5,
        "XID_154": _xid_154,
        "WORKFLOW_NVLINK_ERR": _xid_74,
    }
)
"""NVIDIA's workflow buckets this module decodes the message for."""


# --- context ----------------------------------------------------------------------------------------------------


def _same_gpu(a: XidEvent, b: XidEvent) -> bool:
    return _bus(a.pci_bus_id) == _bus(b.pci_bus_id)


@functools.lru_cache(maxsize=256)
def _bus(pci: str) -> str:
    try:
        return normalise_pci_bus_id(pci)
    except ValueError:
        return pci


def _not_after(a: XidEvent, b: XidEvent) -> bool:
    return a.when is None or b.when is None or a.when <= b.when


def _bursts(event: XidEvent, seen: Sequence[XidEvent]) -> int:
    """Separate bursts of this Xid on this GPU within the repeat window up to `event` (itself included)."""
    if event.when is None:
        return 1
    low, high = event.when - REPEAT_WINDOW, event.when
    same = [e.when for e in seen if e.xid == event.xid and e.when is not None and _same_gpu(e, event)]
    return _count_bursts(sorted(when for when in same if low <= when <= high) or [high])


def _count_bursts(times: Sequence[datetime]) -> int:
    return 1 + sum(1 for a, b in zip(times, times[1:], strict=False) if b - a > BURST_GAP)
