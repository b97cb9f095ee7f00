"""The review's files: the tidy table as CSV or Parquet, the findings as JSON, the page as HTML.

Each is written by `harness.outputs`: a regular file to a temporary name beside it and renamed
over it, so a reader (or an alert that polls the JSON) never sees half a file; a device, a FIFO
or `-` (standard output) written through; a link's target, not the link.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from harness.outputs import write_output
from reports.review import Review


def findings(review: Review) -> dict[str, Any]:
    """Everything the page lists, as JSON-ready data, for scripts and alerting."""
    coverage = review.coverage
    return {
        "schema": "gpu-burnin/report",
        "schema_version": 1,
        "summary": review.summary(),
        "settings": {
            "stale_days": coverage.window.total_seconds() / 86400,
            "outlier_z": review.settings.limits.outlier_z,
            "fell_share": review.settings.limits.fell_share,
            "rule": review.settings.rule.describe(),
        },
        "broken_files": [{"file": e.file, "field": e.field, "problem": e.problem} for e in review.loaded.errors],
        "failures": _records(review.failures),
        "outliers": _records(review.outliers),
        "fell": _records(review.fell),
        "stale_nodes": _records(coverage.stale),
        "unfinished_preflights": _records(coverage.unfinished),
        "coverage": {
            "nodes": _records(coverage.nodes),
            "periodic_nodes": coverage.periodic_nodes,
            "cycle_days": coverage.cycle_days,
            "interval_days": coverage.interval_days,
        },
        "proposals": [
            {
                "model": p.current.model,
                "baseline": str(p.current.path),
                "gpus": p.gpus,
                "healthy_runs": p.healthy_runs,
                "changes": [dataclasses.asdict(c) | {"changed": c.changed} for c in p.changes],
                "unjudged": p.unjudged,
                "proposed_file": p.text(),
            }
            for p in review.proposals
        ],
        "sensitivity": _records(review.sensitivity),
        "fleet": _records(review.fleet),
        "verdicts_by_day": _records(review.verdicts),
        "uncovered_models": sorted(set(review.uncovered)),
    }


def write_json(path: Path, review: Review, option: str = "--json") -> None:
    text = json.dumps(_finite(findings(review)), indent=1, allow_nan=False, default=str) + "\n"
    write_output(path, text, option=option)


def write_html(path: Path, page: str, option: str = "--output") -> None:
    write_output(path, page, option=option)


def write_csv(path: Path, measurements: pd.DataFrame, option: str = "--csv") -> None:
    def write(out: BinaryIO) -> None:
        measurements.to_csv(out, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ", encoding="utf-8")

    write_output(path, write, option=option)


def write_parquet(path: Path, measurements: pd.DataFrame, option: str = "--parquet") -> None:
    write_output(path, lambda out: measurements.to_parquet(out, index=False, engine="pyarrow"), option=option)


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers, and a reader must not choke on one."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain JSON values: times in ISO 8601 (UTC), missing values as null."""
    if frame.empty:
        return []
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso", date_unit="ms"))
    return records
