"""The review's files: the tidy table as CSV or Parquet, the findings as JSON, the page as HTML.

Each is written to a temporary name beside its target and renamed over it, so a reader (or an
alert that polls the JSON) never sees half a file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import ConfigError
from reports.review import Review


def check_writable(*paths: Path | None) -> None:
    """Refuse, before any work, outputs whose directory is missing or not writable (ConfigError)."""
    for path in paths:
        if path is None:
            continue
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise ConfigError("its directory does not exist", file=path)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError("its directory is not writable", file=path)
        if path.is_dir():
            raise ConfigError("is a directory; expected a file name", file=path)


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


def write_json(path: Path, review: Review) -> None:
    text = json.dumps(_finite(findings(review)), indent=1, allow_nan=False, default=str) + "\n"
    _atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_html(path: Path, page: str) -> None:
    _atomic(path, lambda temporary: temporary.write_text(page, encoding="utf-8"))


def write_csv(path: Path, measurements: pd.DataFrame) -> None:
    _atomic(path, lambda temporary: measurements.to_csv(temporary, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ"))


def write_parquet(path: Path, measurements: pd.DataFrame) -> None:
    _atomic(path, lambda temporary: measurements.to_parquet(temporary, index=False, engine="pyarrow"))


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


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    handle, name = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
