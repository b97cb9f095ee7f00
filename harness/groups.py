"""Every test group, declared once: one `Group` entry in `GROUPS`.

A group is a pytest marker (`-m matmul`), the first part of its metric names
(`matmul.bf16.tflops`) and, when it has settings of its own, a section of the
profile (`profile.section(MatmulSection).size`). Everything else that lists the
groups loops over this registry when it runs (so an entry added in a test
counts): the plugin's markers, `stressing()`, the metric directions, `Profile`'s
sections with their GPU and CPU sizes, the help of `-m`, the worker imports of
tests/conftest.py, the metrics the 1-GPU baselines leave out.

Adding a group is a `Group` entry here (with its section dataclass, if it has
settings) and three files: `gputests/work/<name>.py` (the worker),
`gputests/work/<name>_run.py` (the parent side) and `gputests/test_<name>.py`
(the pytest test); its metrics go into every shipped baseline and it gets a step
in bench/gpu_check.sh. tests/test_groups.py fails for each of these left out.
This module imports no torch: the command line and the reports read it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Mapping
from typing import Any, Self

from harness.errors import ConfigError
from harness.records import Direction


@dataclasses.dataclass(frozen=True, kw_only=True)
class Section:
    """A test group's own settings in a profile: a keyword-only frozen dataclass of plain values
    (numbers, strings, tuples of them, None) that checks them in `__post_init__`, raising
    ConfigError with `field="profile.<group>"`."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """From a result file's JSON (lists become tuples). TypeError or ValueError when malformed."""
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a table, got {data!r}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatmulSection(Section):
    size: int
    """M = N = K of each product."""
    ring: int
    """Output buffers per timed window; every one is checked after the window."""

    def __post_init__(self) -> None:
        if self.size < 1 or self.ring < 1:
            raise ConfigError("size and ring must be at least 1", field="profile.matmul")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemorySection(Section):
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
class PcieSection(Section):
    mib: int
    """Bytes per copy between pinned host memory and the device, in MiB."""

    def __post_init__(self) -> None:
        if self.mib < 1:
            raise ConfigError("mib must be at least 1", field="profile.pcie")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvlinkSection(Section):
    mib: int
    """Bytes per copy between two GPUs, in MiB."""

    def __post_init__(self) -> None:
        if self.mib < 1:
            raise ConfigError("mib must be at least 1", field="profile.nvlink")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NcclSection(Section):
    sizes_mib: tuple[int, ...]
    """The all-reduce sizes swept, per rank, in MiB (nccl-tests' -b to -e)."""
    iterations: int
    """All-reduces per timed window (nccl-tests' -n)."""

    def __post_init__(self) -> None:
        if not self.sizes_mib or min(self.sizes_mib) < 1 or self.iterations < 1:
            raise ConfigError("sizes_mib needs sizes of at least 1 and iterations at least 1", field="profile.nccl")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSection(Section):
    layers: int
    """Transformer layers."""
    d_model: int
    """The model's width."""
    heads: int
    """Attention heads: d_model divides by it."""
    seq: int
    """Tokens per sequence, even: the copy task's second half repeats its first."""
    batch: int
    """Sequences per step."""
    vocab: int
    """Tokens in the vocabulary."""
    dtype: str
    """"bf16" (autocast over float32 master weights) or "fp32"."""
    lr: float
    """AdamW's learning rate."""
    clip: float = 1.0
    """Gradient clipping: the largest gradient norm."""
    window_steps: int = 4
    """Steps per timed window; a window's fingerprints reach the host together."""

    def __post_init__(self) -> None:
        sizes = (self.layers, self.d_model, self.heads, self.seq, self.batch, self.window_steps)
        if min(sizes) < 1 or self.vocab < 2 or self.d_model % self.heads or self.seq % 2:
            raise ConfigError(
                "layers, d_model, heads, seq, batch and window_steps must be at least 1 and vocab at least 2, "
                "d_model divisible by heads, seq even",
                field="profile.train",
            )
        if self.dtype not in ("bf16", "fp32") or not (0.0 < self.lr < math.inf and 0.0 < self.clip < math.inf):
            raise ConfigError("dtype must be bf16 or fp32, lr and clip positive", field="profile.train")


NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Group:
    """One test group."""

    name: str
    """The pytest marker, the first part of every metric name, the profile section's key, the test
    module's name (`gputests/test_<name>.py`)."""
    help: str
    """What the group tests, in a phrase: the marker's description in `pytest --markers`."""
    stress: bool
    """Its tests load the GPUs: health snapshots are taken around them and telemetry during them."""
    metrics: Mapping[str, Direction] = dataclasses.field(default_factory=dict)
    """Every metric family its tests measure (shell patterns that start with `<name>.`) and which way
    is better. A baseline that says otherwise is refused (a floor read as a ceiling passes any figure),
    and so is a figure a test records otherwise; a latency is better lower."""
    between_gpus: bool = False
    """It measures between the GPUs of a node: a lone GPU has nothing to measure, so the 1-GPU
    baselines (baselines/generate.py) leave its metrics out."""
    gpu: Section | None = None
    """Its section of the profile on GPUs (every preset), or None when it has no settings."""
    cpu: Section | None = None
    """The same section for the CPU self-test (`Profile.for_cpu`): small sizes that check the pipeline."""
    module: str | None = None
    """The parent side of its device test (`gputests.work.<name>_run`), which imports the worker:
    tests/conftest.py imports it once, since workers are pickled by reference. None for a group
    without device workers of its own."""
    gpu_check: bool = True
    """bench/gpu_check.sh runs it on the lent GPU machine; False only for a group that cannot run
    there, saying why in `help` or here."""

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ValueError(f"group name {self.name!r}: lower-case letters, digits and _, a letter first")
        for pattern in self.metrics:
            if not pattern.startswith(f"{self.name}."):
                raise ValueError(f"metric {pattern!r} of group {self.name!r} must start with {self.name}.")
        if (self.gpu is None) != (self.cpu is None) or type(self.gpu) is not type(self.cpu):
            raise ValueError(f"group {self.name!r}: give gpu and cpu sections of one Section type, or neither")
        if self.gpu is not None and not isinstance(self.gpu, Section):
            raise ValueError(f"group {self.name!r}: its sections must subclass harness.groups.Section")

    @property
    def section(self) -> type[Section] | None:
        """Its profile section's dataclass, or None."""
        return type(self.gpu) if self.gpu is not None else None


def _registry(*entries: Group) -> dict[str, Group]:
    found: dict[str, Group] = {}
    for group in entries:
        if group.name in found:
            raise ValueError(f"group {group.name!r} is declared twice")
        if group.section is not None and any(g.section is group.section for g in found.values()):
            raise ValueError(f"group {group.name!r}: its section class belongs to another group")
        found[group.name] = group
    return found


GROUPS: dict[str, Group] = _registry(
    Group(
        name="matmul",
        help="matrix-multiply throughput with a silent-data-corruption check",
        stress=True,
        metrics={"matmul.*.tflops": Direction.HIGHER},
        gpu=MatmulSection(size=8192, ring=8),
        cpu=MatmulSection(size=128, ring=2),
        module="gputests.work.matmul_run",
    ),
    Group(
        name="memory",
        help="GPU memory pattern and ECC stress",
        stress=True,
        metrics={
            "memory.coverage": Direction.HIGHER,
            "memory.verify.gbps": Direction.HIGHER,
            "memory.*.verify.gbps": Direction.HIGHER,  # each pattern's own (memory.random.verify.gbps)
            "memory.bad_words": Direction.LOWER,
        },
        gpu=MemorySection(fraction=0.9, chunk_mib=1024),
        cpu=MemorySection(fraction=0.9, chunk_mib=16, max_mib=64),
        module="gputests.work.memory_run",
    ),
    Group(
        name="pcie",
        help="PCIe bandwidth between host and GPUs",
        stress=True,
        metrics={"pcie.*.gbps": Direction.HIGHER},
        gpu=PcieSection(mib=256),
        cpu=PcieSection(mib=4),
        module="gputests.work.pcie_run",
    ),
    Group(
        name="nvlink",
        help="NVLink bandwidth between GPUs",
        stress=True,
        metrics={"nvlink.*.gbps": Direction.HIGHER},
        between_gpus=True,
        gpu=NvlinkSection(mib=256),
        cpu=NvlinkSection(mib=4),
        module="gputests.work.nvlink_run",
    ),
    Group(
        name="nccl",
        help="NCCL all-reduce across GPUs",
        stress=True,
        metrics={"nccl.allreduce.*.busbw": Direction.HIGHER},
        between_gpus=True,
        # 8 MiB to 8 GiB by eights, 20 all-reduces per window: nccl-tests' -b 8M -e 8G -f 8 -n 20.
        gpu=NcclSection(sizes_mib=(8, 64, 512, 4096, 8192), iterations=20),
        cpu=NcclSection(sizes_mib=(1, 4), iterations=4),
        module="gputests.work.nccl_run",
    ),
    Group(
        name="train",
        help="a small transformer trained on every GPU, compared bitwise step by step (silent corruption in "
        "the kernels training runs)",
        stress=True,
        metrics={"train.tokens_per_s": Direction.HIGHER, "train.mfu": Direction.HIGHER},
        # About 100 ms a step on an H100, by estimate (docs/determinism.md, the baselines' provenance).
        gpu=TrainSection(layers=8, d_model=2048, heads=16, seq=2048, batch=8, vocab=4096, dtype="bf16", lr=3e-4),
        cpu=TrainSection(
            layers=2, d_model=64, heads=4, seq=32, batch=4, vocab=32, dtype="fp32", lr=1e-2, window_steps=8
        ),
        module="gputests.work.train_run",
    ),
    Group(
        name="health",
        help="NVML health before and after the suite",
        stress=False,
    ),
    Group(
        name="dcgm",
        help="DCGM diagnostics (dcgmi diag): only when a DCGM level is given (--dcgm-level, --gpu-dcgm-level)",
        stress=False,
        gpu_check=False,  # the lent GPU machine has no DCGM; tests/test_dcgm.py runs it on recorded output
    ),
)
"""Every test group, by name, in the order of the profile's sections and of `-m`'s help."""


def stressing() -> tuple[str, ...]:
    """The groups whose tests load the GPUs: health snapshots and telemetry are taken around them."""
    return tuple(name for name, group in GROUPS.items() if group.stress)


def metrics() -> dict[str, Direction]:
    """Every metric the tests measure (shell patterns, one per family) and which way is better, from
    each group's `metrics`."""
    return {pattern: d for group in GROUPS.values() for pattern, d in group.metrics.items()}


def direction_of(metric: str) -> Direction | None:
    """Which way `metric` is better, or None when no test measures it."""
    for pattern, direction in metrics().items():
        if fnmatch.fnmatchcase(metric, pattern):
            return direction
    return None


def of_section(kind: type[Section]) -> Group:
    """The group whose profile section is `kind`."""
    for group in GROUPS.values():
        if group.section is kind:
            return group
    raise KeyError(f"{kind.__name__} is no group's section in harness.groups.GROUPS")
