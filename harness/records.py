"""The records a run produces: measurements and findings.

Both are plain data. They cross process boundaries (a worker per GPU sends them to
the pytest process) and are read back from result files by the fleet report, so
each converts to and from a JSON-ready dict, and readers ignore keys they do not
know.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any

NODE = "node"
"""The `gpu` of a measurement or finding that belongs to the whole node."""


class Direction(StrEnum):
    """Which way a metric is better."""

    HIGHER = "higher"
    LOWER = "lower"


class Severity(StrEnum):
    """What a finding does to the verdict."""

    FAIL = "fail"
    """The hardware is not fit for service."""
    INCOMPLETE = "incomplete"
    """No decision can be made (error, timeout, skip, no baseline)."""
    WARNING = "warning"
    """Worth a look; does not change the verdict."""
    INFO = "info"


class Code(StrEnum):
    """What a finding is about. Add codes; never reuse or rename one."""

    LOW_THROUGHPUT = "LOW_THROUGHPUT"
    OVER_LIMIT = "OVER_LIMIT"
    """A lower-is-better metric (a latency) above its ceiling or behind its node."""
    DATA_MISMATCH = "DATA_MISMATCH"
    HANG = "HANG"
    TEST_ERROR = "TEST_ERROR"
    TEST_SKIPPED = "TEST_SKIPPED"
    NO_BASELINE = "NO_BASELINE"
    NO_GPUS = "NO_GPUS"
    NO_TESTS = "NO_TESTS"
    GPU_COUNT_MISMATCH = "GPU_COUNT_MISMATCH"
    MISSING_MEASUREMENT = "MISSING_MEASUREMENT"
    BASELINE_DRIVER_DIFFERS = "BASELINE_DRIVER_DIFFERS"
    NOT_IN_BASELINE = "NOT_IN_BASELINE"
    """A figure measured but not judged: its baseline has no limit for it."""
    FAULT_INJECTED = "FAULT_INJECTED"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    INTERRUPTED = "INTERRUPTED"
    FAULT_NOT_APPLIED = "FAULT_NOT_APPLIED"
    """An injected fault that a test's worker had no fault point for."""
    RESULT_UNWRITTEN = "RESULT_UNWRITTEN"
    """The final result file could not be written: a pass that leaves no record is not a pass."""
    ECC_UNCORRECTABLE = "ECC_UNCORRECTABLE"
    ECC_CORRECTED = "ECC_CORRECTED"
    """Corrected errors past the baseline's threshold (a rising count is an early sign)."""
    ROW_REMAP_PENDING = "ROW_REMAP_PENDING"
    ROW_REMAP_FAILURE = "ROW_REMAP_FAILURE"
    RETIREMENT_PENDING = "RETIREMENT_PENDING"
    RETIRED_PAGES = "RETIRED_PAGES"
    XID = "XID"
    THROTTLED = "THROTTLED"
    PCIE_DOWNGRADED = "PCIE_DOWNGRADED"
    NVLINK_DOWN = "NVLINK_DOWN"
    NVLINK_ERRORS = "NVLINK_ERRORS"
    GPU_MISSING = "GPU_MISSING"
    HEALTH_UNAVAILABLE = "HEALTH_UNAVAILABLE"
    """No health snapshot could be taken (no NVML, no nvidia-smi): health is unknown."""
    SIMULATED = "SIMULATED"
    """The health data came from a simulated NVML: the run can never pass a real node."""
    DCGM_FAILED = "DCGM_FAILED"
    OVER_TEMPERATURE = "OVER_TEMPERATURE"
    NO_PEER_ACCESS = "NO_PEER_ACCESS"
    """Two GPUs that should reach each other directly (NVLink, PCIe P2P) cannot."""
    PCIE_PLACEMENT = "PCIE_PLACEMENT"
    """Where the PCIe test's host memory and thread ran: the GPU's NUMA node, or why not (info)."""
    NOTHING_TO_TEST = "NOTHING_TO_TEST"
    """A test that needs several GPUs on a node with one: incomplete only where a baseline requires it."""
    NVLINK_UNREPORTED = "NVLINK_UNREPORTED"
    """The source reports no state for (some of) a GPU's NVLink links: not judged, never read as down."""
    MIG_ENABLED = "MIG_ENABLED"
    """MIG mode is on: burn-in needs whole GPUs, so the run is incomplete, never a hardware failure."""
    INCONCLUSIVE = "INCONCLUSIVE"
    """Results that must agree do not, and no majority tells which is right (two GPUs of one model
    training differently): incomplete, rerun."""
    TRAIN_DIVERGED = "TRAIN_DIVERGED"
    """The training test's loss was not finite, or did not fall over the run."""
    TRAIN_FINGERPRINTS = "TRAIN_FINGERPRINTS"
    """The training test's first steps' fingerprints and how its steps were checked (info)."""


class Remediation(StrEnum):
    """The least drastic action expected to clear a finding."""

    NONE = "none"
    RERUN = "rerun"
    CHECK_CONFIG = "check-config"
    RESTART_APP = "restart-app"
    RESET_GPU = "reset-gpu"
    REBOOT_NODE = "reboot-node"
    INSPECT_HARDWARE = "inspect-hardware"
    """Reseat the GPU or cable, check cooling and power: the hardware around the GPU."""
    REPLACE_GPU = "replace-gpu"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measurement:
    """One figure for one GPU (or the node) from one test."""

    metric: str
    """Dotted name whose first part is the test group: `matmul.bf16.tflops`."""
    gpu: str
    """The GPU's UUID, or `NODE` for a node-wide figure."""
    value: float
    unit: str
    direction: Direction
    test: str = ""
    """The pytest node id of the test that measured it."""
    samples: int = 1
    """How many timed windows the value summarises (it is their median)."""
    low: float | None = None
    """The lowest window, when there were several."""
    high: float | None = None
    """The highest window, when there were several."""
    peer: str = ""
    """For a figure of a pair of GPUs (a copy between them), the other GPU's UUID; `gpu` is the
    source. Pairs are compared with the node's median pair, not its best GPU."""

    @property
    def group(self) -> str:
        return self.metric.split(".", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**_known(cls, data), direction=Direction(data["direction"]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finding:
    """Something a run found, good or bad, as data. Verdicts are computed from these."""

    code: Code
    severity: Severity
    message: str
    """One line a person can act on; names the GPU by index and UUID."""
    gpu: str = NODE
    remediation: Remediation = Remediation.NONE
    test: str = ""
    """The pytest node id the finding came from; empty for session-level findings."""
    metric: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Counts, tracebacks and figures behind the message (JSON-ready)."""

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        known = _known(cls, data)
        return cls(
            **known,
            code=Code(data["code"]),
            severity=Severity(data["severity"]),
            remediation=Remediation(data.get("remediation", Remediation.NONE)),
        )


def _to_dict(record: Any) -> dict[str, Any]:
    return {field.name: getattr(record, field.name) for field in dataclasses.fields(record)}


_ENUM_FIELDS = {"direction", "code", "severity", "remediation"}


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {field.name for field in dataclasses.fields(cls)} - _ENUM_FIELDS
    return {key: value for key, value in data.items() if key in names}
