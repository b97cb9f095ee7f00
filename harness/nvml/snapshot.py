"""A health snapshot of every GPU of a node: what NVML (or nvidia-smi, or a simulation) says.

Plain data, JSON both ways, the same whatever the source. A field a GPU or driver
does not report is None: "not supported" is never read as zero, and the health
rules skip what they cannot see rather than passing it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

# NVML's clock event (throttle) reasons: a bitmask, several at once is normal.
CLOCK_EVENTS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
"""nvmlClocksEventReason*: bit -> name (nvidia-smi's tags, lower case)."""


def decode_clock_events(mask: int | None) -> tuple[str, ...]:
    """The names of the reasons set in `mask`, each tested with &; unknown bits by their value."""
    if mask is None:
        return ()
    names = [name for bit, name in CLOCK_EVENTS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENTS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return tuple(names)


def encode_clock_events(names: tuple[str, ...] | list[str]) -> int:
    by_name = {name: bit for bit, name in CLOCK_EVENTS.items()}
    mask = 0
    for name in names:
        if name not in by_name:
            raise ValueError(f"unknown clock event reason {name!r}; expected one of {sorted(by_name)}")
        mask |= by_name[name]
    return mask


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ecc:
    """ECC error counts: volatile (since the driver loaded) and aggregate (lifetime), all memory
    locations together, and SRAM and DRAM apart where the driver reports them."""

    volatile_corrected: int | None = None
    volatile_uncorrected: int | None = None
    aggregate_corrected: int | None = None
    aggregate_uncorrected: int | None = None
    volatile_sram_corrected: int | None = None
    volatile_sram_uncorrected: int | None = None
    volatile_dram_corrected: int | None = None
    volatile_dram_uncorrected: int | None = None
    aggregate_sram_corrected: int | None = None
    aggregate_sram_uncorrected: int | None = None
    aggregate_dram_corrected: int | None = None
    aggregate_dram_uncorrected: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetiredPages:
    """Page retirement (before Ampere): pages retired for single- and double-bit errors."""

    single_bit: int | None = None
    double_bit: int | None = None
    pending: bool | None = None
    """A retirement waits for the next driver reload (a reset or reboot)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowRemap:
    """Row remapping (Ampere and later)."""

    corrected: int | None = None
    uncorrected: int | None = None
    pending: bool | None = None
    """A remap waits for a GPU reset."""
    failure: bool | None = None
    """A remap failed: the bank has no spare rows left."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PcieLink:
    gen: int | None = None
    gen_max: int | None = None
    width: int | None = None
    width_max: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvLink:
    link: int
    active: bool | None = None
    crc_errors: int | None = None
    replay_errors: int | None = None
    recovery_errors: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class GpuHealth:
    index: int
    """As nvidia-smi shows it."""
    uuid: str
    name: str = ""
    serial: str = ""
    pci_bus_id: str = ""
    ecc_enabled: bool | None = None
    ecc: Ecc = Ecc()
    retired: RetiredPages = RetiredPages()
    remap: RowRemap = RowRemap()
    clock_events: int | None = None
    """The active clock event reasons, a bitmask (decode_clock_events)."""
    temperature_c: float | None = None
    memory_temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: float | None = None
    memory_clock_mhz: float | None = None
    pcie: PcieLink = PcieLink()
    nvlinks: tuple[NvLink, ...] = ()
    persistence: bool | None = None
    mig: bool | None = None
    """MIG mode is on now (NVML's current mode, not the pending one): the GPU is split into slices."""

    @property
    def clock_event_names(self) -> tuple[str, ...]:
        return decode_clock_events(self.clock_events)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Snapshot:
    source: str
    """"nvml", "nvidia-smi", or "sim:<scenario file>" (a simulation: never evidence about a real node)."""
    taken_at: dt.datetime
    driver: str = ""
    cuda_driver: str = ""
    gpu_count: int = 0
    """How many GPUs the driver reports (nvidia-smi's attached_gpus may count more than it lists)."""
    gpus: tuple[GpuHealth, ...] = ()
    lost: tuple[int, ...] = ()
    """Indices NVML counts but reports lost ("GPU is lost": fallen off the bus)."""
    problem: str = ""
    """Why the snapshot is empty or partial, in one line."""

    @property
    def simulated(self) -> bool:
        return self.source.startswith("sim:")

    def gpu(self, uuid: str) -> GpuHealth | None:
        return next((g for g in self.gpus if g.uuid == uuid), None)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["taken_at"] = self.taken_at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            source=str(data["source"]),
            taken_at=dt.datetime.fromisoformat(str(data["taken_at"]).replace("Z", "+00:00")),
            driver=str(data.get("driver", "")),
            cuda_driver=str(data.get("cuda_driver", "")),
            gpu_count=int(data.get("gpu_count", 0)),
            gpus=tuple(_gpu(g) for g in data.get("gpus", ())),
            lost=tuple(int(i) for i in data.get("lost", ())),
            problem=str(data.get("problem", "")),
        )


def _gpu(data: Mapping[str, Any]) -> GpuHealth:
    nested = {"ecc": Ecc, "retired": RetiredPages, "remap": RowRemap, "pcie": PcieLink}
    fields = {f.name for f in dataclasses.fields(GpuHealth)}
    values: dict[str, Any] = {k: v for k, v in data.items() if k in fields and k not in nested and k != "nvlinks"}
    for key, kind in nested.items():
        known = {f.name for f in dataclasses.fields(kind)}
        values[key] = kind(**{k: v for k, v in (data.get(key) or {}).items() if k in known})
    values["nvlinks"] = tuple(NvLink(**link) for link in data.get("nvlinks", ()))
    return GpuHealth(**values)
