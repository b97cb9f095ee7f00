"""A simulated NVML, driven by a scenario file: for CI, and for rehearsing alerting.

    gpu-burnin run --nvml sim:scenario.toml        pytest --gpu-nvml sim:scenario.toml

It offers exactly the NVML calls gpu-burnin makes (harness/nvml/read.py, facts.py,
monitor.py), with the real binding's error behaviour: errors are `NVMLError`
subclasses carrying NVML's codes, and a field a scenario marks unsupported answers
NVML_ERROR_NOT_SUPPORTED. A scenario (docs/health.md):

    driver = "580.159.04"
    cuda = "13.0"

    [[gpus]]
    name = "NVIDIA H100 80GB HBM3"      # uuid, serial, pci_bus_id, memory_bytes: defaults per index
    ecc = { volatile_uncorrected = 0 }    # any field of the snapshot's GpuHealth, nested as there
    clock_events = ["gpu_idle"]
    unsupported = ["remap", "memory_temperature_c"]

    [[changes]]                           # applied once the named test group has run
    after = "matmul"                      # or: during = "matmul", only while it runs
    gpu = 0
    set = { "ecc.volatile_corrected" = 40, clock_events = ["hw_slowdown"] }   # or: lost = true

    [[changes]]                           # a timeline, for `gpu-burnin watch`: from `at` on
    at = "2h"                             # seconds, or "90s", "30m", "2h" on the watch's clock
    until = "2h30s"                       # optional: and no longer from then
    gpu = 1
    lost = true

    [[xids]]                              # delivered to an Xid event listener
    gpu = 1
    xid = 79
    at = "3h"                             # optional: not before then (or after = "matmul")
    count = 20                            # optional: a burst of this many events

`now_s` is the timeline's clock: the watch sets it before every snapshot (`at` and
`until` never apply while it is None, as in a suite run).

A simulated run is recorded as such and can never pass a real node.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.nvml import snapshot as snap

# NVML's return codes and constants, with the values nvidia-ml-py gives them.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_GPU_IS_LOST = 15
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_MEMORY_LOCATION_DRAM = 2
NVML_MEMORY_LOCATION_SRAM = 7
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_TEMPERATURE_GPU = 0
NVML_FI_DEV_MEMORY_TEMP = 82
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_NVLINK_ERROR_DL_REPLAY = 0
NVML_NVLINK_ERROR_DL_RECOVERY = 1
NVML_NVLINK_ERROR_DL_CRC_FLIT = 2
nvmlEventTypeXidCriticalError = 8


class NVMLError(Exception):
    """As nvidia-ml-py's: `value` is NVML's code, and the subclass names it."""

    def __init__(self, value: int):
        super().__init__(_MESSAGES.get(value, f"NVML error {value}"))
        self.value = value


class NVMLError_Uninitialized(NVMLError):  # noqa: N801 - nvidia-ml-py's names
    pass


class NVMLError_InvalidArgument(NVMLError):  # noqa: N801
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801
    pass


class NVMLError_Timeout(NVMLError):  # noqa: N801
    pass


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801
    pass


_CLASSES: dict[int, type[NVMLError]] = {
    NVML_ERROR_UNINITIALIZED: NVMLError_Uninitialized,
    NVML_ERROR_INVALID_ARGUMENT: NVMLError_InvalidArgument,
    NVML_ERROR_NOT_SUPPORTED: NVMLError_NotSupported,
    NVML_ERROR_TIMEOUT: NVMLError_Timeout,
    NVML_ERROR_GPU_IS_LOST: NVMLError_GpuIsLost,
}
_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


def _error(value: int) -> NVMLError:
    return _CLASSES.get(value, NVMLError)(value)


@dataclasses.dataclass
class _Change:
    after: str
    during: str
    gpu: int
    set: dict[str, Any]
    lost: bool
    at: float | None = None
    """On the timeline (seconds): applies from then on, while `now_s` is set."""
    until: float | None = None

    def due(self, finished: Collection[str], running: Collection[str], now_s: float | None) -> bool:
        if self.after in finished or self.during in running:
            return True
        if self.at is None or now_s is None:
            return False
        return self.at <= now_s and (self.until is None or now_s < self.until)


@dataclasses.dataclass
class _Xid:
    gpu: int
    xid: int
    after: str
    at: float | None = None
    count: int = 1

    def due(self, finished: set[str], now_s: float | None) -> bool:
        if self.at is not None:
            return now_s is not None and self.at <= now_s
        return not self.after or self.after in finished


@dataclasses.dataclass(frozen=True)
class _Value:
    uiVal: int  # noqa: N815 - the field name of nvmlFieldValue_t's value union


@dataclasses.dataclass(frozen=True)
class _FieldValue:
    nvmlReturn: int  # noqa: N815
    value: _Value


@dataclasses.dataclass(frozen=True)
class _PciInfo:
    busId: str  # noqa: N815


@dataclasses.dataclass(frozen=True)
class _Memory:
    total: int
    free: int
    used: int


@dataclasses.dataclass(frozen=True)
class _EventData:
    device: int
    eventType: int  # noqa: N815
    eventData: int  # noqa: N815


class Simulated:
    """An NVML binding over a scenario. `finished` names the test groups that have run, so a
    scenario's `changes` apply from then on (the monitor sets it before each snapshot)."""

    NVMLError = NVMLError

    def __init__(
        self, path: Path, driver: str, cuda: int, gpus: list[dict[str, Any]], changes: list[_Change], xids: list[_Xid]
    ):
        self.path = path
        self._driver = driver
        self._cuda = cuda
        self._gpus = gpus
        self._changes = changes
        self._xids = xids
        self._delivered: dict[int, int] = {}
        self._started = False
        self.finished: set[str] = set()
        self.running: set[str] = set()
        self.now_s: float | None = None
        """The timeline's clock, in seconds: `at` and `until` are read against it."""
        self._cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        """NVML's constants and error classes by name, as on the real module."""
        found = globals().get(name)
        if found is None or not (name.startswith(("NVML_", "nvmlEventType", "NVMLError"))):
            raise AttributeError(f"the simulated NVML has no {name!r} (gpu-burnin does not call it)")
        return found

    @staticmethod
    def expect_of(path: Path) -> list[str]:
        """A scenario's `expect`: the findings it is written to produce, as CODE:severity:gpu."""
        return [str(e) for e in tomllib.loads(path.read_text(encoding="utf-8")).get("expect", [])]

    @classmethod
    def from_file(cls, path: Path) -> Simulated:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"cannot read the NVML scenario: {err.strerror}", file=path, option="nvml") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"not valid TOML: {err}", file=path, option="nvml") from err
        return _parse(path, data)

    # -- the calls ---------------------------------------------------------------------------

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names, as nvidia-ml-py spells them
        self._started = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self._started = False

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        self._check()
        return self._driver

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:  # noqa: N802
        self._check()
        return self._cuda

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._check()
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        self._check()
        if not 0 <= index < len(self._gpus):
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetUUID(self, h: int) -> str:  # noqa: N802
        return str(self._field(h, "uuid"))

    def nvmlDeviceGetName(self, h: int) -> str:  # noqa: N802
        return str(self._field(h, "name"))

    def nvmlDeviceGetSerial(self, h: int) -> str:  # noqa: N802
        return str(self._field(h, "serial"))

    def nvmlDeviceGetPciInfo(self, h: int) -> _PciInfo:  # noqa: N802
        return _PciInfo(busId=str(self._field(h, "pci_bus_id")))

    def nvmlDeviceGetMemoryInfo(self, h: int) -> _Memory:  # noqa: N802
        total = int(self._field(h, "memory_bytes"))
        return _Memory(total=total, free=total, used=0)

    def nvmlDeviceGetEccMode(self, h: int) -> tuple[int, int]:  # noqa: N802
        enabled = int(bool(self._field(h, "ecc_enabled")))
        return enabled, enabled

    def nvmlDeviceGetTotalEccErrors(self, h: int, kind: int, counter: int) -> int:  # noqa: N802
        return self._count(h, "ecc", _ecc_key(kind, counter, ""))

    def nvmlDeviceGetMemoryErrorCounter(self, h: int, kind: int, counter: int, location: int) -> int:  # noqa: N802
        where = {NVML_MEMORY_LOCATION_SRAM: "sram", NVML_MEMORY_LOCATION_DRAM: "dram"}.get(location)
        if where is None:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        return self._count(h, "ecc", _ecc_key(kind, counter, where))

    def nvmlDeviceGetRetiredPages(self, h: int, cause: int) -> list[int]:  # noqa: N802
        key = "single_bit" if cause == NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS else "double_bit"
        return [0x1000 * (i + 1) for i in range(self._count(h, "retired", key))]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: int) -> int:  # noqa: N802
        pending = self._nested(h, "retired", "pending")
        return NVML_FEATURE_ENABLED if pending else NVML_FEATURE_DISABLED

    def nvmlDeviceGetRemappedRows(self, h: int) -> tuple[int, int, int, int]:  # noqa: N802
        remap = self._section(h, "remap")
        return (
            int(remap.get("corrected") or 0),
            int(remap.get("uncorrected") or 0),
            int(bool(remap.get("pending"))),
            int(bool(remap.get("failure"))),
        )

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:  # noqa: N802
        return snap.encode_clock_events(list(self._field(h, "clock_events") or []))

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:  # noqa: N802
        return int(self._field(h, "temperature_c"))

    def nvmlDeviceGetFieldValues(self, h: int, fields: list[int]) -> list[_FieldValue]:  # noqa: N802
        answers = []
        for field in fields:
            value = self._maybe(h, "memory_temperature_c") if field == NVML_FI_DEV_MEMORY_TEMP else None
            code = NVML_SUCCESS if value is not None else NVML_ERROR_NOT_SUPPORTED
            answers.append(_FieldValue(nvmlReturn=code, value=_Value(uiVal=int(value or 0))))
        return answers

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
        return int(float(self._field(h, "power_w")) * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:  # noqa: N802
        return int(float(self._field(h, "power_limit_w")) * 1000)

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:  # noqa: N802
        return int(self._field(h, "sm_clock_mhz" if clock == NVML_CLOCK_SM else "memory_clock_mhz"))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: int) -> int:  # noqa: N802
        return self._count(h, "pcie", "gen")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int:  # noqa: N802
        return self._count(h, "pcie", "gen_max")

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int:  # noqa: N802
        return self._count(h, "pcie", "width")

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int:  # noqa: N802
        return self._count(h, "pcie", "width_max")

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:  # noqa: N802
        return NVML_FEATURE_ENABLED if self._link(h, link).get("active") else NVML_FEATURE_DISABLED

    def nvmlDeviceGetNvLinkErrorCounter(self, h: int, link: int, counter: int) -> int:  # noqa: N802
        key = {
            NVML_NVLINK_ERROR_DL_CRC_FLIT: "crc_errors",
            NVML_NVLINK_ERROR_DL_REPLAY: "replay_errors",
            NVML_NVLINK_ERROR_DL_RECOVERY: "recovery_errors",
        }[counter]
        return int(self._link(h, link).get(key) or 0)

    def nvmlDeviceGetPersistenceMode(self, h: int) -> int:  # noqa: N802
        return NVML_FEATURE_ENABLED if self._field(h, "persistence") else NVML_FEATURE_DISABLED

    def nvmlEventSetCreate(self) -> list[int]:  # noqa: N802
        self._check()
        return []

    def nvmlDeviceRegisterEvents(self, h: int, types: int, event_set: list[int]) -> None:  # noqa: N802
        self._gpu(h)
        if types & nvmlEventTypeXidCriticalError:
            event_set.append(h)

    def nvmlEventSetWait_v2(self, event_set: list[int], timeout_ms: int) -> _EventData:  # noqa: N802
        for n, xid in enumerate(self._xids):
            if self._delivered.get(n, 0) < xid.count and xid.due(self.finished, self.now_s) and xid.gpu in event_set:
                self._delivered[n] = self._delivered.get(n, 0) + 1
                return _EventData(device=xid.gpu, eventType=nvmlEventTypeXidCriticalError, eventData=xid.xid)
        raise _error(NVML_ERROR_TIMEOUT)  # the real call blocks this long; the monitor paces itself

    def nvmlEventSetFree(self, event_set: list[int]) -> None:  # noqa: N802
        event_set.clear()

    # -- state -----------------------------------------------------------------------------------

    def _check(self) -> None:
        if not self._started:
            raise _error(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, h: int) -> dict[str, Any]:
        """The GPU's state now: the scenario's values with the changes due applied (read-only: it is
        cached until the test groups or the timeline move, so a snapshot costs one copy per GPU)."""
        self._check()
        if not 0 <= h < len(self._gpus):
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        key = (h, frozenset(self.finished), frozenset(self.running), self.now_s)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._state(h)
            if len(self._cache) > 4 * len(self._gpus):
                self._cache.clear()
            self._cache[key] = cached
        if cached.get("lost"):
            raise _error(NVML_ERROR_GPU_IS_LOST)
        return cached

    def _state(self, h: int) -> dict[str, Any]:
        state = copy.deepcopy(self._gpus[h])
        for change in self._changes:
            if change.gpu == h and change.due(self.finished, self.running, self.now_s):
                if change.lost:
                    return {"lost": True}
                for dotted, value in change.set.items():
                    _assign(state, dotted, value)
        return state

    def _maybe(self, h: int, name: str) -> Any:
        state = self._gpu(h)
        if name in state.get("unsupported", ()):
            return None
        return state.get(name)

    def _field(self, h: int, name: str) -> Any:
        value = self._maybe(h, name)
        if value is None:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        return value

    def _section(self, h: int, section: str) -> dict[str, Any]:
        value = self._maybe(h, section)
        if value is None:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        return dict(value)

    def _nested(self, h: int, section: str, key: str) -> Any:
        value = self._section(h, section).get(key)
        if value is None:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        return value

    def _count(self, h: int, section: str, key: str) -> int:
        return int(self._nested(h, section, key))

    def _link(self, h: int, link: int) -> dict[str, Any]:
        links = self._maybe(h, "nvlinks")
        if not links:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        if link >= len(links):
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        return dict(links[link])


def _ecc_key(kind: int, counter: int, where: str) -> str:
    scope = "volatile" if counter == NVML_VOLATILE_ECC else "aggregate"
    what = "corrected" if kind == NVML_MEMORY_ERROR_TYPE_CORRECTED else "uncorrected"
    return f"{scope}_{where}_{what}" if where else f"{scope}_{what}"


def _assign(state: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    target = state
    for part in path:
        target = target.setdefault(part, {})
    target[last] = value


_GPU_FIELDS = {f.name for f in dataclasses.fields(snap.GpuHealth)} | {"memory_bytes", "unsupported"}
_SECTIONS: dict[str, set[str]] = {
    "ecc": {f.name for f in dataclasses.fields(snap.Ecc)},
    "retired": {f.name for f in dataclasses.fields(snap.RetiredPages)},
    "remap": {f.name for f in dataclasses.fields(snap.RowRemap)},
    "pcie": {f.name for f in dataclasses.fields(snap.PcieLink)},
}


def _default_gpu(index: int) -> dict[str, Any]:
    """A healthy H100 SXM with nothing to report: a scenario says only what differs."""
    return {
        "index": index,
        "uuid": f"GPU-5141dc00-0000-4000-8000-{index:012d}",
        "name": "NVIDIA H100 80GB HBM3",
        "serial": f"165000000{index:04d}",
        "pci_bus_id": f"00000000:{0x18 + 0x10 * index:02X}:00.0",
        "memory_bytes": 85520809984,
        "ecc_enabled": True,
        "ecc": {name: 0 for name in _SECTIONS["ecc"]},
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
    }


def _parse(path: Path, data: dict[str, Any]) -> Simulated:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(problem, file=path, field=field)

    allowed = {"driver", "cuda", "description", "expect", "gpus", "changes", "xids"}
    for key in data:
        if key not in allowed:
            raise fail(key, f"unknown key; expected one of {sorted(allowed)}")
    cuda_text = str(data.get("cuda", "13.0"))
    try:
        major, _, minor = cuda_text.partition(".")
        cuda = int(major) * 1000 + int(minor or 0) * 10
    except ValueError:
        raise fail("cuda", f"is {cuda_text!r}; expected a version such as '13.0'") from None
    gpus = []
    for index, given in enumerate(data.get("gpus") or []):
        where = f"gpus[{index}]"
        if not isinstance(given, dict):
            raise fail(where, "must be a table")
        gpu = _default_gpu(index)
        for key, value in given.items():
            if key not in _GPU_FIELDS:
                raise fail(f"{where}.{key}", f"unknown field; expected one of {sorted(_GPU_FIELDS)}")
            if key in _SECTIONS:
                _check_section(fail, f"{where}.{key}", value, _SECTIONS[key])
                gpu[key] = {**gpu[key], **value}
            else:
                gpu[key] = value
        _check_events(fail, f"{where}.clock_events", gpu["clock_events"])
        gpus.append(gpu)
    if not gpus:
        raise fail("gpus", "a scenario needs at least one GPU")
    changes = [_change(fail, n, c, len(gpus)) for n, c in enumerate(data.get("changes") or [])]
    xids = []
    for n, x in enumerate(data.get("xids") or []):
        if not isinstance(x, dict) or not isinstance(x.get("xid"), int) or x.get("gpu", 0) >= len(gpus):
            raise fail(f"xids[{n}]", "needs xid (a number) and gpu (an index of the scenario's GPUs)")
        count = x.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise fail(f"xids[{n}].count", f"is {count!r}; expected a whole number of events, 1 or more")
        at = _moment(fail, f"xids[{n}].at", x["at"]) if "at" in x else None
        xids.append(
            _Xid(gpu=int(x.get("gpu", 0)), xid=int(x["xid"]), after=str(x.get("after", "")), at=at, count=count)
        )
    return Simulated(path, str(data.get("driver", "580.159.04")), cuda, gpus, changes, xids)


def _change(fail: Callable[[str, str], ConfigError], n: int, given: Any, gpus: int) -> _Change:
    where = f"changes[{n}]"
    if not isinstance(given, dict):
        raise fail(where, "must be a table")
    at = _moment(fail, f"{where}.at", given["at"]) if "at" in given else None
    until = _moment(fail, f"{where}.until", given["until"]) if "until" in given else None
    if at is None and not isinstance(given.get("after", given.get("during")), str):
        raise fail(where, "needs after or during (the test group after which, or while, it applies), or at")
    if until is not None and (at is None or until <= at):
        raise fail(f"{where}.until", "needs an `at` before it")
    gpu = given.get("gpu", 0)
    if not isinstance(gpu, int) or not 0 <= gpu < gpus:
        raise fail(f"{where}.gpu", f"is {gpu!r}; the scenario has GPUs 0 to {gpus - 1}")
    changes = dict(given.get("set") or {})
    for dotted in changes:
        head, _, tail = dotted.partition(".")
        if head not in _GPU_FIELDS or (tail and tail not in _SECTIONS.get(head, set())):  # nvlinks: the whole list
            raise fail(f"{where}.set.{dotted}", "not a field of a GPU's health")
    if "clock_events" in changes:
        _check_events(fail, f"{where}.set.clock_events", changes["clock_events"])
    after, during = str(given.get("after", "\0")), str(given.get("during", "\0"))  # "\0": never a group
    lost = bool(given.get("lost", False))
    return _Change(after=after, during=during, gpu=gpu, set=changes, lost=lost, at=at, until=until)


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def _moment(fail: Callable[[str, str], ConfigError], where: str, value: Any) -> float:
    """Seconds on the timeline: a number, or a text such as "90s", "30m", "2h", "1h30m"."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    text = str(value).strip()
    total, number = 0.0, ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in _UNITS and number:
            try:
                total += float(number) * _UNITS[char]
            except ValueError:
                break
            number = ""
        else:
            break
    else:
        if text and not number:
            return total
    raise fail(where, f"is {value!r}; expected seconds (a number) or a time such as '90s', '30m', '2h', '1h30m'")


def _check_section(fail: Callable[[str, str], ConfigError], where: str, value: Any, known: set[str]) -> None:
    if not isinstance(value, dict):
        raise fail(where, "must be a table")
    for key in value:
        if key not in known:
            raise fail(f"{where}.{key}", f"unknown field; expected one of {sorted(known)}")


def _check_events(fail: Callable[[str, str], ConfigError], where: str, value: Any) -> None:
    try:
        snap.encode_clock_events(list(value))
    except (TypeError, ValueError) as err:
        raise fail(where, str(err)) from None
