"""NVML, through nvidia-ml-py. The only module that imports pynvml.

A machine without the NVIDIA driver is a normal state here: every call returns an
answer that says NVML is unavailable and why, instead of raising.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

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


def read_facts() -> NvmlFacts:
    """Driver version and the identity of every GPU NVML can see."""
    try:
        import pynvml
    except ImportError as err:
        return NvmlFacts(available=False, reason=f"nvidia-ml-py is not installed ({err})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return NvmlFacts(available=False, reason=f"NVML could not start: {_describe(err)}")
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = _optional(lambda: pynvml.nvmlSystemGetCudaDriverVersion_v2(), 0)
        count = pynvml.nvmlDeviceGetCount()
        devices = tuple(_device(pynvml, i) for i in range(count))
    except pynvml.NVMLError as err:
        return NvmlFacts(available=False, reason=f"NVML query failed: {_describe(err)}")
    finally:
        _optional(pynvml.nvmlShutdown, None)
    cuda_text = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
    return NvmlFacts(available=True, driver_version=driver, cuda_driver_version=cuda_text, devices=devices)


def _device(pynvml: Any, index: int) -> NvmlDevice:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return NvmlDevice(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        serial=_text(_optional(lambda: pynvml.nvmlDeviceGetSerial(handle), "")),
        pci_bus_id=_text(pynvml.nvmlDeviceGetPciInfo(handle).busId),
        memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
    )


def _optional(call: Callable[[], T], default: T) -> T:
    """For queries some GPUs or drivers do not support (serial numbers on GeForce)."""
    import pynvml

    try:
        return call()
    except pynvml.NVMLError:
        return default


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"
