"""The kernel log: where the driver reports every GPU fault, as `NVRM: Xid (PCI:...): N, ...` lines.

NVML keeps no history of Xids; the log does. This module reads it (journalctl, then
`dmesg --time-format iso`), parses its Xid lines into `XidEvent`s with times it can
place, and keeps those inside a run's own window (`in_window`): a stale Xid from days
ago must never fail a node, and one the log cannot date is reported, not judged.
What an Xid means is harness/nvml/xid_table.py; how one is judged in context,
harness/nvml/xid_rules.py; the findings, harness/nvml/xid_findings.py.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any


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
    r"NVRM: Xid \((?P<pci>(?:PCI:)?[0-9A-Fa-f:.]+)(?: GPU-I:\d+)?(?: GPU-CI:\d+)?\): "
    r"(?P<xid>\d+)(?:,\s*(?P<rest>.*))?$",
)
"""The driver's `NVRM: Xid (PCI:%04x:%02x:%02x): %d, ...`; on a GPU in MIG mode it names the GPU instance
and compute instance after the bus id (`PCI:0000:19:00 GPU-I:01 GPU-CI:00`): the Xid is still the GPU's."""
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
        pci_bus_id=pci_or_raw(found["pci"]),
        xid=int(found["xid"]),
        when=_safe_line_time(line[: found.start()], boot_time=boot_time, local_tz=local_tz),
        pid=pid,
        process=process,
        message=message,
        line=line,
    )


def pci_or_raw(text: str) -> str:
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
