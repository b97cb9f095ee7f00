"""Read result files into pandas tables.

    from reports import load_results
    found = load_results("gpu-burnin-results/")              # a directory (searched recursively)
    found = load_results("/data/results/**/*.json", "extra.json")  # globs, paths, strings
    found = load_results("s3://fleet-results/burnin")             # a store's objects, as a directory
    found.measurements.groupby(["gpu_name", "metric"])["value"].median()

Files that cannot be read (another schema, a newer version, a torn copy, a missing
path, a measurement whose value is not a finite number, a field of the wrong type, a
time outside 2000 to 2100, NaN or Infinity anywhere, nesting too deep for a result, a
file over MAX_BYTES, anything but a regular file) are returned in `errors` next to the
tables, never silently dropped, and none of their rows is kept. A FIFO or a device is
never opened for reading (no read can block or run for ever). The same run (node and
run id) in several files counts once: a finished copy before an unfinished one, a
node's own file before an MPI job's copy, else the first read; the others are listed
in `duplicates`.

A fleet's files hold about a million measurements, so they are read column by
column: every part of a document but its measurements is parsed into the typed
`ResultDocument` (as `harness.results.load` does), and the measurements, the bulk,
are checked per file as columns and go into one table whose repeated strings are
pandas categoricals.

A URL (s3://, gs://, az://: harness/store.py) is read as a directory is: every *.json object
under it, or a glob's matches; the objects are listed and fetched by a pool of threads (the time
is the network's), and each is checked exactly as a file is (reports/resultfile.py: the same size
limit, the same types), so a torn or foreign object is listed in `errors` and skipped.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import operator
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.errors import ConfigError
from harness.records import Direction
from harness.results import ResultDocument, RunState
from reports.resultfile import is_job, short
from reports.sources import contents, result_files

if TYPE_CHECKING:
    from harness.store import Remote

__all__ = ["Loaded", "load_files", "load_results", "result_files"]

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
    "node_gpus",
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
_INT64 = 2**63 - 1


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
    files: int = 0
    """Result files named (directly, or found in directories and by globs), the missing ones too."""
    duplicates: list[str] = dataclasses.field(default_factory=list)
    """Files whose run (node and run id) was already read from another file: counted once."""


def load_results(*sources: Source, progress: Progress | None = None) -> Loaded:
    paths, errors = result_files(sources)
    return load_files(paths, errors, progress=progress)


def load_files(
    paths: list[Path | Remote], errors: list[ConfigError], progress: Progress | None = None
) -> Loaded:
    """Read `paths` (from `result_files`); `errors` are the sources already found wrong (each a file named)."""
    named = len(paths) + len(errors)
    errors = list(errors)
    table = _Columns()
    runs: list[dict[str, Any]] = []
    findings: list[list[dict[str, object]]] = []
    copies: list[tuple[str | Path, ResultDocument, list[dict[str, Any]]]] = []
    chosen: dict[tuple[str, str], int] = {}
    """Each run read, by node and run id: its position in `runs`."""
    dropped: set[int] = set()
    duplicates: list[str] = []

    def take(path: Path | str, doc: ResultDocument, measurements: list[dict[str, Any]], own: bool) -> None:
        key = (doc.node, doc.run_id)
        before = chosen.get(key)
        if before is not None and _rank(doc, own) <= _rank_of(runs[before]):
            if own:
                duplicates.append(str(path))
            return
        try:
            table.add(doc, measurements, path)
        except ConfigError as err:
            errors.append(err)
            return
        if before is not None:
            dropped.add(before)
            if not is_job(runs[before]["file"]):
                duplicates.append(runs[before]["file"])
        chosen[key] = len(runs)
        runs.append(_run_row(doc, path))
        findings.append(_finding_rows(doc))

    for done, (path, read_one) in enumerate(contents(paths), 1):
        try:
            found, job = read_one(), is_job(path)
        except ConfigError as err:
            errors.append(err)
            found, job = [], False
        for doc, measurements in found:
            if job:
                copies.append((path, doc, measurements))
            else:
                take(path, doc, measurements, own=True)
        if progress is not None:
            progress(done, len(paths))
    for path, doc, measurements in copies:  # a job's copy of a node's result, after the nodes' own files
        take(path, doc, measurements, own=False)
    measured = table.frame(runs)
    if dropped:
        kept = ~np.isin(np.repeat(np.arange(len(runs)), table.counts), list(dropped))
        measured = measured[kept].reset_index(drop=True)
    tables = (
        pd.DataFrame([r for i, r in enumerate(runs) if i not in dropped], columns=RUN_COLUMNS),
        measured,
        pd.DataFrame([f for i, rows in enumerate(findings) if i not in dropped for f in rows], columns=FINDING_COLUMNS),
    )
    for frame in tables:
        for column in ("started_at", "ended_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True)
    return Loaded(*tables, errors=errors, files=named, duplicates=duplicates)


def _rank(doc: ResultDocument, own: bool) -> tuple[bool, bool]:
    """Which copy of a run counts: a finished one, then a node's own file before a job's copy."""
    return doc.state is RunState.FINISHED, own


def _rank_of(row: dict[str, Any]) -> tuple[bool, bool]:
    return row["state"] == str(RunState.FINISHED), not is_job(row["file"])


@dataclasses.dataclass
class _Columns:
    """The measurements of many files as growing columns; `frame` makes the table."""

    counts: list[int] = dataclasses.field(default_factory=list)
    device_rows: list[int] = dataclasses.field(default_factory=list)
    devices: list[tuple[int | None, str, str, int]] = dataclasses.field(default_factory=lambda: [(None, "", "", 0)])
    """Row 0 stands for a measurement of no listed device (the node, or an unknown UUID)."""
    columns: dict[str, list[Any]] = dataclasses.field(
        default_factory=lambda: (
            {k: [] for k in ("metric", "gpu", "value", "unit", "direction")}
            | {k: [] for k in ("test", "samples", "low", "high", "peer")}
        )
    )

    def add(self, doc: ResultDocument, measurements: list[dict[str, Any]], path: Path | str) -> None:
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
        if not (strings_ok and numbers_ok and bounds_ok and set(direction) <= _DIRECTIONS) or not (
            all(map(_finite, value)) and all(map(_finite, low + high)) and all(0 <= n <= _INT64 for n in samples)
        ):
            raise _first_bad(measurements, path)
        first = len(self.devices)
        same = collections.Counter(d.name for d in doc.devices)  # which node size judged it ([match] gpus)
        self.devices += [(d.index, d.name, d.serial, same[d.name]) for d in doc.devices]
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
        index, gpu_name, serial, node_gpus = zip(*self.devices, strict=True)
        data["gpu_index"] = pd.array(np.asarray(index, dtype=object)[device], dtype="Int64")
        data["gpu_name"] = _taken(list(gpu_name), device)
        data["node_gpus"] = np.asarray(node_gpus, dtype=np.int64)[device]
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


def _finite(value: Any) -> bool:
    """A number a float holds, not NaN or infinite (an integer of 400 digits is none); None passes."""
    try:
        return value is None or type(value) is str or math.isfinite(value)
    except OverflowError:
        return False


def _first_bad(measurements: list[Any], path: Path | str) -> ConfigError:
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
            if type(v) not in allowed or not _finite(v) or (key == "samples" and not 0 <= v <= _INT64):
                return ConfigError(f"unexpected value {short(v)}", file=path, field=f"{where}.{key}")
        if m["direction"] not in _DIRECTIONS:
            return ConfigError(
                f"is {m['direction']!r}; expected 'higher' or 'lower'", file=path, field=f"{where}.direction"
            )
    return ConfigError("malformed measurements", file=path, field="measurements")


def _run_row(doc: ResultDocument, path: Path | str) -> dict[str, object]:
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
