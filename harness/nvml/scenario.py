"""A scenario of the simulated NVML (harness/nvml/sim.py, docs/health.md), read strictly.

The whole file is checked when it is loaded, as a baseline is: an unknown key, a value of
the wrong type (a string temperature, a float count, true for a number, NaN or infinity,
a negative or out-of-range GPU index), an unknown test group or clock event reason, each
is one ConfigError naming the file and the field (`gpus[2].temperature_c`). A scenario
that loads can then be played for hours by the watch without a traceback: every value
the simulated calls turn into NVML's answers has the type NVML answers with.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from harness.groups import GROUPS
from harness.nvml import snapshot as snap
from harness.nvml.kernel_log import normalise_pci_bus_id
from harness.records import Code, Severity
from harness.strict import Strict, load_toml

MAX_BYTES = 1 << 20
"""A scenario is a page of TOML; a bigger file is a mistake, not a scenario."""
MAX_WHOLE = 2**63 - 1
"""NVML's counters are 64-bit; a result file's readers (pandas) hold signed 64-bit."""
MAX_BURST = 10_000
"""Xid events in one burst: more would keep the watch draining events instead of polling."""
MAX_XID = 9999

TEXT, WHOLE, REAL, FLAG = "text", "whole", "real", "flag"
"""A value's kind: a non-empty string; a whole number from 0; a finite number from 0; true or false."""
EVENTS, NAMES, LINKS = "events", "names", "links"
"""clock_events (reason names), unsupported (GPU field names), nvlinks (a list of link tables)."""

_KIND_OF_TYPE = {"int": WHOLE, "int | None": WHOLE, "bool | None": FLAG}


def _kinds(cls: type) -> dict[str, str]:
    """A snapshot section's fields and their kinds, from its declaration (a new field is read too)."""
    return {f.name: _KIND_OF_TYPE[str(f.type)] for f in dataclasses.fields(cls)}


SECTIONS: dict[str, dict[str, str]] = {
    "ecc": _kinds(snap.Ecc),
    "retired": _kinds(snap.RetiredPages),
    "remap": _kinds(snap.RowRemap),
    "pcie": _kinds(snap.PcieLink),
}
LINK_FIELDS = _kinds(snap.NvLink)
FIELDS: dict[str, str] = {
    "index": WHOLE,
    "uuid": TEXT,
    "name": TEXT,
    "serial": TEXT,
    "pci_bus_id": TEXT,
    "memory_bytes": WHOLE,
    "ecc_enabled": FLAG,
    "clock_events": EVENTS,
    # NVML answers temperatures and clocks in whole degrees and MHz, power in milliwatts.
    "temperature_c": WHOLE,
    "memory_temperature_c": WHOLE,
    "power_w": REAL,
    "power_limit_w": REAL,
    "sm_clock_mhz": WHOLE,
    "memory_clock_mhz": WHOLE,
    "nvlinks": LINKS,
    "persistence": FLAG,
    "mig": FLAG,
    "unsupported": NAMES,
    **{name: "section" for name in SECTIONS},
}
"""Every field a scenario's GPU may give: GpuHealth's (harness/nvml/snapshot.py), memory_bytes and unsupported."""
TOP = {"driver", "cuda", "description", "expect", "gpus", "changes", "xids"}
CHANGE = {"after", "during", "at", "until", "gpu", "set", "lost"}
XID = {"gpu", "xid", "at", "after", "during", "count"}


@dataclasses.dataclass(frozen=True)
class Change:
    after: str
    """The test group after which it applies ("\\0": none)."""
    during: str
    """The test group while which it applies ("\\0": none)."""
    gpu: int
    set: dict[str, Any]
    lost: bool
    at: float | None = None
    """On the timeline (seconds): applies from then on, while the simulation's clock is set."""
    until: float | None = None

    def due(self, finished: Collection[str], running: Collection[str], now_s: float | None) -> bool:
        if self.after in finished or self.during in running:
            return True
        if self.at is None or now_s is None:
            return False
        return self.at <= now_s and (self.until is None or now_s < self.until)


@dataclasses.dataclass(frozen=True)
class Xid:
    gpu: int
    xid: int
    after: str
    at: float | None = None
    count: int = 1
    during: str = ""
    """The test group while (or after) which it comes: an Xid of a burn."""

    def due(self, finished: Collection[str], running: Collection[str], now_s: float | None) -> bool:
        if self.at is not None:
            return now_s is not None and self.at <= now_s
        if self.during:
            return self.during in running or self.during in finished
        return not self.after or self.after in finished


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scenario:
    path: Path
    driver: str
    cuda: int
    """As nvmlSystemGetCudaDriverVersion_v2 answers: 13000 for 13.0."""
    gpus: tuple[dict[str, Any], ...]
    """Each GPU's state before any change: the defaults, with what the file says over them."""
    changes: tuple[Change, ...] = ()
    xids: tuple[Xid, ...] = ()
    description: str = ""
    expect: tuple[str, ...] = ()
    """The findings it is written to produce, as CODE:severity:gpu (the GPU's index, or `node`)."""


def load(path: Path) -> Scenario:
    """The scenario in `path`, checked whole; ConfigError (naming the file and field) for anything amiss."""
    data, _ = load_toml(path, option="nvml", limit=MAX_BYTES)
    return _Reader(path).scenario(data)


def default_gpu(index: int) -> dict[str, Any]:
    """A healthy H100 SXM with nothing to report: a scenario says only what differs."""
    return {
        "index": index,
        "uuid": f"GPU-5141dc00-0000-4000-8000-{index:012d}",
        "name": "NVIDIA H100 80GB HBM3",
        "serial": f"165000000{index:04d}",
        "pci_bus_id": f"00000000:{0x18 + 0x10 * index:02X}:00.0",
        "memory_bytes": 85520809984,
        "ecc_enabled": True,
        "ecc": {name: 0 for name in SECTIONS["ecc"]},
        "retired": {"single_bit": 0, "double_bit": 0, "pending": False},
        "remap": {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False},
        "clock_events": ["gpu_idle"],
        "temperature_c": 34,
        "memory_temperature_c": 38,
        "power_w": 72.5,
        "power_limit_w": 700.0,
        "sm_clock_mhz": 1980,
        "memory_clock_mhz": 2619,
        "pcie": {"gen": 5, "gen_max": 5, "width": 16, "width_max": 16},
        "nvlinks": [
            {"link": link, "active": True, "crc_errors": 0, "replay_errors": 0, "recovery_errors": 0}
            for link in range(18)
        ],
        "persistence": True,
        "mig": False,
    }


_CUDA = re.compile(r"^(\d{1,3})(?:\.(\d{1,2}))?$")
_MOMENT = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_EXPECT = re.compile(r"^([A-Z_]+):([a-z]+):(\d+|node)$")
NEVER = "\0"
"""A test group name no group has: a change without `after` (or `during`) never applies by it."""


class _Reader(Strict):
    """The strict helpers (harness/strict.py: fail, only, get, number), and the scenario's own kinds."""

    def scenario(self, data: dict[str, Any]) -> Scenario:
        self.only(data, "", TOP)
        cuda_text = self.get(data, "cuda", str, default="13.0")
        found = _CUDA.match(cuda_text)
        if not found:
            raise self.fail("cuda", f"is {cuda_text!r}; expected a version such as '13.0'")
        given = self.get(data, "gpus", list, default=[])
        if not given:
            raise self.fail("gpus", "a scenario needs at least one GPU ([[gpus]])")
        gpus = tuple(self.gpu(index, value) for index, value in enumerate(given))
        for field in ("uuid", "pci_bus_id"):
            seen: dict[str, int] = {}
            for index, gpu in enumerate(gpus):
                same = normalise_pci_bus_id(gpu[field]) if field == "pci_bus_id" else gpu[field]
                other = seen.setdefault(same, index)
                if other != index:
                    raise self.fail(f"gpus[{index}].{field}", f"is GPU {other}'s too; each GPU has its own")
        changes = self.get(data, "changes", list, default=[])
        xids = self.get(data, "xids", list, default=[])
        return Scenario(
            path=self.path,
            driver=self.nonempty(data, "driver", "", default="580.159.04"),
            cuda=int(found[1]) * 1000 + int(found[2] or 0) * 10,
            gpus=gpus,
            changes=tuple(self.change(f"changes[{n}]", c, len(gpus)) for n, c in enumerate(changes)),
            xids=tuple(self.xid(f"xids[{n}]", x, len(gpus)) for n, x in enumerate(xids)),
            description=self.get(data, "description", str, default=""),
            expect=self.expect(data, len(gpus)),
        )

    def gpu(self, index: int, given: Any) -> dict[str, Any]:
        where = f"gpus[{index}]"
        gpu = default_gpu(index)
        for key, value in self.table(given, where, set(FIELDS)).items():
            gpu[key] = {**gpu[key], **value} if key in SECTIONS else value
        if gpu["index"] != index:
            raise self.fail(f"{where}.index", f"is {gpu['index']}; a GPU's index is its place in gpus ({index})")
        try:
            normalise_pci_bus_id(gpu["pci_bus_id"])
        except ValueError as err:
            raise self.fail(f"{where}.pci_bus_id", str(err)) from None
        return gpu

    def change(self, where: str, given: Any, gpus: int) -> Change:
        self.only(self.mapping(given, where), where, CHANGE)
        at = self.moment(given, "at", where)
        until = self.moment(given, "until", where)
        after, during = self.group(given, "after", where), self.group(given, "during", where)
        if at is None and after == NEVER and during == NEVER:
            raise self.fail(where, "needs after or during (the test group after which, or while, it applies), or at")
        if until is not None and (at is None or until <= at):
            raise self.fail(f"{where}.until", "needs an `at` before it")
        lost = self.get(given, "lost", bool, default=False, where=where)
        changes = self.settings(self.get(given, "set", dict, default={}, where=where), f"{where}.set")
        if not changes and not lost:
            raise self.fail(where, "changes nothing: give set = { ... } or lost = true")
        gpu = self.index(given, "gpu", where, gpus)
        return Change(after=after, during=during, gpu=gpu, set=changes, lost=lost, at=at, until=until)

    def xid(self, where: str, given: Any, gpus: int) -> Xid:
        self.only(self.mapping(given, where), where, XID)
        if "xid" not in given:
            raise self.fail(f"{where}.xid", "missing: the Xid's number")
        code = self.whole(given, "xid", where, low=1, high=MAX_XID)
        count = self.whole(given, "count", where, low=1, high=MAX_BURST) if "count" in given else 1
        after, during = self.group(given, "after", where), self.group(given, "during", where)
        if sum(key in given for key in ("after", "during", "at")) > 1:
            raise self.fail(where, "give one of after, during and at")
        return Xid(
            gpu=self.index(given, "gpu", where, gpus),
            xid=code,
            after="" if after == NEVER else after,
            at=self.moment(given, "at", where),
            count=count,
            during="" if during == NEVER else during,
        )

    def expect(self, data: dict[str, Any], gpus: int) -> tuple[str, ...]:
        found = []
        for n, text in enumerate(self.get(data, "expect", list, default=[])):
            match = _EXPECT.match(text) if isinstance(text, str) else None
            if match is None or match[1] not in set(Code) or match[2] not in set(Severity):
                raise self.fail(f"expect[{n}]", f"is {text!r}; expected CODE:severity:gpu, such as 'XID:fail:0'")
            if match[3] != "node" and int(match[3]) >= gpus:
                raise self.fail(f"expect[{n}]", f"names GPU {match[3]}; the scenario has GPUs 0 to {gpus - 1}")
            found.append(text)
        return tuple(found)

    # -- values ------------------------------------------------------------------------------------

    def settings(self, given: dict[str, Any], where: str) -> dict[str, Any]:
        """A change's `set`: GPU fields, a section's field as `section.field`."""
        for dotted in given:
            head, _, tail = dotted.partition(".")
            if head == "index":
                raise self.fail(f"{where}.{dotted}", "a GPU's index is its place in gpus; it does not change")
            if tail and head in SECTIONS and tail in SECTIONS[head]:
                self.value(SECTIONS[head][tail], given, dotted, where)
            elif not tail and head in FIELDS:
                self.value(FIELDS[head], given, dotted, where, section=head)
            else:
                raise self.fail(f"{where}.{dotted}", "not a field of a GPU's health")
        return dict(given)

    def table(self, given: Any, where: str, known: set[str]) -> dict[str, Any]:
        self.only(self.mapping(given, where), where, known)
        for key in given:
            self.value(FIELDS[key], given, key, where, section=key)
        return dict(given)

    def value(self, kind: str, data: dict[str, Any], key: str, where: str, *, section: str = "") -> Any:
        field = f"{where}.{key}"
        if section in SECTIONS:
            values = self.mapping(data[key], field)
            self.only(values, field, set(SECTIONS[section]))
            for name, of in SECTIONS[section].items():
                if name in values:
                    self.value(of, values, name, field)
            return values
        if kind == TEXT:
            return self.nonempty(data, key, where)
        if kind == WHOLE:
            return self.whole(data, key, where)
        if kind == REAL:
            return self.number(data, key, where)  # finite, from 0 (an int too: watts)
        if kind == FLAG:
            return self.get(data, key, bool, where=where)
        items = self.get(data, key, list, where=where)
        if kind == EVENTS:
            if not all(isinstance(item, str) for item in items):
                raise self.fail(field, f"expected a list of clock event reason names, got {items!r}")
            try:
                snap.encode_clock_events(items)
            except ValueError as err:
                raise self.fail(field, str(err)) from None
        elif kind == NAMES:
            allowed = set(FIELDS) - {"index", "unsupported"}
            for item in items:
                if not isinstance(item, str) or item not in allowed:
                    raise self.fail(field, f"{item!r} is not a GPU field; expected some of {sorted(allowed)}")
        else:
            for n, link in enumerate(items):
                at = f"{field}[{n}]"
                self.only(self.mapping(link, at), at, set(LINK_FIELDS))
                for name, of in LINK_FIELDS.items():
                    if name in link:
                        self.value(of, link, name, at)
                if link.get("link", n) != n:
                    raise self.fail(f"{at}.link", f"is {link['link']}; links are listed in order, from 0")
        return items

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, got {value!r}")
        return value

    def nonempty(self, data: dict[str, Any], key: str, where: str, *, default: str | None = None) -> str:
        value: str = self.get(data, key, str, default=default, where=where)
        if not value.strip():
            raise self.fail(f"{where}.{key}" if where else key, "is empty")
        return value

    def whole(self, data: dict[str, Any], key: str, where: str, *, low: int = 0, high: int = MAX_WHOLE) -> int:
        value: int = self.get(data, key, int, where=where)
        if not low <= value <= high:
            raise self.fail(f"{where}.{key}", f"is {value}; expected a whole number from {low} to {high}")
        return value

    def index(self, data: dict[str, Any], key: str, where: str, gpus: int) -> int:
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < gpus:
            raise self.fail(f"{where}.{key}", f"is {value!r}; the scenario has GPUs 0 to {gpus - 1}")
        return value

    def group(self, data: dict[str, Any], key: str, where: str) -> str:
        if key not in data:
            return NEVER
        value = data[key]
        if not isinstance(value, str) or value not in GROUPS:
            raise self.fail(f"{where}.{key}", f"is {value!r}; expected a test group: {', '.join(GROUPS)}")
        return str(value)

    def moment(self, data: dict[str, Any], key: str, where: str) -> float | None:
        """Seconds on the timeline: a number, or a text such as "90s", "30m", "2h", "1h30m"."""
        if key not in data:
            return None
        value = data[key]
        seconds: float | None = None
        if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and value <= MAX_WHOLE):
            seconds = float(value)
        elif isinstance(value, str) and (found := _MOMENT.match(value.strip())) and any(found.groups()):
            hours, minutes, secs = (float(part or 0) for part in found.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            expected = "expected seconds (a number) or a time such as '90s', '30m', '2h', '1h30m'"
            raise self.fail(f"{where}.{key}", f"is {value!r}; {expected}")
        return seconds
