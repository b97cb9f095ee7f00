"""The health rules (harness/health.py) through the simulated NVML's shipped scenarios, on real
nvidia-smi captures, and end to end."""

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gputests.health_watch import Watch
from harness import health
from harness.baselines import HealthLimits, default_dir, load_dir
from harness.devices import Device
from harness.nvml import read, smi
from harness.nvml.sim import Simulated
from harness.nvml.snapshot import (
    GpuHealth,
    NvLink,
    RetiredPages,
    Snapshot,
    decode_clock_events,
    encode_clock_events,
)
from harness.records import Code, Finding, Remediation, Severity
from tests.helpers import REPO, only_result

SCENARIOS = sorted((REPO / "harness" / "nvml" / "scenarios").glob("*.toml"))
CAPTURES = REPO / "tests" / "data" / "nvidia-smi"
CPU = Device(index=0, kind="cpu", name="Test CPU", uuid="CPU-test", sm_count=2)


def rehearse(scenario: Path) -> tuple[Watch, list]:
    """A run's health path in-process: start, the health test, a matmul burn, the end."""
    with Watch(f"sim:{scenario}", [CPU], load_dir(default_dir()), startup_s=60, sample_every_s=0.05) as watch:
        found = watch.start()
        found += watch.judge("t::health") or []
        watch.before("t::matmul", "matmul")
        time.sleep(0.3)  # a few telemetry samples inside the burn
        found += watch.after("t::matmul", "matmul")
        found += watch.finish()
    return watch, found


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_gives_exactly_its_findings(scenario):
    expected = sorted(Simulated.expect_of(scenario))
    watch, found = rehearse(scenario)
    index = {d.uuid: d.index for d in watch.devices}
    judged = sorted(f"{f.code}:{f.severity}:{index.get(f.gpu, f.gpu)}" for f in found if f.code is not Code.SIMULATED)
    assert judged == expected, [f.message for f in found]
    assert [f.code for f in found].count(Code.SIMULATED) == 1
    assert {"start", "health", "before:matmul", "after:matmul", "end"} <= set(watch.snapshots)
    assert all(s["source"].startswith("sim:") for s in watch.snapshots.values())


def test_every_rule_has_a_scenario():
    shipped = {e.split(":")[0] for p in SCENARIOS for e in Simulated.expect_of(p)}
    rules = {
        Code.ECC_UNCORRECTABLE,
        Code.ECC_CORRECTED,
        Code.ROW_REMAP_PENDING,
        Code.ROW_REMAP_FAILURE,
        Code.RETIREMENT_PENDING,
        Code.RETIRED_PAGES,
        Code.THROTTLED,
        Code.PCIE_DOWNGRADED,
        Code.NVLINK_DOWN,
        Code.NVLINK_ERRORS,
        Code.GPU_MISSING,
        Code.XID,
        Code.OVER_TEMPERATURE,
        Code.NVLINK_UNREPORTED,
        Code.MIG_ENABLED,
    }
    assert {str(r) for r in rules} <= shipped


def test_telemetry_summarises_the_burn_and_explains_a_low_figure():
    watch, _ = rehearse(REPO / "harness" / "nvml" / "scenarios" / "throttled-during-matmul.toml")
    entry = watch.telemetry["t::matmul"][watch.devices[0].uuid]
    assert entry["samples"] >= 2 and entry["clock_events"]["hw_slowdown"] == 1.0
    assert entry["temperature_c"]["max"] == 80
    rest = watch.telemetry["t::matmul"][watch.devices[1].uuid]
    assert rest["clock_events"]["hw_slowdown"] == 0.0 and rest["clock_events"]["gpu_idle"] == 1.0


@pytest.mark.parametrize(
    ("names", "mask"),
    [
        (("gpu_idle",), 0x1),
        (("sw_power_cap", "hw_slowdown", "hw_power_brake_slowdown"), 0x4 | 0x8 | 0x80),
        (("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown"), 0x8 | 0x20 | 0x40),
    ],
)
def test_throttle_reasons_in_combination_decode_with_and(names, mask):
    assert encode_clock_events(names) == mask
    assert set(decode_clock_events(mask)) == set(names)
    assert decode_clock_events(mask | 0x10000) == (*decode_clock_events(mask), "unknown_0x10000")


# Real captures (tests/data/SOURCES.md), judged with the H100 SXM baseline's thresholds: what each must give, and why.
CAPTURE_FINDINGS = {
    # Volatile uncorrectable ECC 1 and a page retirement pending: a fault now, a reset applies it.
    "pai_v100-sxm3-32gb_retired-pages-pending_TRIMMED-1of16.xml": [
        "ECC_UNCORRECTABLE:fail:0",
        "RETIREMENT_PENDING:fail:0",
    ],
    # Lifetime double-bit errors on two K80s, nothing since the driver loaded: history, not a fault.
    "pai_4xk80_aggregate-dbe-retired-pages.xml": ["ECC_UNCORRECTABLE:info:0", "ECC_UNCORRECTABLE:info:1"],
    # HW Slowdown and the power brake active on all eight idle GPUs.
    "gpud_8xH100_535.161.08_hw-slowdown-power-brake.txt": [f"THROTTLED:fail:{i}" for i in range(8)],
    # SW thermal slowdown and the power brake on one GPU alone, the third listed (00000000:75:00.0, line 500).
    "gpud_8xH100_535.183.01_sw-thermal-slowdown.txt": ["THROTTLED:fail:2"],
    # Remapped rows: uncorrectable 4, pending Yes.
    "gpud_A10_535.129.03_remapped-rows-pending.txt": ["ROW_REMAP_PENDING:fail:0"],
    # The EDITED copy: retired-page counts injected on GPUs 0, 1, 5 and 7 (at least 60 each), and a pending
    # blacklist on GPUs 1, 3, 5 and 7.
    "azurehpc_8gpu_535.86.10_retired-pages_bad-EDITED.txt": [
        *(f"RETIRED_PAGES:fail:{i}" for i in (0, 1, 5, 7)),
        *(f"RETIREMENT_PENDING:fail:{i}" for i in (1, 3, 5, 7)),
    ],
    # GeForce RTX 4090s with ECC Mode Disabled (the SW power cap on two of them is how a GPU runs, not a fault).
    "gpud_8xRTX4090_535.154.05_sw-power-cap.txt": [f"ECC_UNCORRECTABLE:warning:{i}" for i in range(8)],
    # An RTX 4000 Ada with ECC disabled.
    "telegraf_rtx-4000-sff-ada-v13.xml": ["ECC_UNCORRECTABLE:warning:0"],
    # A100s in MIG mode (<current_mig>Enabled</current_mig>): burn-in needs whole GPUs, incomplete, not a fault.
    "netdata_a100-sxm4-40gb-mig.xml": ["MIG_ENABLED:incomplete:0"],
    "telegraf_a100-sxm4-v12.xml": ["MIG_ENABLED:incomplete:0"],
}
# The captures are of many models: the H100's counts and temperatures apply, its link expectations (PCIe x16
# gen 5, 18 NVLinks, which nvidia-smi -q does not report) do not.
LIMITS = dataclasses.replace(
    load_dir(default_dir()).for_device("cuda", "NVIDIA H100 80GB HBM3", 8).health,
    pcie_gen=None,
    pcie_width=None,
    nvlink_links=None,
)


def judge_capture(path: Path):
    text = path.read_text()
    snapshot = smi.parse_xml(text) if path.suffix == ".xml" else smi.parse_text(text)
    # Captures without UUIDs (page-retirement-only output) get one per index, so the rules can find them.
    gpus = tuple(g if g.uuid else dataclasses.replace(g, uuid=f"capture-{g.index}") for g in snapshot.gpus)
    snapshot = dataclasses.replace(snapshot, gpus=gpus)
    devices = [Device(index=g.index, kind="cuda", name=g.name, uuid=g.uuid) for g in gpus]
    found = health.state(snapshot, devices, {d.uuid: LIMITS for d in devices})
    index = {d.uuid: d.index for d in devices}
    return sorted(f"{f.code}:{f.severity}:{index[f.gpu]}" for f in found)


@pytest.mark.parametrize("capture", sorted(p.name for p in CAPTURES.iterdir()))
def test_real_captures_give_what_their_content_supports(capture):
    assert judge_capture(CAPTURES / capture) == sorted(CAPTURE_FINDINGS.get(capture, []))


H100 = load_dir(default_dir()).for_device("cuda", "NVIDIA H100 80GB HBM3", 8).health
HGX_CAPTURES = ["gpud_8xH100_535.161.08_hw-slowdown-power-brake.txt", "gpud_8xH100_535.183.01_sw-thermal-slowdown.txt"]


@pytest.mark.parametrize("capture", HGX_CAPTURES)
def test_an_hgx_capture_judged_with_the_h100_limits_reads_no_link_down(capture):
    """nvidia-smi -q has no NVLink data: with the H100 baseline's own limits (18 links, PCIe gen 5 x16) the
    links are unreported, a warning, and the only failures are the slowdowns the capture shows."""
    snapshot = smi.parse_text((CAPTURES / capture).read_text())
    devices = [Device(index=g.index, kind="cuda", name=g.name, uuid=g.uuid) for g in snapshot.gpus]
    found = health.state(snapshot, devices, {d.uuid: H100 for d in devices})
    index = {d.uuid: d.index for d in devices}
    judged = sorted(f"{f.code}:{f.severity}:{index[f.gpu]}" for f in found)
    assert judged == sorted([*CAPTURE_FINDINGS[capture], *(f"NVLINK_UNREPORTED:warning:{i}" for i in range(8))])
    assert "not judged" in found[-1].message and found[-1].remediation is Remediation.CHECK_CONFIG


def test_a_healthy_hgx_node_from_nvidia_smi_has_no_failure():
    """The seven idle GPUs of an 8x H100 capture (the eighth is thermally slowed): a healthy node."""
    snapshot = smi.parse_text((CAPTURES / HGX_CAPTURES[1]).read_text())
    devices = [Device(index=g.index, kind="cuda", name=g.name, uuid=g.uuid) for g in snapshot.gpus if g.index != 2]
    found = health.state(snapshot, devices, {d.uuid: H100 for d in devices})
    assert len(devices) == 7 and {f.code for f in found} == {Code.NVLINK_UNREPORTED}
    assert all(f.severity is Severity.WARNING for f in found)


def test_links_nvml_answers_not_supported_for_are_unreported_not_down():
    """The simulated NVML as nvidia-ml-py answers for an H200 SXM in a VM: NotSupported at link 0."""
    nv = Simulated.from_file(REPO / "harness" / "nvml" / "scenarios" / "nvlink-unsupported.toml")
    nv.nvmlInit()
    snapshot = read.snapshot(nv, "sim:test")
    devices = [Device(index=g.index, kind="cuda", name=g.name, uuid=g.uuid) for g in snapshot.gpus]
    assert all(g.nvlinks == () for g in snapshot.gpus)
    found = health.state(snapshot, devices, {d.uuid: H100 for d in devices})
    assert [(f.code, f.severity) for f in found] == [(Code.NVLINK_UNREPORTED, Severity.WARNING)] * 2
    # The links that do report decide: one inactive among them is down, whatever the others say.
    gpu = snapshot.gpus[0]
    some = (NvLink(link=0, active=True), NvLink(link=1, active=False))
    partial = dataclasses.replace(snapshot, gpus=(dataclasses.replace(gpu, nvlinks=some),))
    down = health.state(partial, devices[:1], {gpu.uuid: H100})
    assert [(f.code, f.details["down"]) for f in down] == [(Code.NVLINK_DOWN, [1])]
    assert "1 of 18 NVLink links active" in down[0].message
    quiet = dataclasses.replace(snapshot, gpus=(dataclasses.replace(gpu, nvlinks=some[:1]),))
    assert [f.code for f in health.state(quiet, devices[:1], {gpu.uuid: H100})] == [Code.NVLINK_UNREPORTED]


def test_a_link_that_stops_reporting_during_a_test_did_not_go_down():
    device = Device(index=0, kind="cuda", name="x", uuid="GPU-x")
    links = tuple(NvLink(link=n, active=True, crc_errors=0) for n in range(2))
    unknown = tuple(NvLink(link=n) for n in range(2))
    gpu = GpuHealth(index=0, uuid="GPU-x", nvlinks=links)
    before = Snapshot(source="nvml", taken_at=dt.datetime.now(dt.UTC), gpus=(gpu,))
    after = dataclasses.replace(before, gpus=(dataclasses.replace(gpu, nvlinks=unknown),))
    assert health.delta(before, after, [device], {"GPU-x": H100}, test="t", during="matmul") == []
    inactive = (links[0], NvLink(link=1, active=False))
    down = dataclasses.replace(before, gpus=(dataclasses.replace(gpu, nvlinks=inactive),))
    assert [f.code for f in health.delta(before, down, [device], {}, test="t", during="matmul")] == [Code.NVLINK_DOWN]


def test_counters_nobody_reported_do_not_fire():
    """No retired-page counts at all is not zero pages (a threshold of 0 would fire on it), and a node whose
    GPUs cannot be read (no NVML, no nvidia-smi: an empty snapshot with a problem) has no GPU missing."""
    device = Device(index=0, kind="cuda", name="x", uuid="GPU-x")
    gpu = GpuHealth(index=0, uuid="GPU-x")
    snapshot = Snapshot(source="nvml", taken_at=dt.datetime.now(dt.UTC), gpus=(gpu,))
    strict = HealthLimits(retired_pages_max=0)
    assert health.state(snapshot, [device], {"GPU-x": strict}) == []
    counted = dataclasses.replace(gpu, retired=RetiredPages(single_bit=0))
    retired = health.state(dataclasses.replace(snapshot, gpus=(counted,)), [device], {"GPU-x": strict})
    assert [f.code for f in retired] == [Code.RETIRED_PAGES]
    unread = smi.read(runner=_no_nvidia_smi)
    assert unread.problem and not unread.gpus
    assert health.state(unread, [device], {}) == []
    assert health.delta(snapshot, unread, [device], {}, test="t", during="matmul") == []
    gone = Snapshot(source="nvml", taken_at=dt.datetime.now(dt.UTC), gpu_count=1)  # NVML answered: no GPU
    assert [f.code for f in health.delta(snapshot, gone, [device], {}, test="t", during="matmul")] == [Code.GPU_MISSING]


def _no_nvidia_smi(*args, **kwargs):
    raise FileNotFoundError("nvidia-smi")


def test_mig_slices_are_incomplete_never_missing():
    """A MIG slice, as torch lists it, carries its own UUID (never an NVML GPU's) and its GPU's PCI bus id: on
    the nvidia-smi MIG capture it is MIG_ENABLED, incomplete, check-config, and not GPU_MISSING, at the health
    test and after every burn."""
    snapshot = smi.parse_xml((CAPTURES / "netdata_a100-sxm4-40gb-mig.xml").read_text())
    [gpu] = snapshot.gpus
    assert gpu.mig is True and gpu.pci_bus_id == "00000000:00:04.0"
    name = "NVIDIA A100-SXM4-40GB MIG 1g.5gb"
    slices = [
        Device(index=0, kind="cuda", name=name, uuid="GPU-0f1e", pci_bus_id="0000:00:04.0"),
        Device(index=1, kind="cuda", name=name, uuid="MIG-2a3b"),
    ]
    found = health.state(snapshot, slices, {})
    assert [(f.code, f.severity, f.remediation) for f in found] == [
        (Code.MIG_ENABLED, Severity.INCOMPLETE, Remediation.CHECK_CONFIG)
    ] * 2
    assert "a MIG slice of GPU 0 (00000000:00:04.0): burn-in needs whole GPUs" in found[0].message
    assert health.delta(snapshot, snapshot, slices, {}, test="t", during="matmul") == []
    whole = Device(index=0, kind="cuda", name=gpu.name, uuid=gpu.uuid, pci_bus_id=gpu.pci_bus_id)
    [on] = health.state(snapshot, [whole], {whole.uuid: HealthLimits()})
    assert on.code is Code.MIG_ENABLED and "MIG mode is on: burn-in needs whole GPUs" in on.message
    off = dataclasses.replace(snapshot, gpus=(dataclasses.replace(gpu, mig=False),))
    whole_named = dataclasses.replace(slices[0], name=gpu.name)
    assert [f.code for f in health.state(off, [whole_named], {})] == [Code.GPU_MISSING]  # no MIG: it is missing
    # Torch's name for a slice says so, whatever NVML shows.
    assert [f.code for f in health.state(off, slices[:1], {})] == [Code.MIG_ENABLED]


def test_mig_named_in_cuda_visible_devices_is_incomplete(monkeypatch):
    """Where the snapshot cannot say (here: a scenario without MIG), MIG-... names in CUDA_VISIBLE_DEVICES do."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-5b2e9a0f-0000-4000-8000-000000000001")
    scenario = REPO / "harness" / "nvml" / "scenarios" / "healthy.toml"
    with Watch(f"sim:{scenario}", [CPU], load_dir(default_dir()), startup_s=60) as watch:
        found = watch.start()
        watch.finish()
    [mig] = [f for f in found if f.code is Code.MIG_ENABLED]
    assert mig.severity is Severity.INCOMPLETE and "MIG slices under test (MIG-5b2e" in mig.message


def test_a_node_in_mig_mode_is_incomplete_through_gpu_burnin_run(tmp_path):
    scenario = REPO / "harness" / "nvml" / "scenarios" / "mig-enabled.toml"
    command = [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "-m", "matmul or health"]
    command += ["--duration", "0.4", "--nvml", f"sim:{scenario}", "--results", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    doc = only_result(tmp_path)
    assert not [f for f in doc["findings"] if f["severity"] == "fail"]
    [mig] = [f for f in doc["findings"] if f["code"] == "MIG_ENABLED"]
    assert mig["gpu"] == doc["health"]["start"]["gpus"][1]["uuid"] and mig["severity"] == "incomplete"
    assert "GPU 1 (" in mig["message"] and "MIG mode is on: burn-in needs whole GPUs" in mig["message"]


def test_rules_without_data_do_not_fire():
    device = Device(index=0, kind="cuda", name="x", uuid="GPU-x")
    snapshot = smi.parse_xml((CAPTURES / "telegraf_a100-sxm4-v12.xml").read_text())
    gpu = dataclasses.replace(snapshot.gpus[0], uuid="GPU-x", mig=False)
    snapshot = dataclasses.replace(snapshot, gpus=(gpu,))
    assert health.state(snapshot, [device], {"GPU-x": HealthLimits()}) == []


def test_a_simulated_run_of_the_suite_passes_clean_and_fails_on_a_rising_counter(pytester, tmp_path):
    scenarios = REPO / "harness" / "nvml" / "scenarios"
    args = ["-p", "no:cacheprovider", "--pyargs", "gputests", "--gpu-device", "cpu", "--gpu-duration", "0.4"]
    clean = pytester.runpytest(
        *args,
        "-m",
        "matmul or health",
        "--gpu-nvml",
        f"sim:{scenarios / 'healthy.toml'}",
        "--gpu-results",
        str(tmp_path / "clean"),
    )
    assert clean.ret == 0, clean.stdout.str()
    doc = only_result(tmp_path / "clean")
    assert [f["code"] for f in doc["findings"] if f["severity"] != "info"] == ["SIMULATED"]
    assert doc["health"]["start"]["source"].startswith("sim:") and doc["telemetry"]
    rising = pytester.runpytest(
        *args,
        "-m",
        "matmul",
        "--gpu-nvml",
        f"sim:{scenarios / 'ecc-rises-during-matmul.toml'}",
        "--gpu-results",
        str(tmp_path / "rising"),
    )
    assert rising.ret == 1
    rising.stdout.fnmatch_lines(["*ECC_CORRECTED*50 corrected ECC errors during matmul, over the threshold of 10*"])
    assert only_result(tmp_path / "rising")["tests"][0]["outcome"] == "failed"


def test_a_gpu_lost_mid_burn_with_its_xid_79_through_gpu_burnin_run(tmp_path):
    """The GPU falls off the bus during the burn: NVML answers GPU_IS_LOST for it while the monitor samples,
    and its Xid 79 event names a GPU that no longer answers. The result names both; the other GPU is fine."""
    scenario = REPO / "harness" / "nvml" / "scenarios" / "gpu-lost-with-xid-79-during-matmul.toml"
    command = [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "-m", "matmul", "--duration", "1.5"]
    command += ["--nvml", f"sim:{scenario}", "--results", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    doc = only_result(tmp_path)
    uuids = [gpu["uuid"] for gpu in doc["health"]["start"]["gpus"]]
    failing = {(f["code"], f["gpu"]) for f in doc["findings"] if f["severity"] == "fail"}
    assert failing == {("GPU_MISSING", uuids[1]), ("XID", uuids[1])}, doc["findings"]
    [xid79] = [f for f in doc["findings"] if f["code"] == "XID"]
    assert xid79["details"]["xid"] == 79 and "reboot the node" in xid79["message"]
    assert doc["health"]["after:matmul"]["lost"] == [1]
    telemetry = next(iter(doc["telemetry"].values()))
    assert telemetry[uuids[0]]["samples"] >= 1  # the other GPU was sampled throughout
    assert not any(f["code"] == "HEALTH_UNAVAILABLE" for f in doc["findings"])


def test_a_monitor_that_dies_mid_run_leaves_the_run_incomplete_never_passed():
    """Health was known at the start; the monitor worker then dies (here: killed) during a burn, taking the
    burn's snapshots and the run's NVML Xid events with it. That is unknown health: incomplete, not a pass."""
    scenario = REPO / "harness" / "nvml" / "scenarios" / "healthy.toml"
    with Watch(f"sim:{scenario}", [CPU], load_dir(default_dir()), startup_s=60, sample_every_s=0.05) as watch:
        found = watch.start()
        watch.before("t::matmul", "matmul")
        os.kill(watch.monitor._group._workers[0].process.pid, signal.SIGKILL)  # the monitor this test started
        found += watch.after("t::matmul", "matmul")
        found += watch.finish()
    stopping = [(f.code, f.severity, f.test) for f in found if f.severity in (Severity.FAIL, Severity.INCOMPLETE)]
    unknown = (Code.HEALTH_UNAVAILABLE, Severity.INCOMPLETE)
    assert stopping == [(*unknown, "t::matmul"), (*unknown, "")], [f.message for f in found]
    assert all("NVML monitor" in f.message for f in found if f.code is Code.HEALTH_UNAVAILABLE)


def test_a_snapshot_nvml_fails_to_take_after_a_burn_leaves_it_unjudged_and_incomplete(tmp_path):
    """NVML answers an error other than GPU_IS_LOST for a GPU's identity after the burn, so the snapshot fails
    whole: the burn's health is unknown (incomplete), and no GPU is read as missing."""
    scenario = tmp_path / "uuid-fails.toml"
    changes = '[[changes]]\nafter = "matmul"\ngpu = 1\nset = { unsupported = ["uuid"] }\n'
    scenario.write_text(f"[[gpus]]\n[[gpus]]\n{changes}")
    with Watch(f"sim:{scenario}", [CPU], load_dir(default_dir()), startup_s=60, sample_every_s=0.05) as watch:
        found = watch.start()
        watch.before("t::matmul", "matmul")
        found += watch.after("t::matmul", "matmul")
        found += watch.finish()
    stopping = [(f.code, f.severity, f.test) for f in found if f.severity in (Severity.FAIL, Severity.INCOMPLETE)]
    assert stopping == [(Code.HEALTH_UNAVAILABLE, Severity.INCOMPLETE, "t::matmul")], [f.message for f in found]
    said = "NVML could not read the GPUs: what matmul did to the GPUs was not judged (NVML query failed"
    assert said in found[-1].message


def test_a_low_pcie_figure_is_told_the_gpus_pcie_link():
    watch, _ = rehearse(REPO / "harness" / "nvml" / "scenarios" / "healthy.toml")
    gpu = watch.latest.gpus[0] if watch.latest else None
    assert gpu is not None and gpu.pcie.gen is not None
    low = Finding(
        code=Code.LOW_THROUGHPUT,
        severity=Severity.FAIL,
        gpu=gpu.uuid,
        message="GPU 0: pcie.h2d.gbps = 12 GB/s, below the floor of 44",
        test="t::pcie",
        metric="pcie.h2d.gbps",
    )
    told = watch.explain(low)
    assert f"PCIe link gen {gpu.pcie.gen} x{gpu.pcie.width}" in told.message
    assert f"gen {gpu.pcie.gen_max} x{gpu.pcie.width_max}" in told.message
    other = dataclasses.replace(low, metric="matmul.bf16.tflops", test="t::matmul")
    assert "PCIe link" not in watch.explain(other).message


def _links(crc=0, replay=0, recovery=0, count=18):
    return tuple(
        NvLink(link=n, active=True, crc_errors=crc, replay_errors=replay, recovery_errors=recovery)
        for n in range(count)
    )


def _burn(before_links, after_links, seconds=60.0):
    """Eight GPUs of an HGX board, before and after a burn of `seconds`; GPU 3's links change."""
    devices = [Device(index=i, kind="cuda", name="NVIDIA H100 80GB HBM3", uuid=f"GPU-{i}") for i in range(8)]
    start = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    gpus = tuple(GpuHealth(index=i, uuid=f"GPU-{i}", nvlinks=before_links) for i in range(8))
    before = Snapshot(source="nvml", taken_at=start, gpus=gpus)
    changed = tuple(dataclasses.replace(g, nvlinks=after_links) if g.index == 3 else g for g in gpus)
    after = Snapshot(source="nvml", taken_at=start + dt.timedelta(seconds=seconds), gpus=changed)
    limits = {d.uuid: H100 for d in devices}
    return health.delta(before, after, devices, limits, test="t", during="matmul")


def test_nvlink_errors_are_judged_link_by_link_as_dcgm_judges_them():
    clean = _links()
    one_replay = clean[:5] + (dataclasses.replace(clean[5], replay_errors=1),) + clean[6:]
    assert _burn(clean, one_replay) == []  # one replay among 144 links: the link corrected itself
    many_replays = clean[:5] + (dataclasses.replace(clean[5], replay_errors=50),) + clean[6:]
    [replays] = _burn(clean, many_replays)
    assert (replays.code, replays.severity, replays.gpu) == (Code.NVLINK_ERRORS, Severity.WARNING, "GPU-3")
    recovered = clean[:7] + (dataclasses.replace(clean[7], recovery_errors=1),) + clean[8:]
    [recovery] = _burn(clean, recovered)
    assert (recovery.severity, recovery.remediation) == (Severity.FAIL, Remediation.RESET_GPU)
    assert "link 7: 1" in recovery.message
    # CRC errors count by their rate: 600 in a minute is 10 a second, noise; 60,000 is 1,000 a second.
    assert _burn(clean, _links(crc=600)) == []
    [crc] = _burn(clean, clean[:1] + (dataclasses.replace(clean[1], crc_errors=60_000),) + clean[2:])
    assert (crc.code, crc.severity, crc.remediation) == (
        Code.NVLINK_ERRORS,
        Severity.FAIL,
        Remediation.INSPECT_HARDWARE,
    )
