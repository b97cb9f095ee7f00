"""Prometheus textfile metrics from a result document (harness/metrics.py)."""

import datetime as dt
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import metrics
from harness.errors import ConfigError
from harness.records import Code, Direction, Finding, Measurement, Severity
from harness.results import ResultDocument
from harness.verdict import Status, Verdict

STARTED = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def document() -> ResultDocument:
    return ResultDocument(
        run_id="r1",
        node="gpu-7",
        started_at=STARTED,
        ended_at=STARTED + dt.timedelta(seconds=90),
        device_kind="cuda",
        measurements=[
            Measurement(
                metric="matmul.bf16.tflops", gpu="GPU-a", value=664.9, unit="TFLOP/s", direction=Direction.HIGHER
            )
        ],
        findings=[
            Finding(code=Code.HANG, severity=Severity.FAIL, message="x", gpu="GPU-b"),
            Finding(code=Code.HANG, severity=Severity.FAIL, message="y", gpu="GPU-c"),
            Finding(code=Code.FAULT_INJECTED, severity=Severity.INCOMPLETE, message="z"),
        ],
        verdict=Verdict(status=Status.FAIL, reasons=("HANG: x",)),
    )


def test_the_file_says_the_verdict_the_findings_and_every_figure(tmp_path):
    path = metrics.write(tmp_path / "textfile" / "gpu-burnin.prom", document())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    assert samples[("gpu_burnin_verdict", (("node", "gpu-7"), ("status", "fail")))] == 1
    assert samples[("gpu_burnin_verdict", (("node", "gpu-7"), ("status", "pass")))] == 0
    assert samples[("gpu_burnin_run_duration_seconds", (("node", "gpu-7"),))] == 90
    assert samples[("gpu_burnin_last_run_timestamp_seconds", (("node", "gpu-7"),))] == STARTED.timestamp() + 90
    assert samples[("gpu_burnin_findings", (("code", "HANG"), ("node", "gpu-7"), ("severity", "fail")))] == 2
    figure = (("UUID", "GPU-a"), ("metric", "matmul.bf16.tflops"), ("node", "gpu-7"))
    assert samples[("gpu_burnin_measurement", figure)] == 664.9
    assert [p.name for p in path.parent.iterdir()] == ["gpu-burnin.prom"]  # no temporary left behind


def test_an_unwritable_place_is_a_config_error_naming_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write the metrics file"):
        metrics.write(blocker / "gpu-burnin.prom", document())


def test_a_linked_textfile_stays_a_link_and_its_target_is_written(tmp_path):
    """node-exporter's directory may hold a link to where the file really lives: the link is kept."""
    (tmp_path / "real").mkdir()
    link = tmp_path / "gpu-burnin.prom"
    link.symlink_to("real/gpu-burnin.prom")
    metrics.write(link, document())
    assert link.is_symlink()
    assert "gpu_burnin_verdict" in (tmp_path / "real" / "gpu-burnin.prom").read_text()


def test_a_textfile_on_a_device_is_written_through(tmp_path):
    link = tmp_path / "sink.prom"
    link.symlink_to(os.devnull)
    metrics.write(link, document())
    assert link.is_symlink()
