"""A health snapshot from NVML, through a binding (harness/nvml/binding.py): the real module or
the simulation, called the same way.

Every query a GPU or driver may not support answers None rather than failing the
snapshot; a GPU that NVML reports lost is listed in `Snapshot.lost`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from harness.nvml.backend import Backend
from harness.nvml.snapshot import Ecc, GpuHealth, NvLink, PcieLink, RetiredPages, RowRemap, Snapshot

T = TypeVar("T")
H = TypeVar("H")
"""A binding's device handle (harness/nvml/backend.py)."""
NVLINK_LINKS = 18
"""Links to ask about: 18 on Hopper, fewer before. NVML answers NotSupported or InvalidArgument past the last."""


def snapshot(nv: Backend[Any], source: str) -> Snapshot:
    """Everything the health rules read, for every GPU; nvmlInit must have been called."""
    taken = dt.datetime.now(dt.UTC)
    driver = text(ask(nv, nv.nvmlSystemGetDriverVersion) or "")
    cuda = ask(nv, nv.nvmlSystemGetCudaDriverVersion_v2) or 0
    count = int(nv.nvmlDeviceGetCount())
    gpus, lost = [], []
    for index in range(count):
        try:
            gpus.append(_gpu(nv, index))
        except nv.NVMLError as err:
            if getattr(err, "value", None) != nv.NVML_ERROR_GPU_IS_LOST:
                raise
            lost.append(index)
    problem = f"NVML reports GPU {', '.join(map(str, lost))} lost" if lost else ""
    return Snapshot(
        source=source,
        taken_at=taken,
        driver=driver,
        cuda_driver=f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else "",
        gpu_count=count,
        gpus=tuple(gpus),
        lost=tuple(lost),
        problem=problem,
    )


def clock_events(nv: Backend[H], handle: H) -> int | None:
    """The active clock event reasons (the driver's binding finds the call under its old name too)."""
    value = ask(nv, lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(handle))
    return int(value) if value is not None else None


def _gpu(nv: Backend[H], index: int) -> GpuHealth:
    h = nv.nvmlDeviceGetHandleByIndex(index)
    ecc_mode = ask(nv, lambda: nv.nvmlDeviceGetEccMode(h))
    temperature = ask(nv, lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
    power = ask(nv, lambda: nv.nvmlDeviceGetPowerUsage(h))
    limit = ask(nv, lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
    persistence = ask(nv, lambda: nv.nvmlDeviceGetPersistenceMode(h))
    mig = ask(nv, lambda: nv.nvmlDeviceGetMigMode(h))  # NotSupported on GPUs without MIG
    return GpuHealth(
        index=index,
        uuid=text(nv.nvmlDeviceGetUUID(h)),
        name=text(ask(nv, lambda: nv.nvmlDeviceGetName(h)) or ""),
        serial=text(ask(nv, lambda: nv.nvmlDeviceGetSerial(h)) or ""),
        pci_bus_id=text(ask(nv, lambda: nv.nvmlDeviceGetPciInfo(h).busId) or ""),
        ecc_enabled=bool(ecc_mode[0]) if ecc_mode is not None else None,
        ecc=_ecc(nv, h),
        retired=_retired(nv, h),
        remap=_remap(nv, h),
        clock_events=clock_events(nv, h),
        temperature_c=float(temperature) if temperature is not None else None,
        memory_temperature_c=memory_temperature(nv, h),
        power_w=power / 1000.0 if power is not None else None,
        power_limit_w=limit / 1000.0 if limit is not None else None,
        sm_clock_mhz=ask(nv, lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        memory_clock_mhz=ask(nv, lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
        pcie=PcieLink(
            gen=ask(nv, lambda: nv.nvmlDeviceGetCurrPcieLinkGeneration(h)),
            gen_max=ask(nv, lambda: nv.nvmlDeviceGetMaxPcieLinkGeneration(h)),
            width=ask(nv, lambda: nv.nvmlDeviceGetCurrPcieLinkWidth(h)),
            width_max=ask(nv, lambda: nv.nvmlDeviceGetMaxPcieLinkWidth(h)),
        ),
        nvlinks=_nvlinks(nv, h),
        persistence=bool(persistence) if persistence is not None else None,
        mig=mig[0] == nv.NVML_DEVICE_MIG_ENABLE if mig is not None else None,
    )


def _ecc(nv: Backend[H], h: H) -> Ecc:
    corrected, uncorrected = nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    volatile, aggregate = nv.NVML_VOLATILE_ECC, nv.NVML_AGGREGATE_ECC
    sram, dram = nv.NVML_MEMORY_LOCATION_SRAM, nv.NVML_MEMORY_LOCATION_DRAM

    def total(kind: int, counter: int) -> int | None:
        return ask(nv, lambda: nv.nvmlDeviceGetTotalEccErrors(h, kind, counter))

    def located(kind: int, counter: int, location: int) -> int | None:
        return ask(nv, lambda: nv.nvmlDeviceGetMemoryErrorCounter(h, kind, counter, location))

    return Ecc(
        volatile_corrected=total(corrected, volatile),
        volatile_uncorrected=total(uncorrected, volatile),
        aggregate_corrected=total(corrected, aggregate),
        aggregate_uncorrected=total(uncorrected, aggregate),
        volatile_sram_corrected=located(corrected, volatile, sram),
        volatile_sram_uncorrected=located(uncorrected, volatile, sram),
        volatile_dram_corrected=located(corrected, volatile, dram),
        volatile_dram_uncorrected=located(uncorrected, volatile, dram),
        aggregate_sram_corrected=located(corrected, aggregate, sram),
        aggregate_sram_uncorrected=located(uncorrected, aggregate, sram),
        aggregate_dram_corrected=located(corrected, aggregate, dram),
        aggregate_dram_uncorrected=located(uncorrected, aggregate, dram),
    )


def _retired(nv: Backend[H], h: H) -> RetiredPages:
    def pages(cause: int) -> Sequence[int] | None:
        return ask(nv, lambda: nv.nvmlDeviceGetRetiredPages(h, cause))

    single = pages(nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
    double = pages(nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
    pending = ask(nv, lambda: nv.nvmlDeviceGetRetiredPagesPendingStatus(h))
    return RetiredPages(
        single_bit=len(single) if single is not None else None,
        double_bit=len(double) if double is not None else None,
        pending=pending == nv.NVML_FEATURE_ENABLED if pending is not None else None,
    )


def _remap(nv: Backend[H], h: H) -> RowRemap:
    rows = ask(nv, lambda: nv.nvmlDeviceGetRemappedRows(h))
    if rows is None:
        return RowRemap()
    corrected, uncorrected, pending, failure = rows
    return RowRemap(
        corrected=int(corrected), uncorrected=int(uncorrected), pending=bool(pending), failure=bool(failure)
    )


def memory_temperature(nv: Backend[H], h: H) -> float | None:
    """Through the field-value API: the one way NVML reports HBM temperature."""
    values = ask(nv, lambda: nv.nvmlDeviceGetFieldValues(h, [nv.NVML_FI_DEV_MEMORY_TEMP]))
    if not values or getattr(values[0], "nvmlReturn", 1) != nv.NVML_SUCCESS:
        return None
    return float(values[0].value.uiVal)


def _nvlinks(nv: Backend[H], h: H) -> tuple[NvLink, ...]:
    def state(link: int) -> int | None:
        return ask(nv, lambda: nv.nvmlDeviceGetNvLinkState(h, link))

    def errors(link: int, counter: int) -> int | None:
        return ask(nv, lambda: nv.nvmlDeviceGetNvLinkErrorCounter(h, link, counter))

    links = []
    for link in range(NVLINK_LINKS):
        active = state(link)
        if active is None:
            break
        links.append(
            NvLink(
                link=link,
                active=active == nv.NVML_FEATURE_ENABLED,
                crc_errors=errors(link, nv.NVML_NVLINK_ERROR_DL_CRC_FLIT),
                replay_errors=errors(link, nv.NVML_NVLINK_ERROR_DL_REPLAY),
                recovery_errors=errors(link, nv.NVML_NVLINK_ERROR_DL_RECOVERY),
            )
        )
    return tuple(links)


def ask(nv: Backend[Any], call: Callable[[], T]) -> T | None:
    """None for what this GPU or driver does not support or report; a lost GPU still raises."""
    try:
        return call()
    except nv.NVMLError as err:
        if getattr(err, "value", None) == nv.NVML_ERROR_GPU_IS_LOST:
            raise
        return None


def handle_key(handle: Any) -> int | None:
    """A device handle as a dict key: the index of a simulated GPU, the address behind a real one (nvidia-ml-py's
    handles are ctypes pointers, and an event's `device` is a new pointer object to the same device)."""
    try:
        return int(handle)
    except TypeError:
        import ctypes  # only for the real binding's handles

        return ctypes.cast(handle, ctypes.c_void_p).value


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
