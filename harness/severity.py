"""Which failures are critical: the jobs on the GPU are already dead, or computing wrong answers.

A node agent marks a failing node `gpu-burnin/severity=critical` for these, `fail` for every
other failure; the remediator drains critical nodes (evicts their GPU pods; `--drain`) and
only cordons the others, so that a slow or warm GPU finishes its jobs while a GPU that
corrupts data or has fallen off the bus does not keep them.

- `DATA_MISMATCH`: the GPU returned wrong results. Every job on it may be computing garbage.
- `ECC_UNCORRECTABLE` (as a failure; ECC switched off is a warning): memory lost data; the
  process that touched it is killed, and the GPU needs a reset before it is trusted.
- `ROW_REMAP_FAILURE`: the memory has no spare rows left: the next error is unrecoverable.
- `GPU_MISSING`: the GPU is gone (lost, fallen off the bus): its jobs are dead.
- an Xid NVIDIA resolves by resetting the GPU, rebooting the node or replacing the GPU
  (remediation `reset-gpu`, `reboot-node`, `replace-gpu`: Xid 48, 79, 95, ...): the GPU
  stops serving its jobs until then. Xids resolved by restarting the application, or by
  checking the configuration, are not.

Everything else that fails (slow, throttled, hot, a pending row remap, links down, a hang
under the suite's load, too many incomplete runs) is `fail`: cordoned, not drained.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.records import Code, Finding, Remediation, Severity

CRITICAL_CODES = frozenset({Code.DATA_MISMATCH, Code.ECC_UNCORRECTABLE, Code.ROW_REMAP_FAILURE, Code.GPU_MISSING})
CRITICAL_XID_REMEDIATIONS = frozenset({Remediation.RESET_GPU, Remediation.REBOOT_NODE, Remediation.REPLACE_GPU})


def critical(finding: Finding) -> bool:
    """A failing finding whose GPU's jobs are dead or wrong (the module's docstring says which)."""
    if finding.severity is not Severity.FAIL:
        return False
    if finding.code is Code.XID:
        return finding.remediation in CRITICAL_XID_REMEDIATIONS
    return finding.code in CRITICAL_CODES


def any_critical(findings: Iterable[Finding]) -> bool:
    return any(critical(f) for f in findings)
