"""The health rules: snapshots and telemetry in, findings out. Pure functions.

Three kinds of rule, all judged against the thresholds in each GPU model's baseline
(`[health]`, docs/health.md), never against numbers in code:

- state: what a snapshot shows now (an uncorrectable ECC error since the driver
  loaded, a row remap pending or failed, a pending page retirement, the hardware
  slowing a GPU down, a link down, a GPU missing);
- delta: what rose between the snapshots before and after a stress test (ECC,
  NVLink errors, a link that went down, a GPU lost under load);
- telemetry: what a GPU did during a stress test (time under hardware or thermal
  slowdown, temperatures, the PCIe link under load).

A rule with no data (the GPU does not report it) does not fire and does not pass:
the health test's verdict rests on what was seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.baselines import HealthLimits
from harness.devices import Device
from harness.nvml.kernel_log import normalise_pci_bus_id
from harness.nvml.snapshot import GpuHealth, Snapshot
from harness.records import Code, Finding, Remediation, Severity

SLOWDOWNS = ("hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown")
"""Clock event reasons that mean the hardware is holding a GPU back. The others (idle, application
clocks, the software power cap, sync boost) are how a healthy GPU runs."""

Limits = Mapping[str, HealthLimits]
"""Per GPU UUID, its model's thresholds."""


def state(snapshot: Snapshot, devices: Sequence[Device], limits: Limits, *, test: str = "") -> list[Finding]:
    """What the snapshot shows about every device under test."""
    found = _missing(snapshot, devices, test, when="") + mig(snapshot, devices, test=test)
    for device in devices:
        gpu = snapshot.gpu(device.uuid)
        if gpu is not None:
            found += _gpu_state(device, gpu, limits.get(device.uuid) or HealthLimits(), test)
    return found


def delta(
    before: Snapshot, after: Snapshot, devices: Sequence[Device], limits: Limits, *, test: str, during: str
) -> list[Finding]:
    """What rose during a stress test (`during` names it in the messages)."""
    found = _missing(after, devices, test, when=f" during {during}")
    for device in devices:
        old, new = before.gpu(device.uuid), after.gpu(device.uuid)
        if old is not None and new is not None:
            seconds = max(0.0, (after.taken_at - before.taken_at).total_seconds())
            found += _gpu_delta(device, old, new, limits.get(device.uuid) or HealthLimits(), test, during, seconds)
    return found


def telemetry(
    summary: Mapping[str, Mapping[str, Any]], devices: Sequence[Device], limits: Limits, *, test: str, during: str
) -> list[Finding]:
    """What the GPUs did during a stress test, from the monitor's summary."""
    found = []
    for device in devices:
        entry = summary.get(device.uuid)
        if entry:
            found += _gpu_telemetry(device, entry, limits.get(device.uuid) or HealthLimits(), test, during)
    return found


def mig(snapshot: Snapshot, devices: Sequence[Device], *, test: str = "") -> list[Finding]:
    """Devices on a GPU in MIG mode, or that are MIG slices: burn-in needs whole GPUs, so the run is
    incomplete (check-config), never a hardware failure. A slice's UUID (MIG-...) is never an NVML GPU's:
    it is known by the PCI bus id of its GPU, or by its name."""
    found = []
    for device in devices:
        gpu = snapshot.gpu(device.uuid)
        parent = gpu if gpu is not None and gpu.mig else _mig_parent(snapshot, device) if gpu is None else None
        if parent is not None:
            what = "MIG mode is on" if parent is gpu else f"a MIG slice of GPU {parent.index} ({parent.pci_bus_id})"
        elif gpu is None and _slice(device):
            what = "a MIG slice"
        else:
            continue
        found.append(
            device.finding(
                Code.MIG_ENABLED,
                Severity.INCOMPLETE,
                f"{what}: burn-in needs whole GPUs (nvidia-smi -mig 0 and a GPU reset turn MIG mode off)",
                Remediation.CHECK_CONFIG,
                test=test,
            )
        )
    return found


def _slice(device: Device) -> bool:
    """A MIG slice by its own words: CUDA names it `MIG-...`, torch `NVIDIA A100-SXM4-40GB MIG 1g.5gb`."""
    return device.uuid.startswith("MIG-") or " MIG " in f" {device.name} "


def _mig_parent(snapshot: Snapshot, device: Device) -> GpuHealth | None:
    """The GPU in MIG mode at the device's PCI bus id: the whole GPU a slice is cut from."""
    try:
        bus = normalise_pci_bus_id(device.pci_bus_id)
    except ValueError:
        return None
    return next((g for g in snapshot.gpus if g.mig and _same_bus(g.pci_bus_id, bus)), None)


def _same_bus(pci_bus_id: str, bus: str) -> bool:
    try:
        return normalise_pci_bus_id(pci_bus_id) == bus
    except ValueError:
        return False


# -- state -----------------------------------------------------------------------------------------


def _missing(snapshot: Snapshot, devices: Sequence[Device], test: str, *, when: str) -> list[Finding]:
    if not snapshot.gpus and not snapshot.lost and snapshot.problem:
        return []  # the GPUs could not be read at all (no NVML, no nvidia-smi): unknown, not missing
    found = []
    lost = {i for i in snapshot.lost}
    for device in devices:
        if device.kind != "cuda" and not snapshot.simulated:
            continue
        if _slice(device) or _mig_parent(snapshot, device) is not None:
            continue  # a MIG slice: never an NVML GPU's UUID (`mig` says why the run cannot pass)
        if snapshot.gpu(device.uuid) is None:
            why = "NVML reports it lost" if device.index in lost else "it is no longer listed"
            found.append(
                device.finding(
                    Code.GPU_MISSING,
                    Severity.FAIL,
                    f"{why}{when}: fallen off the bus?",
                    Remediation.REBOOT_NODE,
                    test=test,
                )
            )
    return found


def _gpu_state(device: Device, gpu: GpuHealth, limits: HealthLimits, test: str) -> list[Finding]:
    found = []

    def add(code: Code, severity: Severity, text: str, remediation: Remediation, **details: Any) -> None:
        found.append(device.finding(code, severity, text, remediation, test=test, **details))

    ecc = gpu.ecc
    limit = limits.sram_uncorrected_aggregate_max
    sram_over = (
        limit is not None and ecc.aggregate_sram_uncorrected is not None and ecc.aggregate_sram_uncorrected > limit
    )
    if ecc.volatile_uncorrected:
        add(
            Code.ECC_UNCORRECTABLE,
            Severity.FAIL,
            f"{ecc.volatile_uncorrected} uncorrectable ECC errors since the driver loaded",
            Remediation.RESET_GPU,
            volatile_uncorrected=ecc.volatile_uncorrected,
        )
    if sram_over:
        add(
            Code.ECC_UNCORRECTABLE,
            Severity.FAIL,
            f"{ecc.aggregate_sram_uncorrected} uncorrectable SRAM errors in its lifetime, over the threshold of "
            f"{limit}",
            Remediation.REPLACE_GPU,
            aggregate_sram_uncorrected=ecc.aggregate_sram_uncorrected,
            limit=limit,
        )
    elif ecc.aggregate_uncorrected and not ecc.volatile_uncorrected:
        add(
            Code.ECC_UNCORRECTABLE,
            Severity.INFO,
            f"{ecc.aggregate_uncorrected} uncorrectable ECC errors in its lifetime, none since the driver loaded",
            Remediation.NONE,
            aggregate_uncorrected=ecc.aggregate_uncorrected,
        )
    if gpu.remap.failure:
        add(
            Code.ROW_REMAP_FAILURE,
            Severity.FAIL,
            "a row remap failed: a memory bank has no spare rows left",
            Remediation.REPLACE_GPU,
        )
    if gpu.remap.pending:
        add(
            Code.ROW_REMAP_PENDING,
            Severity.FAIL,
            f"a row remap is pending ({gpu.remap.uncorrected} rows for uncorrectable errors): a GPU reset applies it",
            Remediation.RESET_GPU,
            uncorrected=gpu.remap.uncorrected,
            corrected=gpu.remap.corrected,
        )
    if gpu.retired.pending:
        add(
            Code.RETIREMENT_PENDING,
            Severity.FAIL,
            "a page retirement is pending: a reset or reboot applies it",
            Remediation.RESET_GPU,
        )
    counts = [n for n in (gpu.retired.single_bit, gpu.retired.double_bit) if n is not None]
    retired = sum(counts)
    if limits.retired_pages_max is not None and counts and retired >= limits.retired_pages_max:
        add(
            Code.RETIRED_PAGES,
            Severity.FAIL,
            f"{retired} pages retired, at or over the threshold of {limits.retired_pages_max}",
            Remediation.REPLACE_GPU,
            single_bit=gpu.retired.single_bit,
            double_bit=gpu.retired.double_bit,
        )
    slowing = [name for name in gpu.clock_event_names if name in SLOWDOWNS]
    if slowing:
        add(
            Code.THROTTLED,
            Severity.FAIL,
            f"the hardware is slowing it down now: {', '.join(slowing)}",
            Remediation.INSPECT_HARDWARE,
            reasons=list(gpu.clock_event_names),
        )
    if limits.pcie_width is not None and gpu.pcie.width is not None and gpu.pcie.width < limits.pcie_width:
        add(
            Code.PCIE_DOWNGRADED,
            Severity.FAIL,
            f"PCIe link x{gpu.pcie.width}, where this model needs x{limits.pcie_width}: reseat the GPU or check "
            "the slot",
            Remediation.INSPECT_HARDWARE,
            width=gpu.pcie.width,
            width_max=gpu.pcie.width_max,
        )
    if limits.nvlink_links is not None:
        found += _nvlinks(device, gpu, limits.nvlink_links, test)
    if gpu.ecc_enabled is False:
        add(
            Code.ECC_UNCORRECTABLE,
            Severity.WARNING,
            "ECC is disabled: memory errors go unseen",
            Remediation.CHECK_CONFIG,
        )
    return found


def _nvlinks(device: Device, gpu: GpuHealth, expected: int, test: str) -> list[Finding]:
    """Only a link that reports itself inactive is down. A link NVML answers NotSupported for (an
    H200 SXM passed into a VM), or a snapshot from nvidia-smi (which has no NVLink data), says
    nothing about the links: that is not judged, and said so."""
    reported = [link for link in gpu.nvlinks if link.active is not None]
    down = [link.link for link in reported if link.active is False]
    active = len(reported) - len(down)
    if active >= expected:
        return []
    if down:
        return [
            device.finding(
                Code.NVLINK_DOWN,
                Severity.FAIL,
                f"{active} of {expected} NVLink links active: links {down} report inactive",
                Remediation.REBOOT_NODE,
                test=test,
                active=active,
                expected=expected,
                down=down,
            )
        ]
    if reported:
        text = f"{len(reported)} of {expected} NVLink links report a state (all active); the other links report none"
    else:
        text = "no NVLink link reports a state (NVML answers NotSupported, or the snapshot is nvidia-smi's)"
    return [
        device.finding(
            Code.NVLINK_UNREPORTED,
            Severity.WARNING,
            f"{text}: the links were not judged",
            Remediation.CHECK_CONFIG,
            test=test,
            reported=len(reported),
            expected=expected,
        )
    ]


# -- delta ------------------------------------------------------------------------------------------


def _rise(old: int | None, new: int | None) -> int:
    return max(0, (new or 0) - (old or 0)) if old is not None and new is not None else 0


def _gpu_delta(
    device: Device, old: GpuHealth, new: GpuHealth, limits: HealthLimits, test: str, during: str, seconds: float
) -> list[Finding]:
    found = []

    def add(code: Code, severity: Severity, text: str, remediation: Remediation, **details: Any) -> None:
        found.append(device.finding(code, severity, text, remediation, test=test, **details))

    uncorrected = _rise(old.ecc.volatile_uncorrected, new.ecc.volatile_uncorrected)
    if uncorrected:
        add(
            Code.ECC_UNCORRECTABLE,
            Severity.FAIL,
            f"{uncorrected} uncorrectable ECC errors during {during}",
            Remediation.RESET_GPU,
            rise=uncorrected,
        )
    corrected = _rise(old.ecc.volatile_corrected, new.ecc.volatile_corrected)
    if limits.ecc_corrected_delta_max is not None and corrected > limits.ecc_corrected_delta_max:
        add(
            Code.ECC_CORRECTED,
            Severity.FAIL,
            f"{corrected} corrected ECC errors during {during}, over the threshold of {limits.ecc_corrected_delta_max}"
            ": the memory is degrading",
            Remediation.RESET_GPU,
            rise=corrected,
            limit=limits.ecc_corrected_delta_max,
        )
    remapped = _rise(old.remap.uncorrected, new.remap.uncorrected)
    if remapped and not new.remap.pending:  # pending fires as a state rule; a remap done in flight is worth a note
        add(Code.ROW_REMAP_PENDING, Severity.WARNING, f"{remapped} rows remapped during {during}", Remediation.NONE)
    found += _nvlink_errors(device, old, new, limits, test, during, seconds)
    went_down = [
        a.link for a in old.nvlinks for b in new.nvlinks if a.link == b.link and a.active and b.active is False
    ]
    if went_down:
        add(
            Code.NVLINK_DOWN,
            Severity.FAIL,
            f"NVLink links {went_down} went down during {during}",
            Remediation.REBOOT_NODE,
            links=went_down,
        )
    return found


# -- telemetry ------------------------------------------------------------------------------------


def _nvlink_errors(
    device: Device, old: GpuHealth, new: GpuHealth, limits: HealthLimits, test: str, during: str, seconds: float
) -> list[Finding]:
    """NVLink error counters, judged link by link over one test, as DCGM judges them: a recovery is
    a failure, replays are a warning past a few, CRC errors only at a rate (100 a second and more
    matter, per NVIDIA's driver team; a handful on one of 144 links is noise the link corrects)."""
    recovered: dict[int, int] = {}
    replayed: dict[int, int] = {}
    crc_rate: dict[int, float] = {}
    before = {link.link: link for link in old.nvlinks}
    for link in new.nvlinks:
        was = before.get(link.link)
        if was is None:
            continue
        recovered[link.link] = _rise(was.recovery_errors, link.recovery_errors)
        replayed[link.link] = _rise(was.replay_errors, link.replay_errors)
        if seconds > 0:
            crc_rate[link.link] = _rise(was.crc_errors, link.crc_errors) / seconds
    found = []
    rules = (
        (recovered, limits.nvlink_recovery_delta_max, Severity.FAIL, Remediation.RESET_GPU, "recoveries"),
        (replayed, limits.nvlink_replay_delta_max, Severity.WARNING, Remediation.INSPECT_HARDWARE, "replays"),
        (crc_rate, limits.nvlink_crc_per_s_max, Severity.FAIL, Remediation.INSPECT_HARDWARE, "CRC errors a second"),
    )
    for counts, limit, severity, remediation, what in rules:
        over = {link: count for link, count in counts.items() if limit is not None and count > limit}
        if over:
            links = ", ".join(f"link {link}: {count:g}" for link, count in sorted(over.items()))
            found.append(
                device.finding(
                    Code.NVLINK_ERRORS,
                    severity,
                    f"NVLink {what} during {during} over {limit:g} per link ({links})",
                    remediation,
                    test=test,
                    links={str(link): count for link, count in over.items()},
                    limit=limit,
                )
            )
    return found


def _gpu_telemetry(
    device: Device, entry: Mapping[str, Any], limits: HealthLimits, test: str, during: str
) -> list[Finding]:
    found = []

    def add(code: Code, severity: Severity, text: str, remediation: Remediation, **details: Any) -> None:
        found.append(device.finding(code, severity, text, remediation, test=test, **details))

    shares = entry.get("clock_events", {})
    slowed = {name: share for name, share in shares.items() if name in SLOWDOWNS and share > 0}
    slowest = max(slowed.values(), default=0.0)
    if limits.throttle_share_max is not None and slowest > limits.throttle_share_max:
        parts = ", ".join(f"{name.replace('_', ' ')} {share:.0%}" for name, share in slowed.items())
        add(
            Code.THROTTLED,
            Severity.FAIL,
            f"slowed by the hardware during {during}: {parts} of the time (limit {limits.throttle_share_max:.0%})"
            f"{_temperatures(entry)}",
            Remediation.INSPECT_HARDWARE,
            shares=slowed,
        )
    hottest = entry.get("temperature_c", {}).get("max")
    if limits.temperature_max_c is not None and hottest is not None and hottest > limits.temperature_max_c:
        add(
            Code.OVER_TEMPERATURE,
            Severity.FAIL,
            f"{hottest:.0f} C during {during}, over {limits.temperature_max_c:.0f} C: check its cooling",
            Remediation.INSPECT_HARDWARE,
            max_c=hottest,
        )
    memory = entry.get("memory_temperature_c", {}).get("max")
    if limits.memory_temperature_max_c is not None and memory is not None and memory > limits.memory_temperature_max_c:
        add(
            Code.OVER_TEMPERATURE,
            Severity.FAIL,
            f"memory at {memory:.0f} C during {during}, over {limits.memory_temperature_max_c:.0f} C",
            Remediation.INSPECT_HARDWARE,
            memory_max_c=memory,
        )
    gen = entry.get("pcie_gen_median")
    if limits.pcie_gen is not None and gen is not None and gen < limits.pcie_gen:
        add(
            Code.PCIE_DOWNGRADED,
            Severity.FAIL,
            f"PCIe gen {gen:g} under load during {during}, where this model runs gen {limits.pcie_gen}",
            Remediation.INSPECT_HARDWARE,
            gen=gen,
        )
    width = entry.get("pcie_width_min")
    if limits.pcie_width is not None and width is not None and width < limits.pcie_width:
        add(
            Code.PCIE_DOWNGRADED,
            Severity.FAIL,
            f"PCIe link x{width} during {during}, where this model needs x{limits.pcie_width}",
            Remediation.INSPECT_HARDWARE,
            width=width,
        )
    return found


def _temperatures(entry: Mapping[str, Any]) -> str:
    hottest = entry.get("temperature_c", {}).get("max")
    return f", {hottest:.0f} C max" if hottest is not None else ""
