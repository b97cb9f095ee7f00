"""NVIDIA Xid errors: read them from the kernel log and judge the ones a run caused.

The driver reports every GPU fault it sees as an `NVRM: Xid (PCI:...): N, ...` line in
the kernel log, and only there: NVML keeps no history of them. A burn-in that does not
read the log would pass a GPU that fell off the bus and came back, or one that logged
uncorrectable ECC errors while the run's products still happened to match.

What each Xid means, and what NVIDIA says to do about it, is data (`harness/nvml/xid.toml`,
from NVIDIA's Xid catalog), not code, so that a site can extend it or judge an Xid its
own way (`load_table(extra=...)`) without a release. Only the Xids inside the run's own
window count (`in_window`): a stale Xid from days ago must never fail a node, and one
the log cannot date is reported, not judged.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.errors import ConfigError
from harness.records import Code, Finding, Remediation, Severity

SCHEMA_VERSION = 1
PACKAGED_TABLE = "xid.toml"
MAX_EVENTS_IN_DETAILS = 20
"""A GPU in trouble can log thousands of Xids; a finding keeps the first ones, and the count."""


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
            "follow the Xid that came before it (alone: restart Fabric Manager)",
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
        "CHECK_UVM": Judgement(Severity.FAIL, Remediation.REBOOT_NODE, "reboot the node (NVIDIA: check UVM)"),
    }
)
"""NVIDIA's immediate-action buckets, as this harness judges them (see the header of xid.toml)."""

UNKNOWN_XID = Judgement(Severity.FAIL, Remediation.REBOOT_NODE, "reboot the node")
"""An Xid the table does not know: a new driver's fault is still a fault."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class XidInfo:
    """One Xid as the table describes it."""

    xid: int
    name: str
    """NVIDIA's mnemonic."""
    description: str
    bucket: str
    """NVIDIA's immediate resolution bucket."""
    investigatory: str = ""
    """NVIDIA's investigatory bucket: what to do if the error persists."""
    judge_as: str = ""
    """A bucket this table judges the Xid as instead of NVIDIA's (the note says why)."""
    note: str = ""
    source: str = ""
    """The table file this entry came from."""

    @property
    def judged_bucket(self) -> str:
        return self.judge_as or self.bucket

    @property
    def judgement(self) -> Judgement:
        return BUCKETS[self.judged_bucket]

    @property
    def label(self) -> str:
        """Words for a message: NVIDIA's description, or its mnemonic where the catalog says "Unused"."""
        return self.name if self.description.strip().lower() == "unused" else self.description


@dataclasses.dataclass(frozen=True)
class XidTable:
    entries: Mapping[int, XidInfo]
    sources: tuple[str, ...]
    """The files merged into it, packaged table first."""

    def get(self, xid: int) -> XidInfo | None:
        return self.entries.get(xid)

    def __contains__(self, xid: object) -> bool:
        return xid in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def load_table(extra: Path | None = None) -> XidTable:
    """The packaged table, with a user's table of the same format merged over it.

    Each entry of `extra` replaces the packaged entry of its Xid whole (or adds one), so
    what a site changed is visible in its own file. Both are parsed strictly: a mistyped
    bucket would silently pass a broken GPU or fail a healthy one.
    """
    packaged = resources.files("harness.nvml").joinpath(PACKAGED_TABLE)
    where = str(packaged)
    try:
        text = packaged.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("the packaged Xid table is missing from this install (package data)", file=where) from err
    entries = _parse_text(text, where)
    sources = [where]
    if extra is not None:
        entries.update(_parse_text(_read(extra), str(extra)))
        sources.append(str(extra))
    return XidTable(MappingProxyType(dict(sorted(entries.items()))), tuple(sources))


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=path) from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text: {err}", file=path) from err


def _parse_text(text: str, where: str) -> dict[int, XidInfo]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", file=where) from err
    return _TableParser(where).table(data)


_XID_KEY = re.compile(r"^[1-9][0-9]{0,3}$")
_ENTRY_KEYS = {"name", "description", "bucket", "investigatory", "judge_as", "note"}


class _TableParser:
    """Checks one table file; every error names the file and the field."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str) -> ConfigError:
        return ConfigError(problem, file=self.where, field=field)

    def table(self, data: dict[str, Any]) -> dict[int, XidInfo]:
        self.only(data, "", {"schema_version", "xid"})
        version = data.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise self.fail("schema_version", f"is {version!r}; this gpu-burnin reads version {SCHEMA_VERSION}")
        entries = data.get("xid")
        if not isinstance(entries, dict) or not entries:
            raise self.fail("xid", "missing: list at least one [xid.NUMBER] table")
        return {self.number(key): self.entry(key, value) for key, value in entries.items()}

    def number(self, key: str) -> int:
        if not _XID_KEY.match(key):
            raise self.fail(f"xid.{key}", "an Xid is a whole number from 1 to 9999, without leading zeros")
        return int(key)

    def entry(self, key: str, value: Any) -> XidInfo:
        where = f"xid.{key}"
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        self.only(value, where, _ENTRY_KEYS)
        return XidInfo(
            xid=int(key),
            name=self.text(value, "name", where),
            description=self.text(value, "description", where),
            bucket=self.bucket(value, "bucket", where),
            investigatory=self.optional(value, "investigatory", where),
            judge_as=self.bucket(value, "judge_as", where) if "judge_as" in value else "",
            note=self.optional(value, "note", where),
            source=self.where,
        )

    def bucket(self, data: dict[str, Any], key: str, where: str) -> str:
        value = self.text(data, key, where)
        if value not in BUCKETS:
            raise self.fail(f"{where}.{key}", f"is {value!r}; expected one of {sorted(BUCKETS)}")
        return value

    def text(self, data: dict[str, Any], key: str, where: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            shown = "missing" if key not in data else f"expected a non-empty string, got {value!r}"
            raise self.fail(f"{where}.{key}", shown)
        return value

    def optional(self, data: dict[str, Any], key: str, where: str) -> str:
        value = data.get(key, "")
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"expected a string, got {value!r}")
        return value

    def only(self, data: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                field = f"{where}.{key}" if where else key
                raise self.fail(field, f"unknown key; expected one of {sorted(allowed)}")


# --- the kernel log -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class XidEvent:
    """One Xid line of the kernel log."""

    pci_bus_id: str
    """NVML's form, `00000000:19:00.0`, whatever form the driver printed."""
    xid: int
    when: datetime | None
    """Timezone-aware; None where the line carries no time this parser can place."""
    pid: int | None
    process: str
    """The process the driver names (empty when it says `<unknown>`)."""
    message: str
    """The driver's text after the pid and process name."""
    line: str
    """The raw log line."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "pci_bus_id": self.pci_bus_id,
            "xid": self.xid,
            "when": self.when.isoformat() if self.when else None,
            "pid": self.pid,
            "process": self.process,
            "message": self.message,
        }


_PCI = re.compile(
    r"^(?:PCI:)?(?:(?P<domain>[0-9A-Fa-f]{1,8}):)?(?P<bus>[0-9A-Fa-f]{1,2}):(?P<device>[0-9A-Fa-f]{1,2})"
    r"(?:\.(?P<function>[0-7]))?$"
)


def normalise_pci_bus_id(text: str) -> str:
    """`0000:19:00` (the driver's form), `00000000:19:00.0` (NVML's) or `19:00.0` -> `00000000:19:00.0`.

    NVML and nvidia-smi print the domain in 8 upper-case hex digits and the function;
    the driver prints 4 lower-case digits and no function. One form makes them compare.
    """
    match = _PCI.match(text.strip())
    if not match:
        raise ValueError(f"not a PCI bus id: {text!r}")
    domain = int(match["domain"] or "0", 16)
    bus, device, function = int(match["bus"], 16), int(match["device"], 16), int(match["function"] or "0")
    return f"{domain:08X}:{bus:02X}:{device:02X}.{function}"


def short_pci_bus_id(pci_bus_id: str) -> str:
    """The form the driver prints (`0000:9b:00`), for messages a person will grep the log for."""
    domain, bus, rest = normalise_pci_bus_id(pci_bus_id).split(":")
    return f"{domain[-4:]}:{bus}:{rest.split('.')[0]}".lower()


_XID_LINE = re.compile(
    r"NVRM: Xid \((?P<pci>(?:PCI:)?[0-9A-Fa-f:.]+)\): (?P<xid>\d+)(?:,\s*(?P<rest>.*))?$",
)
_PID_NAME = re.compile(r"^pid=(?P<pid>[^,]*)(?:,\s*name=(?P<name>[^,]*))?(?:,\s*(?P<message>.*))?$")
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_CTIME = re.compile(r"\[(?:[A-Z][a-z]{2} )?([A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2} \d{4})\]")
_UPTIME = re.compile(r"\[\s*(\d+\.\d+)\]")
_GPU_UUID_LINE = re.compile(r"NVRM: GPU at PCI:(?P<pci>[0-9A-Fa-f:.]+): (?P<uuid>GPU-[0-9A-Fa-f-]+)")


def parse_kernel_log(text: str, *, boot_time: datetime | None, local_tz: tzinfo | None = None) -> list[XidEvent]:
    """Every Xid line of a kernel log, in the order logged.

    Takes the formats the log is read in (each line's time is read from the text before
    `NVRM:`, so a date inside the driver's message is never mistaken for it):
    `dmesg --time-format iso` (`2024-07-24T09:41:49,123456+00:00`), with or without the
    `dmesg --decode` prefix (`kern  :warn  : `); `journalctl -o short-iso` and
    `short-iso-precise` (`2024-07-24T09:41:49+0000 host kernel: `); `dmesg -T` (`[Sun Feb
    23 16:24:18 2025]`, the node's local time: `local_tz`, by default this machine's); and
    plain `dmesg` (`[  123.456789]`, seconds since boot: absolute only given `boot_time`,
    else None). Lines in other formats (syslog's `Jan 21 02:21:33`, which has no year)
    still parse, with no time.
    """
    events = []
    for line in text.splitlines():
        found = _XID_LINE.search(line)
        if found:
            events.append(_event(line, found, boot_time=boot_time, local_tz=local_tz))
    return events


def _event(line: str, found: re.Match[str], *, boot_time: datetime | None, local_tz: tzinfo | None) -> XidEvent:
    pid, process, message = _pid_and_process(found["rest"] or "")
    return XidEvent(
        pci_bus_id=_pci_or_raw(found["pci"]),
        xid=int(found["xid"]),
        when=_safe_line_time(line[: found.start()], boot_time=boot_time, local_tz=local_tz),
        pid=pid,
        process=process,
        message=message,
        line=line,
    )


def _pci_or_raw(text: str) -> str:
    """A bus id in a form this parser does not know is kept as printed: the Xid still counts."""
    try:
        return normalise_pci_bus_id(text)
    except ValueError:
        return text.strip()


def _pid_and_process(rest: str) -> tuple[int | None, str, str]:
    """Drivers from r470 on print `pid=..., name=..., ` before the message; older ones do not."""
    match = _PID_NAME.match(rest)
    if not match:
        return None, "", rest.strip()
    pid_text = match["pid"].strip().strip("'")
    process = (match["name"] or "").strip()
    return (
        int(pid_text) if pid_text.isdigit() else None,
        "" if process == "<unknown>" else process,
        (match["message"] or "").strip(),
    )


def _safe_line_time(prefix: str, *, boot_time: datetime | None, local_tz: tzinfo | None) -> datetime | None:
    """A stamp that looks like a time and is not one (`Feb 30`) leaves the line undated, not the parse failed."""
    try:
        return _line_time(prefix, boot_time=boot_time, local_tz=local_tz)
    except (ValueError, OverflowError):
        return None


def _line_time(prefix: str, *, boot_time: datetime | None, local_tz: tzinfo | None) -> datetime | None:
    if iso := _ISO_TIME.search(prefix):
        return _localise(datetime.fromisoformat(_six_digit_fraction(iso.group().replace(" ", "T"))), local_tz)
    if ctime := _CTIME.search(prefix):
        return _localise(datetime.strptime(ctime.group(1), "%b %d %H:%M:%S %Y"), local_tz)
    if boot_time is not None and (uptime := _UPTIME.search(prefix)):
        return _localise(boot_time, local_tz) + timedelta(seconds=float(uptime.group(1)))
    return None


def _six_digit_fraction(text: str) -> str:
    """datetime reads at most microseconds; journalctl and dmesg never print more, but be safe."""
    return re.sub(r"([.,])(\d{6})\d+", r"\1\2", text)


def _localise(when: datetime, local_tz: tzinfo | None) -> datetime:
    """A time with no zone is the node's local time: `local_tz`, or this machine's zone."""
    if when.tzinfo is not None:
        return when
    return when.replace(tzinfo=local_tz) if local_tz is not None else when.astimezone()


def gpu_uuids_in_log(text: str) -> dict[str, str]:
    """PCI bus id -> GPU UUID from the driver's `NVRM: GPU at PCI:...: GPU-...` lines.

    The driver prints them with its first Xid of a GPU; they name a GPU that has fallen
    off the bus, which NVML can no longer list.
    """
    return {
        normalise_pci_bus_id(match["pci"]): match["uuid"]
        for match in (_GPU_UUID_LINE.search(line) for line in text.splitlines())
        if match
    }


def boot_time(stat: Path = Path("/proc/stat")) -> datetime | None:
    """When this machine booted (`btime` in /proc/stat), to date plain `dmesg` lines; None if unknown."""
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("btime "):
                return datetime.fromtimestamp(int(line.split()[1])).astimezone()
    except (OSError, ValueError):
        return None
    return None


def in_window(
    events: Iterable[XidEvent], start: datetime, end: datetime, *, slack: timedelta = timedelta(0)
) -> tuple[list[XidEvent], int]:
    """The events logged from `start` to `end` (both included), and how many had no time.

    Undated events are left out rather than judged, since they may be days old; the
    caller reports their count. `slack` widens the window on both sides, for a kernel
    clock that drifted from the wall clock (dmesg dates lines from the boot time).
    Naive `start` and `end` are this machine's local time.
    """
    low, high = _localise(start, None) - slack, _localise(end, None) + slack
    inside: list[XidEvent] = []
    untimed = 0
    for event in events:
        if event.when is None:
            untimed += 1
        elif low <= event.when <= high:
            inside.append(event)
    return inside, untimed


# --- reading the log --------------------------------------------------------------------------------------------

Runner = Callable[..., "subprocess.CompletedProcess[str]"]

DMESG_COMMAND = ("dmesg", "--time-format", "iso")
_JOURNAL_DENIED = ("not seeing messages", "insufficient permissions", "no journal files were opened")


def journalctl_command(since: datetime) -> tuple[str, ...]:
    """`--since @EPOCH`: systemd reads seconds since the epoch whatever the node's time zone."""
    return ("journalctl", "-k", "--since", f"@{int(since.timestamp())}", "-o", "short-iso", "--no-pager")


def read_kernel_log(since: datetime, *, timeout_s: float = 10.0, runner: Runner = subprocess.run) -> tuple[str, str]:
    """The kernel log since `since` (text), and a one-line problem ("" when it could be read).

    Tries journalctl (the current boot's kernel messages), then `dmesg --time-format iso`
    (the whole ring buffer: `in_window` drops what is older). A missing binary, a denied
    read (`kernel.dmesg_restrict`, a container without the journal) or a timeout is the
    problem string, never an exception: the run goes on, and says that it could not look.
    """
    problems = []
    for command in (journalctl_command(since), DMESG_COMMAND):
        text, problem = _run(command, timeout_s, runner)
        if not problem:
            return text, ""
        problems.append(problem)
    return "", "; ".join(problems)


def _run(command: Sequence[str], timeout_s: float, runner: Runner) -> tuple[str, str]:
    name = command[0]
    try:
        done = runner(
            list(command), capture_output=True, encoding="utf-8", errors="replace", timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        return "", f"{name}: not installed"
    except PermissionError as err:
        return "", f"{name}: not allowed to run it ({err.strerror})"
    except subprocess.TimeoutExpired:
        return "", f"{name}: no answer within {timeout_s:g} s"
    except OSError as err:
        return "", f"{name}: {err.strerror or err}"
    stderr = _first_line(done.stderr)
    if done.returncode != 0:
        return "", f"{name} exited with status {done.returncode}" + (f": {stderr}" if stderr else "")
    if name == "journalctl" and any(hint in (done.stderr or "").lower() for hint in _JOURNAL_DENIED):
        return "", f"journalctl: cannot read the kernel's messages: {stderr}"
    return done.stdout or "", ""


def _first_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


# --- findings ---------------------------------------------------------------------------------------------------


def findings(
    events: Iterable[XidEvent], gpus_by_pci: Mapping[str, str], table: XidTable, *, test: str = ""
) -> list[Finding]:
    """One finding per (GPU, Xid): how often, when first and last, and what to do.

    Give it the events of the run's window (`in_window`). `gpus_by_pci` maps PCI bus ids
    to GPU UUIDs; the bus ids of both may be in any form (NVML's, the driver's). An Xid on
    a bus id no GPU of the run has is still judged, with the bus id as its `gpu`: a GPU
    that fell off the bus is no longer listed by NVML.
    """
    known = {_pci_or_raw(pci): uuid for pci, uuid in gpus_by_pci.items()}
    groups: dict[tuple[str, int], list[XidEvent]] = {}
    for event in events:
        groups.setdefault((_pci_or_raw(event.pci_bus_id), event.xid), []).append(event)
    return [
        _finding(pci, known.get(pci), table.get(xid), xid, group, test) for (pci, xid), group in sorted(groups.items())
    ]


def _finding(pci: str, uuid: str | None, info: XidInfo | None, xid: int, events: list[XidEvent], test: str) -> Finding:
    judgement = info.judgement if info else UNKNOWN_XID
    label = info.label if info else "not in the table"
    who = f"GPU {_short_or_raw(pci)} ({uuid})" if uuid else f"PCI {_short_or_raw(pci)} (not a GPU this run knows)"
    return Finding(
        code=Code.XID,
        severity=judgement.severity,
        remediation=judgement.remediation,
        gpu=uuid or pci,
        test=test,
        message=f"{who}: Xid {xid} ({label}) x{len(events)} in this run: {judgement.action}",
        details=_details(pci, xid, info, events),
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
