"""Read result files into pandas tables.

    from reports import load_results
    found = load_results("gpu-burnin-results/")              # a directory (searched recursively)
    found = load_results("/data/results/**/*.json", "extra.json")  # globs, paths, strings
    found.measurements.groupby(["gpu_name", "metric"])["value"].median()

Files that cannot be read (another schema, a newer version, a torn copy, a missing
path, a measurement whose value is not a finite number) are returned in `errors`
next to the tables, never silently dropped, and none of their rows is kept.

A fleet's files hold about a million measurements, so they are read column by
column: every part of a document but its measurements is parsed into the typed
`ResultDocument` (as `harness.results.load` does), and the measurements, the bulk,
are checked per file as columns and go into one table whose repeated strings are
pandas categoricals.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import operator
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import results
from harness.errors import ConfigError
from harness.records import Direction
from harness.results import ResultDocument

RUN_COLUMNS = [
    "run_id",
    "node",
    "started_at",
    "ended_at",
    "state",
    "entrypoint",
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
    "state",
    "profile",
    "verdict",
    "driver",
    "device_kind",
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
    "peer",
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
Progress = Callable[[int, int], None]
"""Called after each file with (files read, files in all)."""

_RUN_LEVEL = ("run_id", "node", "started_at", "state", "profile", "verdict", "driver", "device_kind")
_DEVICE_LEVEL = ("gpu_index", "gpu_name", "serial")
_REQUIRED = operator.itemgetter("metric", "gpu", "value", "unit", "direction")
_DIRECTIONS = {str(d) for d in Direction}
_NUMBERS = {int, float}


@dataclasses.dataclass(frozen=True)
class Loaded:
    runs: pd.DataFrame
    """One row per result file."""
    measurements: pd.DataFrame
    """One row per measurement, with its run's node, time, state, profile, verdict and driver."""
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


def load_results(*sources: Source, progress: Progress | None = None) -> Loaded:
    paths, errors = result_files(sources)
    table = _Columns()
    runs, findings = [], []
    copies: list[tuple[Path, ResultDocument, list[dict[str, Any]]]] = []
    seen: set[tuple[str, str]] = set()

    def take(path: Path, doc: ResultDocument, measurements: list[dict[str, Any]]) -> None:
        try:
            table.add(doc, measurements, path)
        except ConfigError as err:
            errors.append(err)
            return
        seen.add((doc.node, doc.run_id))
        runs.append(_run_row(doc, path))
        findings.extend(_finding_rows(doc))

    for done, path in enumerate(paths, 1):
        try:
            found, job = read(path), is_job(path)
        except ConfigError as err:
            errors.append(err)
            found, job = [], False
        for doc, measurements in found:
            if job:
                copies.append((path, doc, measurements))
            else:
                take(path, doc, measurements)
        if progress is not None:
            progress(done, len(paths))
    for path, doc, measurements in copies:  # a job's copy of a node's result, unless its own file was read
        if (doc.node, doc.run_id) not in seen:
            take(path, doc, measurements)
    tables = (
        pd.DataFrame(runs, columns=RUN_COLUMNS),
        table.frame(runs),
        pd.DataFrame(findings, columns=FINDING_COLUMNS),
    )
    for frame in tables:
        for column in ("started_at", "ended_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True)
    return Loaded(*tables, errors=errors)


def read(path: Path) -> list[tuple[ResultDocument, list[dict[str, Any]]]]:
    """A result file as its typed document without measurements, and its raw measurements; a
    job's file (MPI, docs/results.md) as every node's result it holds.

    Refuses what `harness.results.load` refuses, and also measurements whose fields have the
    wrong type or whose value is not a finite number (a report must not average a string)."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=path) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"not a JSON document: {err}", file=path) from err
    if isinstance(data, dict) and data.get("schema") == results.JOB_SCHEMA:
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise ConfigError("expected a list", file=path, field="nodes")
        return [_document(n["result"], path) for n in nodes if isinstance(n, dict) and n.get("result")]
    return [_document(data, path)]


def is_job(path: Path) -> bool:
    """Whether a result file is an MPI job's (every node's result in one file)."""
    return path.parent.name == "jobs"


def _document(data: Any, path: Path) -> tuple[ResultDocument, list[dict[str, Any]]]:
    if not isinstance(data, dict) or data.get("schema") != results.SCHEMA:
        raise ConfigError(f"not a gpu-burnin result (schema is not {results.SCHEMA!r})", file=path, field="schema")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > results.SCHEMA_VERSION or version < 1:
        raise ConfigError(
            f"is {version!r}; this gpu-burnin reads versions 1 to {results.SCHEMA_VERSION}",
            file=path,
            field="schema_version",
        )
    measurements = data.get("measurements", [])
    if not isinstance(measurements, list):
        raise ConfigError("expected a list", file=path, field="measurements")
    try:
        doc = ResultDocument.from_dict({**data, "measurements": []})
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        field = err.field if isinstance(err, ConfigError) else None
        raise ConfigError(f"malformed result: {type(err).__name__}: {err}", file=path, field=field) from err
    return doc, measurements


@dataclasses.dataclass
class _Columns:
    """The measurements of many files as growing columns; `frame` makes the table."""

    counts: list[int] = dataclasses.field(default_factory=list)
    device_rows: list[int] = dataclasses.field(default_factory=list)
    devices: list[tuple[int | None, str, str]] = dataclasses.field(default_factory=lambda: [(None, "", "")])
    """Row 0 stands for a measurement of no listed device (the node, or an unknown UUID)."""
    columns: dict[str, list[Any]] = dataclasses.field(
        default_factory=lambda: (
            {k: [] for k in ("metric", "gpu", "value", "unit", "direction")}
            | {k: [] for k in ("test", "samples", "low", "high", "peer")}
        )
    )

    def add(self, doc: ResultDocument, measurements: list[dict[str, Any]], path: Path) -> None:
        """Check one file's measurements as columns, then keep them; a bad one keeps nothing of the file."""
        try:
            required: list[tuple[Any, ...]] = list(zip(*map(_REQUIRED, measurements), strict=True)) or [()] * 5
            optional = (
                [m.get("test", "") for m in measurements],
                [m.get("samples", 1) for m in measurements],
                [m.get("low") for m in measurements],
                [m.get("high") for m in measurements],
                [m.get("peer", "") for m in measurements],
            )
        except (KeyError, TypeError, AttributeError):
            raise _first_bad(measurements, path) from None
        metric, gpu, value, unit, direction = required
        test, samples, low, high, peer = optional
        strings_ok = all({type(x) for x in column} <= {str} for column in (metric, gpu, unit, test, peer))
        numbers_ok = {type(v) for v in value} <= _NUMBERS and {type(v) for v in samples} <= {int}
        bounds_ok = all({type(v) for v in column} <= _NUMBERS | {type(None)} for column in (low, high))
        if not (strings_ok and numbers_ok and bounds_ok and set(direction) <= _DIRECTIONS) or not all(
            math.isfinite(v) for v in value
        ):
            raise _first_bad(measurements, path)
        first = len(self.devices)
        self.devices += [(d.index, d.name, d.serial) for d in doc.devices]
        where = {d.uuid: first + i for i, d in enumerate(doc.devices)}
        self.device_rows += [where.get(g, 0) for g in gpu]
        for name, column in zip(self.columns, (*required, *optional), strict=True):
            self.columns[name] += column
        self.counts.append(len(measurements))

    def frame(self, runs: list[dict[str, Any]]) -> pd.DataFrame:
        position = np.repeat(np.arange(len(runs)), self.counts)
        device = np.asarray(self.device_rows, dtype=np.int64)
        data: dict[str, Any] = {}
        for name in _RUN_LEVEL:
            level = [run[name] for run in runs]
            if name == "started_at":
                data[name] = pd.DatetimeIndex(pd.to_datetime(level, utc=True)).take(position)
            else:
                data[name] = _taken(level, position)
        index, gpu_name, serial = zip(*self.devices, strict=True)
        data["gpu_index"] = pd.array(np.asarray(index, dtype=object)[device], dtype="Int64")
        data["gpu_name"] = _taken(list(gpu_name), device)
        data["serial"] = _taken(list(serial), device)
        for name, values in self.columns.items():
            if name == "value":
                data[name] = np.asarray(values, dtype=np.float64)
            elif name in ("low", "high"):
                data[name] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
            elif name == "samples":
                data[name] = np.asarray(values, dtype=np.int64)
            else:
                data[name] = _categorical(values)
        return pd.DataFrame(data, columns=MEASUREMENT_COLUMNS)


def _categorical(values: list[Any]) -> pd.Categorical:
    """Strings as codes into their distinct values (hashing Python objects beats converting each string)."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    return pd.Categorical.from_codes(codes, categories=uniques)


def _taken(level: list[Any], rows: np.ndarray) -> pd.Categorical:
    """A categorical column of `level` (one value per run or device) repeated by `rows`."""
    categorical = _categorical(level)
    return pd.Categorical.from_codes(categorical.codes[rows], dtype=categorical.dtype)


def _first_bad(measurements: list[Any], path: Path) -> ConfigError:
    """The first measurement field that is missing or of the wrong type, as an error naming it."""
    kinds: dict[str, tuple[type, ...]] = {
        "metric": (str,),
        "gpu": (str,),
        "value": (int, float),
        "unit": (str,),
        "direction": (str,),
    }
    optional: dict[str, tuple[type, ...]] = {
        "test": (str,),
        "samples": (int,),
        "low": (int, float, type(None)),
        "high": (int, float, type(None)),
        "peer": (str,),
    }
    for i, m in enumerate(measurements):
        where = f"measurements[{i}]"
        if not isinstance(m, dict):
            return ConfigError("expected a table of metric, gpu, value, unit, direction", file=path, field=where)
        for key, allowed in kinds.items() | optional.items():
            if key not in m:
                if key in kinds:
                    return ConfigError("missing", file=path, field=f"{where}.{key}")
                continue
            v = m[key]
            if type(v) not in allowed or (key == "value" and not math.isfinite(v)):
                return ConfigError(f"unexpected value {v!r}", file=path, field=f"{where}.{key}")
        if m["direction"] not in _DIRECTIONS:
            return ConfigError(
                f"is {m['direction']!r}; expected 'higher' or 'lower'", file=path, field=f"{where}.direction"
            )
    return ConfigError("malformed measurements", file=path, field="measurements")


def _run_row(doc: ResultDocument, path: Path) -> dict[str, object]:
    return {
        "run_id": doc.run_id,
        "node": doc.node,
        "started_at": doc.started_at,
        "ended_at": doc.ended_at,
        "state": str(doc.state),
        "entrypoint": doc.entrypoint,
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
