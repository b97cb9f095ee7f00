"""The driver version and the identity of every GPU, from NVML.

A machine without the NVIDIA driver is a normal state here: every call returns an
answer that says NVML is unavailable and why, instead of raising.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from harness.nvml import binding
from harness.nvml.backend import Backend

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvmlDevice:
    index: int
    name: str
    uuid: str
    serial: str
    pci_bus_id: str
    memory_bytes: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvmlFacts:
    available: bool
    reason: str = ""
    """Why NVML is unavailable, in one line."""
    driver_version: str = ""
    cuda_driver_version: str = ""
    """The newest CUDA version the driver supports, such as "12.4"."""
    devices: tuple[NvmlDevice, ...] = ()


def read_facts(spec: str = binding.REAL) -> NvmlFacts:
    """Driver version and the identity of every GPU NVML can see."""
    try:
        nv = binding.load(spec)
    except binding.Unavailable as err:
        return NvmlFacts(available=False, reason=str(err))
    try:
        nv.nvmlInit()
    except nv.NVMLError as err:
        return NvmlFacts(available=False, reason=f"NVML could not start: {_describe(err)}")
    try:
        driver = _text(nv.nvmlSystemGetDriverVersion())
        cuda = _optional(nv, lambda: nv.nvmlSystemGetCudaDriverVersion_v2(), 0)
        count = nv.nvmlDeviceGetCount()
        devices = tuple(_device(nv, i) for i in range(count))
    except nv.NVMLError as err:
        return NvmlFacts(available=False, reason=f"NVML query failed: {_describe(err)}")
    finally:
        _optional(nv, nv.nvmlShutdown, None)
    cuda_text = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
    return NvmlFacts(available=True, driver_version=driver, cuda_driver_version=cuda_text, devices=devices)


def _device(nv: Backend[Any], index: int) -> NvmlDevice:
    handle = nv.nvmlDeviceGetHandleByIndex(index)
    return NvmlDevice(
        index=index,
        name=_text(nv.nvmlDeviceGetName(handle)),
        uuid=_text(nv.nvmlDeviceGetUUID(handle)),
        serial=_text(_optional(nv, lambda: _text(nv.nvmlDeviceGetSerial(handle)), "")),
        pci_bus_id=_text(nv.nvmlDeviceGetPciInfo(handle).busId),
        memory_bytes=int(nv.nvmlDeviceGetMemoryInfo(handle).total),
    )


def _optional(nv: Backend[Any], call: Callable[[], T], default: T) -> T:
    """For queries some GPUs or drivers do not support (serial numbers on GeForce)."""
    try:
        return call()
    except nv.NVMLError:
        return default


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"
