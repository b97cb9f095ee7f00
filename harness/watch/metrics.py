"""The watch's Prometheus textfile for node-exporter, rewritten whole after every poll.

Per GPU (labels node, gpu = the index, UUID: dcgm-exporter's names), next to the DCGM field each stands in for
(docs/watch.md has the table and example alerts):

    gpu_burnin_watch_xid_last                 DCGM_FI_DEV_XID_ERRORS (the last Xid's code)
    gpu_burnin_watch_xid_events_total{xid}    - (events by code since the watch started)
    gpu_burnin_watch_ecc_errors{type,counter} DCGM_FI_DEV_ECC_SBE_VOL_TOTAL, DCGM_FI_DEV_ECC_DBE_{VOL,AGG}_TOTAL
    gpu_burnin_watch_row_remap_rows{type}     DCGM_FI_DEV_{CORRECTABLE,UNCORRECTABLE}_REMAPPED_ROWS
    gpu_burnin_watch_row_remap_pending        DCGM_FI_DEV_ROW_REMAP_PENDING
    gpu_burnin_watch_row_remap_failure        DCGM_FI_DEV_ROW_REMAP_FAILURE
    gpu_burnin_watch_retired_pages{cause}     DCGM_FI_DEV_RETIRED_SBE, DCGM_FI_DEV_RETIRED_DBE (before Ampere)
    gpu_burnin_watch_retired_pages_pending    DCGM_FI_DEV_RETIRED_PENDING
    gpu_burnin_watch_clock_event_reasons      DCGM_FI_DEV_CLOCK_THROTTLE_REASONS (the bitmask)
    gpu_burnin_watch_throttle_ratio{reason}   - (share of the busy polls in --window; only while non-zero)
    gpu_burnin_watch_pcie_link_gen, _width    DCGM_FI_DEV_PCIE_LINK_GEN, DCGM_FI_DEV_PCIE_LINK_WIDTH
    gpu_burnin_watch_nvlink_errors{counter}   DCGM_FI_DEV_NVLINK_{CRC_FLIT,REPLAY,RECOVERY}_ERROR_COUNT_TOTAL
    gpu_burnin_watch_nvlink_links_active      -
    gpu_burnin_watch_temperature_celsius      DCGM_FI_DEV_GPU_TEMP (sensor=gpu), DCGM_FI_DEV_MEMORY_TEMP (memory)

and for the watch itself (label node): _last_poll_timestamp_seconds (its liveness: a stale file
shows a watch that stopped), the counters _polls_total, _nvml_errors_total, _api_errors_total,
_actions_total{action}, and _open_findings{UUID,code,severity}.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError
from harness.health import SLOWDOWNS

if TYPE_CHECKING:
    from harness.metrics import Counter, Gauge  # prometheus_client: imported only when the textfile is written
    from harness.watch.loop import Watch


def check(path: Path) -> None:
    """At start, before anything is read or written: the textfile can be kept at `path` (a regular file or
    none yet, in a directory this process may write, or may make). ConfigError naming the flag otherwise:
    found after acting on the node, it would be a warning at every poll and no metrics ever."""

    def fail(problem: str) -> ConfigError:
        return ConfigError(problem, file=path, option="--metrics-textfile")

    try:
        import harness.metrics  # noqa: F401 - prometheus_client: found missing now, not at every poll
    except ImportError as err:
        raise fail(f"needs prometheus_client, which cannot be imported: {err}") from err
    try:
        found = path.lstat()
    except (FileNotFoundError, NotADirectoryError):  # not there yet, or under a file (said below)
        found = None
    except OSError as err:
        raise fail(f"cannot be looked at: {err.strerror}") from err
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise fail("is a directory: give the file's path in it, such as DIR/gpu-burnin-watch.prom")
    if found is not None and not stat.S_ISREG(found.st_mode):  # a link, a device: never replaced by a file
        raise fail("is not a regular file: the textfile is replaced whole at every poll")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:  # the directories still to make
        parent = parent.parent
    if not parent.is_dir():
        raise fail(f"{parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise fail(f"the directory {parent} is not writable by this process")


def write(path: Path, watch: Watch, t: float) -> None:
    """Raises nothing a poll should stop for: an unwritable file is reported once per poll on stderr."""
    from harness.metrics import Textfile

    textfile = Textfile()
    node = watch.config.node

    def gauge(name: str, text: str, labels: list[str]) -> Gauge:
        return textfile.gauge(f"gpu_burnin_watch_{name}", text, ["node", *labels])

    def counter(name: str, text: str, labels: list[str]) -> Counter:
        return textfile.counter(f"gpu_burnin_watch_{name}", text, ["node", *labels])

    gauge("last_poll_timestamp_seconds", "When the watch last polled: its liveness", []).labels(node=node).set(
        watch.wall().timestamp()
    )
    counter("polls", "Polls since the watch started", []).labels(node=node).inc(watch.stats.polls)
    counter("nvml_errors", "Polls whose NVML queries failed", []).labels(node=node).inc(watch.stats.nvml_errors)
    counter("api_errors", "Node updates that failed (tried again)", []).labels(node=node).inc(watch.stats.api_errors)
    done = counter("actions", "Actions taken since the watch started", ["action"])
    for action, count in watch.stats.actions.items():
        done.labels(node=node, action=action).inc(count)
    open_findings = gauge(
        "open_findings", "Findings open on the node (acted on or pending)", ["UUID", "code", "severity"]
    )
    for track in watch.tracker.open():
        f = track.finding
        open_findings.labels(node=node, UUID=f.gpu, code=str(f.code), severity=str(f.severity)).set(1)
    _gpus(gauge, counter, watch, node, t)
    try:
        textfile.write(path)
    except ConfigError as error:
        print(f"gpu-burnin watch: warning: {error}", file=watch.log)


def _gpus(
    make: Callable[[str, str, list[str]], Gauge],
    count: Callable[[str, str, list[str]], Counter],
    watch: Watch,
    node: str,
    t: float,
) -> None:
    per_gpu = ["gpu", "UUID"]  # dcgm-exporter's labels: the index and the UUID, so joins need no label_replace
    xid_last = make("xid_last", "The code of the GPU's last Xid (as DCGM_FI_DEV_XID_ERRORS)", per_gpu)
    xid_events = count("xid_events", "Xid events by code since the watch started", [*per_gpu, "xid"])
    ecc = make(
        "ecc_errors",
        "ECC errors (volatile: since the driver loaded; aggregate: lifetime)",
        [*per_gpu, "type", "counter"],
    )
    remap_rows = make("row_remap_rows", "Rows remapped, for corrected and uncorrected errors", [*per_gpu, "type"])
    remap_pending = make("row_remap_pending", "1 while a row remap waits for a GPU reset", per_gpu)
    remap_failure = make("row_remap_failure", "1 once a row remap failed", per_gpu)
    retired = make("retired_pages", "Pages retired (before Ampere)", [*per_gpu, "cause"])
    retired_pending = make("retired_pages_pending", "1 while a page retirement waits for a reset", per_gpu)
    reasons = make("clock_event_reasons", "The active clock event (throttle) reasons, a bitmask", per_gpu)
    share = make("throttle_ratio", "Share of the busy polls in the window under each slowdown", [*per_gpu, "reason"])
    pcie_gen = make("pcie_link_gen", "The PCIe link's current generation", per_gpu)
    pcie_width = make("pcie_link_width", "The PCIe link's current width", per_gpu)
    nvlink_errors = make("nvlink_errors", "NVLink errors, all links together", [*per_gpu, "counter"])
    nvlink_active = make("nvlink_links_active", "NVLink links up", per_gpu)
    temperature = make("temperature_celsius", "Temperature", [*per_gpu, "sensor"])
    by_uuid = {d.uuid: d for d in watch.judge.devices}
    index = {uuid: str(d.index) for uuid, d in by_uuid.items()}
    snapshot = watch.snapshot
    summary = watch.judge.telemetry_summary(t)
    for uuid in by_uuid:
        gpu = snapshot.gpu(uuid) if snapshot is not None else None
        ids = {"node": node, "gpu": index[uuid], "UUID": uuid}
        if gpu is None:
            continue  # lost or no longer listed: open_findings{code="GPU_MISSING"} says so
        for kind in ("corrected", "uncorrected"):
            for counter in ("volatile", "aggregate"):
                if (kind, counter) == ("corrected", "aggregate"):
                    continue  # a lifetime of corrected errors is history; the volatile count and its rise judge
                value = getattr(gpu.ecc, f"{counter}_{kind}")
                if value is not None:
                    ecc.labels(**ids, type=kind, counter=counter).set(value)
            rows = getattr(gpu.remap, kind)
            if rows is not None:
                remap_rows.labels(**ids, type=kind).set(rows)
        _set(remap_pending, ids, gpu.remap.pending)
        _set(remap_failure, ids, gpu.remap.failure)
        if gpu.remap.corrected is None and gpu.remap.uncorrected is None:  # before Ampere: pages, not rows
            _set(retired.labels(**ids, cause="single_bit"), None, gpu.retired.single_bit)
            _set(retired.labels(**ids, cause="double_bit"), None, gpu.retired.double_bit)
            _set(retired_pending, ids, gpu.retired.pending)
        _set(reasons, ids, gpu.clock_events)
        _set(pcie_gen, ids, gpu.pcie.gen)
        _set(pcie_width, ids, gpu.pcie.width)
        _set(temperature.labels(**ids, sensor="gpu"), None, gpu.temperature_c)
        _set(temperature.labels(**ids, sensor="memory"), None, gpu.memory_temperature_c)
        if gpu.nvlinks:
            nvlink_active.labels(**ids).set(sum(1 for link in gpu.nvlinks if link.active))
            for counter in ("crc_errors", "replay_errors", "recovery_errors"):
                total = sum(getattr(link, counter) or 0 for link in gpu.nvlinks)
                nvlink_errors.labels(**ids, counter=counter.removesuffix("_errors")).set(total)
        for reason, value in summary.get(uuid, {}).get("clock_events", {}).items():
            if reason in SLOWDOWNS and value:  # a slowdown seen in the window: a series only while it lasts
                share.labels(**ids, reason=reason).set(value)
    for (gpu_id, code), events in watch.stats.xids.items():
        ids = {"node": node, "gpu": index.get(gpu_id, ""), "UUID": gpu_id}
        xid_events.labels(**ids, xid=str(code)).inc(events)
    for gpu_id, code in watch.stats.last_xid.items():
        xid_last.labels(node=node, gpu=index.get(gpu_id, ""), UUID=gpu_id).set(code)


def _set(target: Gauge, ids: dict[str, str] | None, value: float | bool | None) -> None:
    if value is None:
        return
    (target.labels(**ids) if ids is not None else target).set(float(value))
