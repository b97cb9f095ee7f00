"""Prometheus metrics for node-exporter's textfile collector, from a run's result document.

    gpu_burnin_verdict{node,status}          1 for the run's verdict, 0 for the others
    gpu_burnin_last_run_timestamp_seconds    when the run ended
    gpu_burnin_run_duration_seconds          how long it took
    gpu_burnin_findings{node,severity,code}  how many findings of each kind
    gpu_burnin_measurement{node,UUID,metric}  every figure (the median of its windows; the unit is the
                                             metric name's last part, matmul.bf16.tflops; UUID as
                                             dcgm-exporter's, or "node" for a node-wide figure)
    gpu_burnin_results_outbox{node}          results waiting to be sent to object storage

The file is written whole (harness.outputs: a temporary file renamed over it), so the
collector never reads half of one; a link is written through to its target, and a device
or a FIFO is written, never replaced. This module is the only one that
imports prometheus_client: the watch's textfile (harness/watch/metrics.py) is built
with its `Textfile`, the remediator's /metrics (harness/remediator/metrics.py) with its
`Exporter`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

from harness.errors import ConfigError
from harness.outputs import is_stream, write_output
from harness.results import ResultDocument
from harness.verdict import Status

__all__ = ["Counter", "Exporter", "Gauge", "Textfile", "write"]

disable_created_metrics()  # type: ignore[no-untyped-call]  # a `_created` series beside each counter says nothing a restart does not


class Textfile:
    """The gauges of one textfile, written whole."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

    def gauge(self, name: str, text: str, labels: list[str]) -> Gauge:
        return Gauge(name, text, labels, registry=self.registry)

    def counter(self, name: str, text: str, labels: list[str]) -> Counter:
        """A counter (exported as NAME_total): its value is set with `inc` from the count kept elsewhere."""
        return Counter(name, text, labels, registry=self.registry)

    def write(self, path: Path) -> Path:
        """Replace `path` with the gauges; ConfigError (naming the file) when it cannot be written."""
        try:
            if not is_stream(path):
                path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"cannot write the metrics file: {err.strerror}", file=path, option="--metrics-textfile"
            ) from err
        write_output(path, generate_latest(self.registry), option="--metrics-textfile")
        return path


class Exporter:
    """Gauges and counters served over HTTP, for Prometheus to scrape (any path answers the metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        disable_created_metrics()  # type: ignore[no-untyped-call]  # a `_created` series beside each counter says nothing a restart does not

    def gauge(self, name: str, text: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, text, list(labels), registry=self.registry)

    def counter(self, name: str, text: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, text, list(labels), registry=self.registry)

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, port: int, address: str = "0.0.0.0") -> tuple[int, Callable[[], None]]:
        """Serve /metrics on `port` (0: any free one) from a thread: the port, and the function that stops
        it. ConfigError when the port cannot be had (in use, or below 1024 without the right)."""
        try:
            server, thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as err:
            raise ConfigError(f"cannot serve metrics on port {port}: {err.strerror}", option="--metrics-port") from err

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        return int(server.server_address[1]), stop


def write(path: Path, doc: ResultDocument, *, outbox: int | None = None) -> Path:
    """The result's gauges, and (`outbox`) how many results wait to be sent (harness/outbox.py)."""
    textfile = Textfile()
    registry = textfile.registry
    node = doc.node
    verdict = Gauge(
        "gpu_burnin_verdict", "The last run's verdict: 1 for its status", ["node", "status"], registry=registry
    )
    for status in Status:
        verdict.labels(node=node, status=str(status)).set(1 if doc.verdict.status is status else 0)
    ended = doc.ended_at or doc.started_at
    Gauge("gpu_burnin_last_run_timestamp_seconds", "When the last run ended", ["node"], registry=registry).labels(
        node=node
    ).set(ended.timestamp())
    Gauge("gpu_burnin_run_duration_seconds", "How long the last run took", ["node"], registry=registry).labels(
        node=node
    ).set(max(0.0, (ended - doc.started_at).total_seconds()))
    findings = Gauge(
        "gpu_burnin_findings",
        "Findings of the last run, by severity and code",
        ["node", "severity", "code"],
        registry=registry,
    )
    for (severity, code), count in collections.Counter((str(f.severity), str(f.code)) for f in doc.findings).items():
        findings.labels(node=node, severity=severity, code=code).set(count)
    measurement = Gauge(
        "gpu_burnin_measurement",
        "Every figure of the last run (the median of its windows)",
        ["node", "UUID", "metric"],
        registry=registry,
    )
    for m in doc.measurements:
        measurement.labels(node=node, UUID=m.gpu, metric=m.metric).set(m.value)
    if outbox is not None:
        Gauge(
            "gpu_burnin_results_outbox",
            "Results on this node waiting to be sent to object storage (--results-url)",
            ["node"],
            registry=registry,
        ).labels(node=node).set(outbox)
    return textfile.write(path)
