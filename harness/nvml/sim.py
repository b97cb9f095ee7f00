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
    mig = true                            # MIG mode on
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
    at = "3h"                             # optional: not before then (or after = "matmul", or
                                          # during = "matmul": from that burn's start on)
    count = 20                            # optional: a burst of this many events

The file is read and checked whole before anything runs (harness/nvml/scenario.py): a
value of the wrong type is one error naming the file and the field, never a traceback
hours into a watch.

`now_s` is the timeline's clock: the watch sets it before every snapshot (`at` and
`until` never apply while it is None, as in a suite run).

A simulated run is recorded as such and can never pass a real node.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection
from pathlib import Path
from typing import Any

from harness.nvml import scenario
from harness.nvml import snapshot as snap
from harness.nvml.scenario import Scenario

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
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
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

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.path = scenario.path
        self._driver = scenario.driver
        self._cuda = scenario.cuda
        self._gpus = scenario.gpus
        self._changes = scenario.changes
        self._xids = scenario.xids
        self._delivered: dict[int, int] = {}
        self._started = False
        self.finished: set[str] = set()
        self.running: set[str] = set()
        self.now_s: float | None = None
        """The timeline's clock, in seconds: `at` and `until` are read against it."""
        self._cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def follow_clock(self, now_s: float | None) -> None:
        """harness/nvml/backend.py: the watch's clock, for `at` and `until`."""
        self.now_s = now_s

    def follow_tests(self, *, finished: Collection[str] | None = None, running: Collection[str] | None = None) -> None:
        """harness/nvml/backend.py: the groups that have run and that run now (None: unchanged)."""
        if finished is not None:
            self.finished = set(finished)
        if running is not None:
            self.running = set(running)

    def __getattr__(self, name: str) -> Any:
        """NVML's constants and error classes by name, as on the real module."""
        found = globals().get(name)
        if found is None or not (name.startswith(("NVML_", "nvmlEventType", "NVMLError"))):
            raise AttributeError(f"the simulated NVML has no {name!r} (gpu-burnin does not call it)")
        return found

    @staticmethod
    def expect_of(path: Path) -> list[str]:
        """A scenario's `expect`: the findings it is written to produce, as CODE:severity:gpu."""
        return list(scenario.load(path).expect)

    @classmethod
    def from_file(cls, path: Path) -> Simulated:
        """The scenario in `path`, checked whole (harness/nvml/scenario.py): ConfigError for anything amiss."""
        return cls(scenario.load(path))

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

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:  # noqa: N802
        """[current, pending], as nvidia-ml-py answers; a scenario's `mig` is both."""
        mode = NVML_DEVICE_MIG_ENABLE if self._field(h, "mig") else NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

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
            due = xid.due(self.finished, self.running, self.now_s)
            if due and self._delivered.get(n, 0) < xid.count and xid.gpu in event_set:
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
    """A change's `set`: `section.field`, or a field; a section given whole is merged over the one there."""
    *path, last = dotted.split(".")
    target = state
    for part in path:
        target = target.setdefault(part, {})
    if isinstance(value, dict) and isinstance(target.get(last), dict):
        target[last] = {**target[last], **value}
    else:
        target[last] = value
