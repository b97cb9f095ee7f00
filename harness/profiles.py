"""The test groups, and run profiles: how long and how hard the suite burns.

A profile is a preset chosen by name (`--profile`). Settings every test shares sit
at the top; each test group's own settings sit in a section named after the group
(`profile.matmul.size`). The CPU self-test checks the pipeline, not the hardware,
so it uses small sizes and short times whatever the profile; `--duration`
overrides the duration on either device.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from typing import Any

from harness.errors import ConfigError
from harness.records import Direction

GROUPS = {
    "matmul": "matrix-multiply throughput with a silent-data-corruption check",
    "memory": "GPU memory pattern and ECC stress",
    "nvlink": "NVLink bandwidth between GPUs",
    "pcie": "PCIe bandwidth between host and GPUs",
    "nccl": "NCCL all-reduce across GPUs",
    "health": "NVML health before and after the suite",
    "dcgm": "DCGM diagnostics (dcgmi diag): only when a DCGM level is given (--dcgm-level, --gpu-dcgm-level)",
}
"""Every test group: its pytest marker, the first part of its metric names, its profile section."""
STRESS = ("matmul", "memory", "nvlink", "pcie", "nccl")
"""The groups whose tests load the GPUs: health snapshots and telemetry are taken around them."""

METRICS: dict[str, Direction] = {
    "matmul.*.tflops": Direction.HIGHER,
    "memory.coverage": Direction.HIGHER,
    "memory.verify.gbps": Direction.HIGHER,
    "memory.*.verify.gbps": Direction.HIGHER,  # each pattern's own (memory.random.verify.gbps)
    "memory.bad_words": Direction.LOWER,
    "pcie.*.gbps": Direction.HIGHER,
    "nvlink.*.gbps": Direction.HIGHER,
    "nccl.allreduce.*.busbw": Direction.HIGHER,
}
"""Every metric the tests measure (shell patterns, one per family) and which way is better.
The direction is the test's, declared here once: a baseline that says otherwise is refused
(a floor read as a ceiling passes any figure), and so is a figure a test records otherwise.
A test that adds a metric adds its family here; a latency is better lower."""


def direction_of(metric: str) -> Direction | None:
    """Which way `metric` is better, or None when no test measures it."""
    for pattern, direction in METRICS.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return direction
    return None


MIN_DURATION_S = 0.1
"""The shortest burn: less is a slip (milliseconds typed as seconds), not a test."""
MIN_STALL_S = 3.0
"""The shortest hang (stall) timeout. A worker waiting its turn reports every 2 s
(harness.workers.process.KEEPALIVE_S), one burning every window: a shorter limit
declares a healthy device hung, and a hang is a failure that takes the node out."""
MIN_STARTUP_S = 10.0
"""The shortest start-up limit: importing torch and starting CUDA take seconds on a busy node."""

CPU_DURATION_CAP_S = 4.0
"""The CPU self-test burns at most this long per test, whatever the profile (not --duration)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatmulProfile:
    size: int
    """M = N = K of each product."""
    ring: int
    """Output buffers per timed window; every one is checked after the window."""

    def __post_init__(self) -> None:
        if self.size < 1 or self.ring < 1:
            raise ConfigError("size and ring must be at least 1", field="profile.matmul")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryProfile:
    fraction: float
    """Of each device's free memory, the share the memory test takes and verifies."""
    chunk_mib: int
    """Allocation size: the test holds its memory as chunks of this size."""
    max_mib: int | None = None
    """A cap on what the test takes (the CPU self-test must not take 90% of the host's memory)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0 or self.chunk_mib < 1 or (self.max_mib is not None and self.max_mib < 1):
            raise ConfigError("fraction must be in (0, 1], chunk_mib and max_mib at least 1", field="profile.memory")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PcieProfile:
    mib: int
    """Bytes per copy between pinned host memory and the device, in MiB."""

    def __post_init__(self) -> None:
        if self.mib < 1:
            raise ConfigError("mib must be at least 1", field="profile.pcie")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvlinkProfile:
    mib: int
    """Bytes per copy between two GPUs, in MiB."""

    def __post_init__(self) -> None:
        if self.mib < 1:
            raise ConfigError("mib must be at least 1", field="profile.nvlink")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NcclProfile:
    sizes_mib: tuple[int, ...]
    """The all-reduce sizes swept, per rank, in MiB (nccl-tests' -b to -e)."""
    iterations: int
    """All-reduces per timed window (nccl-tests' -n)."""

    def __post_init__(self) -> None:
        if not self.sizes_mib or min(self.sizes_mib) < 1 or self.iterations < 1:
            raise ConfigError("sizes_mib needs sizes of at least 1 and iterations at least 1", field="profile.nccl")


def size_label(mib: int) -> str:
    """A size in a metric's name: 8mib, 512mib, 8gib."""
    return f"{mib >> 10}gib" if mib >= 1024 and mib % 1024 == 0 else f"{mib}mib"


GPU_PCIE = PcieProfile(mib=256)
GPU_NVLINK = NvlinkProfile(mib=256)
GPU_NCCL = NcclProfile(sizes_mib=(8, 64, 512, 4096, 8192), iterations=20)
"""8 MiB to 8 GiB by eights, 20 all-reduces per window: nccl-tests' -b 8M -e 8G -f 8 -n 20."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    duration_s: float
    """Seconds each test burns the devices; a test with phases (dtypes) splits it."""
    warmup_s: float
    """Seconds of each phase run before timing starts; their figures are discarded."""
    hang_timeout_s: float
    """Seconds without progress from a device worker before it is declared hung."""
    startup_timeout_s: float
    """Seconds a device worker may take to start (import, driver init, allocation)."""
    matmul: MatmulProfile
    memory: MemoryProfile = MemoryProfile(fraction=0.9, chunk_mib=1024)
    pcie: PcieProfile = GPU_PCIE
    nvlink: NvlinkProfile = GPU_NVLINK
    nccl: NcclProfile = GPU_NCCL

    def __post_init__(self) -> None:
        for field, minimum in (
            ("duration_s", MIN_DURATION_S),
            ("hang_timeout_s", MIN_STALL_S),
            ("startup_timeout_s", MIN_STARTUP_S),
        ):
            if not getattr(self, field) >= minimum:
                raise ConfigError(
                    f"{getattr(self, field)} s is below the minimum of {minimum:g} s", field=f"profile.{field}"
                )
        if self.warmup_s < 0:
            raise ConfigError(f"must be at least 0, got {self.warmup_s}", field="profile.warmup_s")

    def with_overrides(self, *, duration_s: float | None = None, hang_timeout_s: float | None = None) -> Profile:
        """The profile with the user's --duration and --hang-timeout, where given."""
        changes: dict[str, Any] = {}
        if duration_s is not None:
            changes["duration_s"] = duration_s
        if hang_timeout_s is not None:
            changes["hang_timeout_s"] = hang_timeout_s
        return dataclasses.replace(self, **changes)

    def for_cpu(self) -> Profile:
        """The same profile shrunk for the CPU self-test."""
        return dataclasses.replace(
            self,
            duration_s=min(self.duration_s, CPU_DURATION_CAP_S),
            warmup_s=0.1,
            hang_timeout_s=min(self.hang_timeout_s, 30.0),
            startup_timeout_s=min(self.startup_timeout_s, 60.0),
            matmul=MatmulProfile(size=128, ring=2),
            memory=MemoryProfile(fraction=0.9, chunk_mib=16, max_mib=64),
            pcie=PcieProfile(mib=4),
            nvlink=NvlinkProfile(mib=4),
            nccl=NcclProfile(sizes_mib=(1, 4), iterations=4),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """From a result file; raises ConfigError (field profile...) when a field is missing or wrong.
        Files written before the per-group sections have `matmul_size` and `matmul_ring` at the top."""
        try:
            matmul = data.get("matmul") or {"size": data["matmul_size"], "ring": data["matmul_ring"]}
            memory = data.get("memory")
            nccl = data.get("nccl")
            return cls(
                name=str(data["name"]),
                duration_s=float(data["duration_s"]),
                warmup_s=float(data["warmup_s"]),
                hang_timeout_s=float(data["hang_timeout_s"]),
                startup_timeout_s=float(data["startup_timeout_s"]),
                matmul=MatmulProfile(size=int(matmul["size"]), ring=int(matmul["ring"])),
                memory=MemoryProfile(**memory) if memory else MemoryProfile(fraction=0.9, chunk_mib=1024),
                pcie=PcieProfile(**data["pcie"]) if data.get("pcie") else GPU_PCIE,
                nvlink=NvlinkProfile(**data["nvlink"]) if data.get("nvlink") else GPU_NVLINK,
                nccl=NcclProfile(sizes_mib=tuple(nccl["sizes_mib"]), iterations=int(nccl["iterations"]))
                if nccl
                else GPU_NCCL,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"missing or malformed: {err}", field="profile") from err


def quick() -> Profile:
    """Preflight on a new node: every test, about a minute of heat each."""
    return Profile(
        name="quick",
        duration_s=60.0,
        warmup_s=2.0,
        hang_timeout_s=60.0,
        startup_timeout_s=180.0,
        matmul=MatmulProfile(size=8192, ring=8),
    )


def standard() -> Profile:
    """Periodic re-test: long enough for clocks and temperatures to settle."""
    return dataclasses.replace(quick(), name="standard", duration_s=300.0, warmup_s=5.0)


def soak() -> Profile:
    """After a repair or for a suspect node: half an hour per test."""
    return dataclasses.replace(quick(), name="soak", duration_s=1800.0, warmup_s=10.0)


PROFILES = {"quick": quick, "standard": standard, "soak": soak}


def by_name(name: str) -> Profile:
    try:
        return PROFILES[name]()
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}", option="profile") from None
