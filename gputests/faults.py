"""Fault injection (`--gpu-inject`): prove that the pipeline fails closed.

A spec is `[GROUP.]KIND[:DEVICE]`, such as `corrupt`, `matmul.hang:1`. The fault
goes into one device's worker (device 0 unless named) in the tests of GROUP (every
group when omitted). Every injection is recorded as a finding in the result file;
none can turn a run into a pass.
"""

from __future__ import annotations

import dataclasses

from harness.errors import ConfigError

KINDS = {
    "corrupt": "flip one bit of one product: DATA_MISMATCH, fail",
    "skew": "perturb one input on one device so all its products differ from the others': DATA_MISMATCH, fail",
    "hang": "stop making progress (a spinning kernel on a GPU): HANG, incomplete",
    "crash": "kill the worker with SIGSEGV: TEST_ERROR, incomplete",
    "error": "raise an exception in the worker, as a CUDA error does: TEST_ERROR, incomplete",
}
GROUPS = ("matmul", "memory", "nvlink", "pcie", "nccl", "health")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fault:
    kind: str
    device: int = 0
    group: str = ""
    """The test group it applies to; empty for every group."""

    def applies_to(self, group: str) -> bool:
        return self.group in ("", group)

    def __str__(self) -> str:
        prefix = f"{self.group}." if self.group else ""
        return f"{prefix}{self.kind}:{self.device}"


def parse(spec: str) -> Fault:
    text, _, device_text = spec.strip().partition(":")
    group, _, kind = text.rpartition(".")
    if kind not in KINDS:
        raise ConfigError(f"unknown fault {kind!r} in {spec!r}; expected one of {sorted(KINDS)}", field="--gpu-inject")
    if group and group not in GROUPS:
        raise ConfigError(
            f"unknown test group {group!r} in {spec!r}; expected one of {list(GROUPS)}", field="--gpu-inject"
        )
    try:
        device = int(device_text) if device_text else 0
    except ValueError:
        raise ConfigError(f"device in {spec!r} must be a number", field="--gpu-inject") from None
    if device < 0:
        raise ConfigError(f"device in {spec!r} must be at least 0", field="--gpu-inject")
    return Fault(kind=kind, device=device, group=group)
