"""Read what a real GPU machine offers, for the tests still to be built: one JSON file.

    python3 bench/gpu_probe.py OUT.json

Not a test and not part of the suite: a survey run once per lent GPU, next to
bench/gpu_check.sh, so that later work (memory stress, NVML health, PCIe, NCCL,
the cheaper corruption check, fp8 accumulation) starts from figures read off a
real card instead of datasheets. Every section is timed and may fail on its own;
a failure is recorded as text and the next section runs. It never changes a
setting of the card. On a machine without CUDA it records that and exits 0.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

GIB = 1 << 30


def main() -> int:
    out_path = sys.argv[1] if len(sys.argv) > 1 else "gpu_probe.json"
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sections": {}}
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("environment", environment),
        ("nvml", nvml_health),
        ("nvml_events", nvml_events),
        ("numa", numa),
        ("usable", usable),
        ("copy_bandwidth", copy_bandwidth),
        ("check_cost", check_cost),
        ("fp8_accumulation", fp8_accumulation),
        ("memory_fill", memory_fill),
        ("nccl_single", nccl_single),
    ]
    for name, section in sections:
        began = time.monotonic()
        try:
            value = section()
            entry = {"ok": True, "value": value}
        except Exception as err:  # noqa: BLE001 - a survey: record and go on
            entry = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        entry["seconds"] = round(time.monotonic() - began, 3)
        report["sections"][name] = entry
        print(f"== {name} ({entry['seconds']} s)", flush=True)
        print(json.dumps(entry.get("value", entry.get("error")), indent=1, default=str)[:4000], flush=True)
        with open(out_path, "w") as handle:  # after every section: a killed probe keeps what it read
            json.dump(report, handle, indent=1, default=str)
    return 0


def environment() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["nccl"] = ".".join(str(p) for p in torch.cuda.nccl.version())
        info["devices"] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append(
                {
                    "name": p.name,
                    "sms": p.multi_processor_count,
                    "memory": p.total_memory,
                    "cc": f"{p.major}.{p.minor}",
                    "uuid": str(getattr(p, "uuid", "")),
                    "pci": [getattr(p, "pci_bus_id", None), getattr(p, "pci_device_id", None)],
                    "l2": getattr(p, "L2_cache_size", None),
                }
            )
    info["env"] = {k: v for k, v in os.environ.items() if k.startswith(("CUDA", "NCCL", "NVIDIA", "CUBLAS"))}
    return info


def nvml_health() -> dict[str, Any]:
    """Every health query the memory/health and watch issues plan to use, with the answer or the error."""
    import pynvml as n

    n.nvmlInit()
    try:
        result: dict[str, Any] = {
            "driver": _ask(n.nvmlSystemGetDriverVersion),
            "cuda_driver": _ask(n.nvmlSystemGetCudaDriverVersion_v2),
            "nvml_version": _ask(n.nvmlSystemGetNVMLVersion),
            "count": _ask(n.nvmlDeviceGetCount),
            "devices": [],
        }
        for i in range(n.nvmlDeviceGetCount()):
            h = n.nvmlDeviceGetHandleByIndex(i)
            d: dict[str, Any] = {
                "name": _ask(n.nvmlDeviceGetName, h),
                "uuid": _ask(n.nvmlDeviceGetUUID, h),
                "serial": _ask(n.nvmlDeviceGetSerial, h),
                "board_part": _ask(n.nvmlDeviceGetBoardPartNumber, h),
                "minor": _ask(n.nvmlDeviceGetMinorNumber, h),
                "pci": _ask(lambda h=h: _fields(n.nvmlDeviceGetPciInfo(h))),
                "memory": _ask(lambda h=h: _fields(n.nvmlDeviceGetMemoryInfo(h))),
                "persistence": _ask(n.nvmlDeviceGetPersistenceMode, h),
                "compute_mode": _ask(n.nvmlDeviceGetComputeMode, h),
                "mig_mode": _ask(n.nvmlDeviceGetMigMode, h),
                "ecc_mode": _ask(n.nvmlDeviceGetEccMode, h),
                "retired_pages_pending": _ask(n.nvmlDeviceGetRetiredPagesPendingStatus, h),
                "remapped_rows": _ask(n.nvmlDeviceGetRemappedRows, h),
                "row_remapper_histogram": _ask(lambda h=h: _fields(n.nvmlDeviceGetRowRemapperHistogram(h))),
                "clock_event_reasons": _ask(n.nvmlDeviceGetCurrentClocksEventReasons, h),
                "supported_clock_event_reasons": _ask(n.nvmlDeviceGetSupportedClocksEventReasons, h),
                "temperature_gpu": _ask(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU),
                "temperature_fields": _ask(
                    lambda h=h: [
                        _fields(v)
                        for v in n.nvmlDeviceGetFieldValues(
                            h, [n.NVML_FI_DEV_MEMORY_TEMP, n.NVML_FI_DEV_NVLINK_LINK_COUNT]
                        )
                    ]
                ),
                "slowdown_threshold": _ask(
                    n.nvmlDeviceGetTemperatureThreshold, h, n.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
                ),
                "shutdown_threshold": _ask(
                    n.nvmlDeviceGetTemperatureThreshold, h, n.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
                ),
                "power_mw": _ask(n.nvmlDeviceGetPowerUsage, h),
                "power_limit_mw": _ask(n.nvmlDeviceGetEnforcedPowerLimit, h),
                "energy_mj": _ask(n.nvmlDeviceGetTotalEnergyConsumption, h),
                "clocks_sm": _ask(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
                "clocks_sm_max": _ask(n.nvmlDeviceGetMaxClockInfo, h, n.NVML_CLOCK_SM),
                "clocks_mem": _ask(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM),
                "utilization": _ask(lambda h=h: _fields(n.nvmlDeviceGetUtilizationRates(h))),
                "pcie_gen": _ask(n.nvmlDeviceGetCurrPcieLinkGeneration, h),
                "pcie_gen_max": _ask(n.nvmlDeviceGetMaxPcieLinkGeneration, h),
                "pcie_gen_gpu_max": _ask(n.nvmlDeviceGetGpuMaxPcieLinkGeneration, h),
                "pcie_width": _ask(n.nvmlDeviceGetCurrPcieLinkWidth, h),
                "pcie_width_max": _ask(n.nvmlDeviceGetMaxPcieLinkWidth, h),
                "pcie_replay": _ask(n.nvmlDeviceGetPcieReplayCounter, h),
                "numa_node": _ask(lambda h=h: n.nvmlDeviceGetNumaNodeId(h)),
                "cpu_affinity": _ask(lambda h=h: list(n.nvmlDeviceGetCpuAffinity(h, 4))),
                "processes": _ask(lambda h=h: len(n.nvmlDeviceGetComputeRunningProcesses(h))),
            }
            ecc: dict[str, Any] = {}
            for err_name, err_type in (
                ("corrected", n.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                ("uncorrected", n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
            ):
                for counter_name, counter in (("volatile", n.NVML_VOLATILE_ECC), ("aggregate", n.NVML_AGGREGATE_ECC)):
                    key = f"{err_name}.{counter_name}"
                    ecc[key] = _ask(n.nvmlDeviceGetTotalEccErrors, h, err_type, counter)
                    for loc_name, loc in (
                        ("dram", n.NVML_MEMORY_LOCATION_DRAM),
                        ("sram", n.NVML_MEMORY_LOCATION_SRAM),
                        ("device_memory", n.NVML_MEMORY_LOCATION_DEVICE_MEMORY),
                        ("l2", n.NVML_MEMORY_LOCATION_L2_CACHE),
                    ):
                        ecc[f"{key}.{loc_name}"] = _ask(n.nvmlDeviceGetMemoryErrorCounter, h, err_type, counter, loc)
            d["ecc"] = ecc
            links = []
            for link in range(18):
                state = _ask(n.nvmlDeviceGetNvLinkState, h, link)
                if isinstance(state, dict) and link > 0:
                    links.append({"link": link, "state": state})
                    break
                entry = {"link": link, "state": state}
                if not isinstance(state, dict):
                    entry["version"] = _ask(n.nvmlDeviceGetNvLinkVersion, h, link)
                    entry["remote_pci"] = _ask(
                        lambda h=h, link=link: _fields(n.nvmlDeviceGetNvLinkRemotePciInfo(h, link))
                    )
                    for cname, c in (
                        ("crc_flit", n.NVML_NVLINK_ERROR_DL_CRC_FLIT),
                        ("replay", n.NVML_NVLINK_ERROR_DL_REPLAY),
                        ("recovery", n.NVML_NVLINK_ERROR_DL_RECOVERY),
                    ):
                        entry[cname] = _ask(n.nvmlDeviceGetNvLinkErrorCounter, h, link, c)
                links.append(entry)
            d["nvlink"] = links
            result["devices"].append(d)
        return result
    finally:
        n.nvmlShutdown()


def nvml_events() -> dict[str, Any]:
    """Whether Xid events can be listened to here (the passive watch depends on it)."""
    import pynvml as n

    n.nvmlInit()
    try:
        h = n.nvmlDeviceGetHandleByIndex(0)
        answer: dict[str, Any] = {"supported_types": _ask(n.nvmlDeviceGetSupportedEventTypes, h)}
        event_set = n.nvmlEventSetCreate()
        try:
            answer["register"] = _ask(
                n.nvmlDeviceRegisterEvents,
                h,
                n.nvmlEventTypeXidCriticalError | n.nvmlEventTypeDoubleBitEccError,
                event_set,
            )
            began = time.monotonic()
            answer["wait_200ms"] = _ask(lambda: _fields(n.nvmlEventSetWait_v2(event_set, 200)))
            answer["wait_seconds"] = round(time.monotonic() - began, 3)
        finally:
            n.nvmlEventSetFree(event_set)
        return answer
    finally:
        n.nvmlShutdown()


def numa() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nodes": sorted(os.listdir("/sys/devices/system/node")) if os.path.isdir("/sys/devices/system/node") else None
    }
    devices = {}
    for dev in sorted(os.listdir("/sys/bus/pci/devices")) if os.path.isdir("/sys/bus/pci/devices") else []:
        base = f"/sys/bus/pci/devices/{dev}"
        try:
            vendor = open(f"{base}/vendor").read().strip()
        except OSError:
            continue
        if vendor != "0x10de":
            continue
        entry = {}
        for key in (
            "numa_node",
            "local_cpulist",
            "current_link_speed",
            "current_link_width",
            "max_link_speed",
            "max_link_width",
            "class",
        ):
            try:
                entry[key] = open(f"{base}/{key}").read().strip()
            except OSError as err:
                entry[key] = f"unreadable: {err}"
        devices[dev] = entry
    info["nvidia_pci"] = devices
    info["cpus"] = os.cpu_count()
    info["affinity"] = len(os.sched_getaffinity(0))
    return info


def usable() -> dict[str, Any]:
    """After gpu_check.sh's hang step: does the GPU still compute, and correctly?"""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False}
    began = time.monotonic()
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float64)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.float64)
    c = (a @ b).cpu()
    ref = a.cpu() @ b.cpu()
    err = float((c - ref).norm() / ref.norm())
    return {
        "cuda": True,
        "rel_error_fp64": err,
        "seconds": time.monotonic() - began,
        "free_total": torch.cuda.mem_get_info(),
    }


def _time_cuda(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> list[float]:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return times


def copy_bandwidth() -> dict[str, Any]:
    """Device-to-device, and host-to-device / device-to-host from pinned and pageable memory."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False}
    result: dict[str, Any] = {}
    n = 4 * GIB
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    t = statistics.median(_time_cuda(lambda src=src, dst=dst: dst.copy_(src), 20))
    result["d2d_read_plus_write_gbps"] = 2 * n / t / 1e9
    src = dst = None
    torch.cuda.empty_cache()
    m = 1 * GIB
    for kind, pin in (("pinned", True), ("pageable", False)):
        host = torch.empty(m, dtype=torch.uint8, pin_memory=pin)
        host.fill_(7)
        dev = torch.empty(m, dtype=torch.uint8, device="cuda")
        h2d = _time_cuda(lambda host=host, dev=dev: dev.copy_(host, non_blocking=True), 10)
        d2h = _time_cuda(lambda host=host, dev=dev: host.copy_(dev, non_blocking=True), 10)
        result[f"h2d_{kind}_gbps"] = [round(m / x / 1e9, 2) for x in h2d]
        result[f"d2h_{kind}_gbps"] = [round(m / x / 1e9, 2) for x in d2h]
        if pin:
            both = torch.empty(m, dtype=torch.uint8, pin_memory=True)
            dev2 = torch.empty(m, dtype=torch.uint8, device="cuda")
            s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()

            def bidir(host=host, dev=dev, both=both, dev2=dev2, s1=s1, s2=s2) -> None:
                current = torch.cuda.current_stream()
                s1.wait_stream(current)
                s2.wait_stream(current)
                with torch.cuda.stream(s1):
                    dev.copy_(host, non_blocking=True)
                with torch.cuda.stream(s2):
                    both.copy_(dev2, non_blocking=True)
                current.wait_stream(s1)
                current.wait_stream(s2)

            result["bidir_pinned_total_gbps"] = [round(2 * m / x / 1e9, 2) for x in _time_cuda(bidir, 10)]
            del both, dev2
        del host, dev
    return result


def check_cost() -> dict[str, Any]:
    """What the corruption check costs a bf16 8192^3 burn, per variant (issue: duty cycle >= 97%)."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False}
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    size, ring = 8192, 4
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    ref = a @ b
    outs = [torch.empty_like(ref) for _ in range(ring)]
    acc = torch.zeros((), dtype=torch.int64, device="cuda")
    ref16, ref64 = ref.view(torch.int16), ref.view(torch.int64)
    cols = torch.arange(size, dtype=torch.int64, device="cuda")
    weights = (cols * 40503 + 1) % 32749 + 1

    def mm_only() -> None:
        for o in outs:
            torch.matmul(a, b, out=o)

    def ne16() -> None:  # today's check
        nonlocal acc
        for o in outs:
            torch.matmul(a, b, out=o)
            acc += torch.ne(o.view(torch.int16), ref16).sum()

    def ne64() -> None:  # compare 64-bit words: a quarter of the elements, same bytes read
        nonlocal acc
        for o in outs:
            torch.matmul(a, b, out=o)
            acc += torch.ne(o.view(torch.int64), ref64).sum()

    def ne64_any() -> None:
        nonlocal acc
        for o in outs:
            torch.matmul(a, b, out=o)
            acc += torch.ne(o.view(torch.int64), ref64).any()

    def equal_rows() -> None:  # row fingerprint by an int64 weighted sum (the cross-GPU one)
        nonlocal acc
        for o in outs:
            torch.matmul(a, b, out=o)
            acc += (o.view(torch.int16).to(torch.int64) * weights).sum()

    variants = {
        "mm_only": mm_only,
        "ne16_sum": ne16,
        "ne64_sum": ne64,
        "ne64_any": ne64_any,
        "fingerprint_rows": equal_rows,
    }
    flops = 2.0 * size**3 * ring
    result: dict[str, Any] = {"size": size, "ring": ring, "rounds": []}
    for _round in range(3):  # alternate variants, three rounds, so drift hits all alike
        row = {}
        for name, fn in variants.items():
            t = statistics.median(_time_cuda(fn, 15))
            row[name] = round(flops / t / 1e12, 1)
        result["rounds"].append(row)
    base = statistics.median(r["mm_only"] for r in result["rounds"])
    result["duty_vs_mm_only"] = {
        name: round(statistics.median(r[name] for r in result["rounds"]) / base, 4) for name in variants
    }
    return result


def fp8_accumulation() -> dict[str, Any]:
    """fp8 e4m3 _scaled_mm with slow and fast accumulation: TFLOP/s and bitwise reproducibility."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False}
    torch.use_deterministic_algorithms(True)
    size = 8192
    a = torch.randn(size, size, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(size, size, device="cuda").t().contiguous().to(torch.float8_e4m3fn).t()
    one = torch.ones((), dtype=torch.float32, device="cuda")
    result: dict[str, Any] = {}
    outputs = {}
    for fast in (False, True, False, True):
        out = torch.empty(size, size, dtype=torch.bfloat16, device="cuda")

        def mm(out=out, fast=fast) -> None:
            torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, out=out, use_fast_accum=fast)

        times = _time_cuda(mm, 30)
        key = "fast" if fast else "slow"
        result.setdefault(f"{key}_tflops", []).append(round(2.0 * size**3 / statistics.median(times) / 1e12, 1))
        first = out.clone()
        mm()
        torch.cuda.synchronize()
        result.setdefault(f"{key}_repeat_bitwise_equal", []).append(
            bool(torch.equal(first.view(torch.int16), out.view(torch.int16)))
        )
        outputs.setdefault(key, first)
    diff = (outputs["fast"].float() - outputs["slow"].float()).norm() / outputs["slow"].float().norm()
    result["fast_vs_slow_rel_diff"] = float(diff)
    return result


def memory_fill() -> dict[str, Any]:
    """Allocate 90% of free memory in 2 GiB chunks; fill and verify one pattern; time each."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False}
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    target = int(free * 0.9)
    chunk = 2 * GIB
    began = time.monotonic()
    chunks = []
    while sum(c.numel() * 8 for c in chunks) + chunk <= target:
        chunks.append(torch.empty(chunk // 8, dtype=torch.int64, device="cuda"))
    alloc_s = time.monotonic() - began
    held = sum(c.numel() * 8 for c in chunks)
    torch.cuda.synchronize()
    start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    value = 0x5555555555555555
    start.record()
    for c in chunks:
        c.fill_(value)
    mid.record()
    bad = torch.zeros((), dtype=torch.int64, device="cuda")
    for c in chunks:
        bad += torch.ne(c, value).sum()
    end.record()
    end.synchronize()
    fill_s, verify_s = start.elapsed_time(mid) / 1000, mid.elapsed_time(end) / 1000
    bad_words = int(bad.item())
    del chunks
    torch.cuda.empty_cache()
    return {
        "free": free,
        "total": total,
        "held": held,
        "coverage_of_total": held / total,
        "alloc_s": alloc_s,
        "fill_gbps": held / fill_s / 1e9,
        "verify_gbps": held / verify_s / 1e9,
        "bad_words": bad_words,
    }


NCCL_CHILD = r"""
import os, sys, time, statistics, json, torch, torch.distributed as dist
os.environ.setdefault("NCCL_DEBUG", "VERSION")
store = dist.HashStore()
dist.init_process_group("nccl", store=store, rank=0, world_size=1, device_id=torch.device("cuda", 0))
res = {"backend": dist.get_backend()}
for mib in (8, 256, 2048):
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device="cuda")
    for _ in range(3): dist.all_reduce(x)
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); dist.all_reduce(x); e.record(); e.synchronize(); ts.append(s.elapsed_time(e) / 1000)
    res[f"{mib}MiB_algbw_gbps"] = mib * 2**20 / statistics.median(ts) / 1e9
    res[f"{mib}MiB_exact"] = bool((x == 1.0).all().item())
dist.destroy_process_group()
print("RESULT " + json.dumps(res))
"""


def nccl_single() -> dict[str, Any]:
    """torch.distributed with NCCL at world size 1, in a child with a time limit."""
    proc = subprocess.run([sys.executable, "-c", NCCL_CHILD], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return {
        "exit": proc.returncode,
        "result": json.loads(lines[-1][7:]) if lines else None,
        "stderr_tail": proc.stderr[-1500:],
        "stdout_tail": proc.stdout[-800:],
    }


def _ask(call: Callable[..., Any], *args: Any) -> Any:
    try:
        value = call(*args)
    except Exception as err:  # noqa: BLE001 - record what this driver does not support
        return {"error": f"{type(err).__name__}: {err}"}
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_fields(v) for v in value]
    return value


def _fields(value: Any) -> Any:
    if hasattr(value, "_fields_"):
        return {name: _fields(getattr(value, name)) for name, *_ in value._fields_}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if hasattr(value, "__len__") and not isinstance(value, (str, dict)) and hasattr(value, "__getitem__"):
        try:
            return [_fields(v) for v in value]
        except Exception:  # noqa: BLE001
            return str(value)
    return value


if __name__ == "__main__":
    sys.exit(main())
