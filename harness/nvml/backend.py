"""What gpu-burnin asks of an NVML binding: the driver's (nvidia-ml-py, through `binding.Driver`)
or the simulation's (`sim.Simulated`). Torch-free, and no import of pynvml.

The NVML names are nvidia-ml-py's own, as the code calls them. Two calls are ours: a simulated
scenario's changes are timed by the watch's clock (`follow_clock`) and by the test groups that have
run or are running (`follow_tests`); the driver's binding accepts both and ignores them, so that a
caller never asks which binding it has.

`HandleT` is the binding's device handle: an index in the simulation, a ctypes pointer from the driver.
An event set stays `Any`: opaque, and only ever handed back to the binding that made it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

HandleT = TypeVar("HandleT")
HandleT_co = TypeVar("HandleT_co", covariant=True)


class PciInfo(Protocol):
    @property
    def busId(self) -> str | bytes: ...  # noqa: N802 - nvmlPciInfo_t's field


class MemoryInfo(Protocol):
    @property
    def total(self) -> int: ...


class FieldValueUnion(Protocol):
    @property
    def uiVal(self) -> int: ...  # noqa: N802 - nvmlValue_t's field


class FieldValue(Protocol):
    @property
    def nvmlReturn(self) -> int: ...  # noqa: N802 - nvmlFieldValue_t's fields

    @property
    def value(self) -> FieldValueUnion: ...


class EventData(Protocol[HandleT_co]):
    @property
    def device(self) -> HandleT_co: ...

    @property
    def eventData(self) -> int: ...  # noqa: N802 - nvmlEventData_t's field


@runtime_checkable
class Backend(Protocol[HandleT]):
    """The NVML calls and constants gpu-burnin uses (harness/nvml/read.py, facts.py, monitor.py and the watch)."""

    @property
    def NVMLError(self) -> type[Exception]:  # noqa: N802 - nvidia-ml-py's name
        """Every NVML failure; `value` on an instance is NVML's return code."""
        ...

    NVML_SUCCESS: int
    NVML_ERROR_GPU_IS_LOST: int
    NVML_FEATURE_ENABLED: int
    NVML_TEMPERATURE_GPU: int
    NVML_CLOCK_SM: int
    NVML_CLOCK_MEM: int
    NVML_MEMORY_ERROR_TYPE_CORRECTED: int
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED: int
    NVML_VOLATILE_ECC: int
    NVML_AGGREGATE_ECC: int
    NVML_MEMORY_LOCATION_DRAM: int
    NVML_MEMORY_LOCATION_SRAM: int
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS: int
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: int
    NVML_FI_DEV_MEMORY_TEMP: int
    NVML_NVLINK_ERROR_DL_REPLAY: int
    NVML_NVLINK_ERROR_DL_RECOVERY: int
    NVML_NVLINK_ERROR_DL_CRC_FLIT: int
    NVML_DEVICE_MIG_ENABLE: int
    nvmlEventTypeXidCriticalError: int

    # -- ours: what a simulated scenario is timed by ------------------------------------------------

    def follow_clock(self, now_s: float | None) -> None:
        """Seconds on the watch's timeline (None: no timeline, as in a suite run); a scenario's `at` and
        `until` are read against it. The driver's binding ignores it."""
        ...

    def follow_tests(self, *, finished: Collection[str] | None = None, running: Collection[str] | None = None) -> None:
        """The test groups that have run and that run now (None: unchanged); a scenario's `after` and
        `during` are read against them. The driver's binding ignores it."""
        ...

    # -- NVML ----------------------------------------------------------------------------------------

    def nvmlInit(self) -> None: ...  # noqa: N802 - NVML's names, as nvidia-ml-py spells them
    def nvmlShutdown(self) -> None: ...  # noqa: N802
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...  # noqa: N802
    def nvmlSystemGetCudaDriverVersion_v2(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetHandleByIndex(self, index: int) -> HandleT: ...  # noqa: N802
    def nvmlDeviceGetUUID(self, handle: HandleT) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetName(self, handle: HandleT) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetSerial(self, handle: HandleT) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetPciInfo(self, handle: HandleT) -> PciInfo: ...  # noqa: N802
    def nvmlDeviceGetMemoryInfo(self, handle: HandleT) -> MemoryInfo: ...  # noqa: N802
    def nvmlDeviceGetEccMode(self, handle: HandleT) -> Sequence[int]: ...  # noqa: N802
    def nvmlDeviceGetTotalEccErrors(self, handle: HandleT, kind: int, counter: int) -> int: ...  # noqa: N802
    def nvmlDeviceGetMemoryErrorCounter(  # noqa: N802
        self, handle: HandleT, kind: int, counter: int, location: int
    ) -> int: ...
    def nvmlDeviceGetRetiredPages(self, handle: HandleT, cause: int) -> Sequence[int]: ...  # noqa: N802
    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlDeviceGetRemappedRows(self, handle: HandleT) -> Sequence[int]: ...  # noqa: N802
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlDeviceGetTemperature(self, handle: HandleT, sensor: int) -> int: ...  # noqa: N802
    def nvmlDeviceGetFieldValues(self, handle: HandleT, fields: list[int]) -> Sequence[FieldValue]: ...  # noqa: N802
    def nvmlDeviceGetPowerUsage(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlDeviceGetClockInfo(self, handle: HandleT, clock: int) -> int: ...  # noqa: N802
    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlDeviceGetNvLinkState(self, handle: HandleT, link: int) -> int: ...  # noqa: N802
    def nvmlDeviceGetNvLinkErrorCounter(self, handle: HandleT, link: int, counter: int) -> int: ...  # noqa: N802
    def nvmlDeviceGetMigMode(self, handle: HandleT) -> Sequence[int]: ...  # noqa: N802
    def nvmlDeviceGetPersistenceMode(self, handle: HandleT) -> int: ...  # noqa: N802
    def nvmlEventSetCreate(self) -> Any: ...  # noqa: N802
    def nvmlDeviceRegisterEvents(self, handle: HandleT, types: int, event_set: Any) -> None: ...  # noqa: N802
    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> EventData[HandleT]: ...  # noqa: N802
    def nvmlEventSetFree(self, event_set: Any) -> None: ...  # noqa: N802
