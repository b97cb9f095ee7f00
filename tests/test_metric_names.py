"""Every metric gpu-burnin exports follows Prometheus's conventions: `_total` on counters only (and every
counter a real one), ratios end in `_ratio`, no unit in a label, the GPU labelled `UUID` (and `gpu`, the index)
as dcgm-exporter labels it, so joins need no label_replace; and one 8-GPU node's watch exports few series."""

from __future__ import annotations

import datetime as dt

from prometheus_client.parser import text_string_to_metric_families

from harness import metrics
from harness.records import Direction, Measurement
from harness.remediator.metrics import Metrics as RemediatorMetrics
from harness.results import ResultDocument
from harness.verdict import Status, Verdict
from tests.kube_fake import FakeApiServer
from tests.watch_fleet import Nodes

EIGHT_GPUS = (
    """
description = "An 8-GPU node at work, an Xid burst on one GPU"
expect = []
"""
    + "".join('[[gpus]]\nclock_events = ["sw_power_cap"]\n' for _ in range(8))
    + """
[[changes]]
at = "10m"
gpu = 3
set = { clock_events = ["sw_power_cap", "hw_power_brake_slowdown"] }
[[xids]]
gpu = 5
xid = 48
at = "5m"
count = 3
[[xids]]
gpu = 5
xid = 13
at = "6m"
"""
)
SERIES_MAX = 150


def watch_text(tmp_path) -> str:
    scenario = tmp_path / "eight.toml"
    scenario.write_text(EIGHT_GPUS)
    prom = tmp_path / "watch.prom"
    with FakeApiServer() as server:
        fleet = Nodes(server, tmp_path, metrics_textfile=prom)
        fleet.add("n1", scenario)
        fleet.run(1800)
    return prom.read_text()


def run_text(tmp_path) -> str:
    started = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    doc = ResultDocument(
        run_id="r1",
        node="n1",
        started_at=started,
        ended_at=started,
        device_kind="cuda",
        measurements=[
            Measurement(metric="matmul.bf16.tflops", gpu="GPU-a", value=1.0, unit="TFLOP/s", direction=Direction.HIGHER)
        ],
        verdict=Verdict(status=Status.PASS),
    )
    return metrics.write(tmp_path / "run.prom", doc).read_text()


def remediator_text() -> str:
    found = RemediatorMetrics()
    return found.exporter.text()


def families(text: str):
    return list(text_string_to_metric_families(text))


def test_one_eight_gpu_node_exports_fewer_than_150_series_from_its_watch(tmp_path):
    series = [s for family in families(watch_text(tmp_path)) for s in family.samples]
    assert len({s.labels["UUID"] for s in series if "UUID" in s.labels}) == 8
    assert len(series) < SERIES_MAX, len(series)


def test_metric_names_and_labels_follow_the_conventions(tmp_path):
    every = families(watch_text(tmp_path)) + families(run_text(tmp_path)) + families(remediator_text())
    assert {f.name for f in every} >= {"gpu_burnin_watch_polls", "gpu_burnin_remediator_passes", "gpu_burnin_verdict"}
    problems = []
    for family in every:
        for sample in family.samples:
            if sample.name.endswith("_total") != (family.type == "counter"):
                problems.append(f"{sample.name}: _total goes with counters only ({family.type})")
            if sample.name.endswith("_created"):
                problems.append(f"{sample.name}: no _created series")
            if ("share" in sample.name or "fraction" in sample.name) and not sample.name.endswith("_ratio"):
                problems.append(f"{sample.name}: a ratio ends in _ratio")
            for label in sample.labels:
                if label in ("unit", "units") or label.endswith(("_seconds", "_bytes", "_celsius")):
                    problems.append(f"{sample.name}: a unit in the label {label}")
                if label in ("uuid", "gpu_uuid"):
                    problems.append(f"{sample.name}: the GPU's label is UUID, as dcgm-exporter's")
            if family.name.startswith("gpu_burnin_watch_") and family.name.endswith("_up"):
                problems.append(f"{sample.name}: liveness is the last-poll timestamp")
    assert problems == []
    # What counts events since the start is a real counter.
    counters = {f.name for f in every if f.type == "counter"}
    assert {
        "gpu_burnin_watch_polls",
        "gpu_burnin_watch_nvml_errors",
        "gpu_burnin_watch_api_errors",
        "gpu_burnin_watch_xid_events",
        "gpu_burnin_remediator_take_outs",
    } <= counters
