"""Read result files into pandas tables.

    from reports import load_results
    found = load_results("gpu-burnin-results/")              # a directory (searched recursively)
    found = load_results("/data/results/**/*.json", "extra.json")  # globs, paths, strings
    found.measurements.groupby(["gpu_name", "metric"])["value"].median()

Files that cannot be read (another schema, a newer version, a torn copy, a missing
path) are returned in `errors` next to the tables, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from harness import results
from harness.errors import ConfigError
from harness.results import ResultDocument

RUN_COLUMNS = [
    "run_id",
    "node",
    "started_at",
    "ended_at",
    "state",
    "device_kind",
    "profile",
    "selection",
    "verdict",
    "reasons",
    "findings",
    "devices",
    "gpu_names",
    "driver",
    "torch",
    "file",
]
MEASUREMENT_COLUMNS = [
    "run_id",
    "node",
    "started_at",
    "profile",
    "verdict",
    "driver",
    "test",
    "gpu",
    "gpu_index",
    "gpu_name",
    "serial",
    "metric",
    "value",
    "unit",
    "direction",
    "samples",
    "low",
    "high",
]
FINDING_COLUMNS = [
    "run_id",
    "node",
    "started_at",
    "gpu",
    "gpu_index",
    "serial",
    "code",
    "severity",
    "remediation",
    "test",
    "metric",
    "message",
]
Source = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class Loaded:
    runs: pd.DataFrame
    """One row per result file."""
    measurements: pd.DataFrame
    """One row per measurement, with its run's node, time, profile, verdict and driver."""
    findings: pd.DataFrame
    """One row per finding."""
    errors: list[ConfigError]
    """Files that could not be read, each naming its file."""


def result_files(sources: Iterable[Source]) -> tuple[list[Path], list[ConfigError]]:
    """Every result file that `sources` name: files, directories (all *.json below) and globs."""
    found: list[Path] = []
    errors: list[ConfigError] = []
    for source in sources:
        text = os.fspath(source)
        path = Path(text)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.json") if p.is_file())
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                errors.append(ConfigError("no file matches this pattern", file=text))
            found += matches
        elif path.exists():
            found.append(path)
        else:
            errors.append(ConfigError("no such file or directory", file=text))
    return list(dict.fromkeys(found)), errors


def load_results(*sources: Source) -> Loaded:
    paths, errors = result_files(sources)
    runs, measurements, findings = [], [], []
    for path in paths:
        try:
            doc = results.load(path)
        except ConfigError as err:
            errors.append(err)
            continue
        runs.append(_run_row(doc, path))
        measurements += _measurement_rows(doc)
        findings += _finding_rows(doc)
    tables = (
        pd.DataFrame(runs, columns=RUN_COLUMNS),
        pd.DataFrame(measurements, columns=MEASUREMENT_COLUMNS),
        pd.DataFrame(findings, columns=FINDING_COLUMNS),
    )
    for frame in tables:
        for column in ("started_at", "ended_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True)
    return Loaded(*tables, errors=errors)


def _run_row(doc: ResultDocument, path: Path) -> dict[str, object]:
    return {
        "run_id": doc.run_id,
        "node": doc.node,
        "started_at": doc.started_at,
        "ended_at": doc.ended_at,
        "state": str(doc.state),
        "device_kind": doc.device_kind,
        "profile": doc.profile.name if doc.profile else "",
        "selection": doc.selection,
        "verdict": str(doc.verdict.status),
        "reasons": list(doc.verdict.reasons),
        "findings": sorted({str(f.code) for f in doc.findings}),
        "devices": len(doc.devices),
        "gpu_names": ", ".join(sorted({d.name for d in doc.devices})),
        "driver": doc.host.get("driver", ""),
        "torch": doc.host.get("torch", ""),
        "file": str(path),
    }


def _measurement_rows(doc: ResultDocument) -> list[dict[str, object]]:
    devices = {d.uuid: d for d in doc.devices}
    rows = []
    for m in doc.measurements:
        device = devices.get(m.gpu)
        rows.append(
            {
                "run_id": doc.run_id,
                "node": doc.node,
                "started_at": doc.started_at,
                "profile": doc.profile.name if doc.profile else "",
                "verdict": str(doc.verdict.status),
                "driver": doc.host.get("driver", ""),
                "test": m.test,
                "gpu": m.gpu,
                "gpu_index": device.index if device else None,
                "gpu_name": device.name if device else "",
                "serial": device.serial if device else "",
                "metric": m.metric,
                "value": m.value,
                "unit": m.unit,
                "direction": str(m.direction),
                "samples": m.samples,
                "low": m.low,
                "high": m.high,
            }
        )
    return rows


def _finding_rows(doc: ResultDocument) -> list[dict[str, object]]:
    devices = {d.uuid: d for d in doc.devices}
    rows = []
    for f in doc.findings:
        device = devices.get(f.gpu)
        rows.append(
            {
                "run_id": doc.run_id,
                "node": doc.node,
                "started_at": doc.started_at,
                "gpu": f.gpu,
                "gpu_index": device.index if device else None,
                "serial": device.serial if device else "",
                "code": str(f.code),
                "severity": str(f.severity),
                "remediation": str(f.remediation),
                "test": f.test,
                "metric": f.metric,
                "message": f.message,
            }
        )
    return rows
