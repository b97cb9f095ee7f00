"""Reading one result file without trusting it: the typed document and its raw measurements.

Only a regular file of at most MAX_BYTES is read: a FIFO or a device (a link to /dev/zero)
is refused before it is opened, and opened without blocking in case one was swapped in. The
JSON may not hold NaN or Infinity (results are written without them) nor nest deeper than
Python's parser can go; every field the report uses has its declared type (a device index
is a whole number, not "zero"); times lie from 2000 to 2100 (harness.options.EARLIEST and
LATEST: a broken clock, and far inside what pandas' timestamps hold). Every refusal is a
ConfigError naming the file and, where there is one, the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from harness import results
from harness.errors import ConfigError
from harness.options import EARLIEST, LATEST
from harness.results import ResultDocument

MAX_BYTES = 16 * 2**20
"""The largest result file read: 16 MiB. Results are tens of kilobytes (45 KB for 8 GPUs and
every test in bench/fleet.py's fleets, 4 KB for a one-GPU H200 run in bench/results), so a
margin of hundreds for health snapshots and telemetry; anything larger is not a result, and
would only cost memory (or, at 50 MB of made-up metrics, break the page)."""
_FIELD_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float)}
_TYPED: dict[type, tuple[tuple[str, tuple[type, ...]], ...]] = {}


def read(path: Path) -> list[tuple[ResultDocument, list[dict[str, Any]]]]:
    """A result file as its typed document without measurements, and its raw measurements; a
    job's file (MPI, docs/results.md) as every node's result it holds.

    Refuses what `harness.results.load` refuses, and also measurements whose fields have the
    wrong type or whose value is not a finite number (a report must not average a string),
    anything but a regular file of at most MAX_BYTES, NaN and Infinity, and nesting too deep."""
    return parse(_read_bytes(path), path)


def parse(raw: bytes, name: Path | str) -> list[tuple[ResultDocument, list[dict[str, Any]]]]:
    """The bytes of a result file or object (`name`, for errors) as `read` returns them, by the same
    rules: an object from a store (reports.load) is checked exactly as a file is."""
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"is larger than {MAX_BYTES // 2**20} MiB: not a result file", file=name)
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except _NotFinite as err:
        raise ConfigError(
            f"{err.args[0]} is not a JSON number (result files hold finite numbers only)",
            file=name,
            field=_not_finite_at(raw),
        ) from None
    except RecursionError:
        raise ConfigError("nested too deeply to be a result file", file=name) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"not a JSON document: {err}", file=name) from err
    if isinstance(data, dict) and data.get("schema") == results.JOB_SCHEMA:
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise ConfigError("expected a list", file=name, field="nodes")
        return [_document(n["result"], name) for n in nodes if isinstance(n, dict) and n.get("result")]
    return [_document(data, name)]


def is_job(path: Path | str) -> bool:
    """Whether a result file (or object, by its URL) is an MPI job's (every node's result in one file)."""
    return PurePosixPath(os.fspath(path)).parent.name == "jobs"


def _document(data: Any, path: Path | str) -> tuple[ResultDocument, list[dict[str, Any]]]:
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
    except ConfigError as err:  # a part that checks itself (the profile) names its field, not the file
        raise ConfigError(err.problem, file=path, field=err.field) from err
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise ConfigError(f"malformed result: {type(err).__name__}: {err}", file=path) from err
    _check_document(doc, path)
    return doc, measurements


def _check_document(doc: ResultDocument, path: Path | str) -> None:
    """What from_dict takes on trust: the types of the fields the report uses, and times a clock can show."""
    _check_fields(doc, path, "")
    for name in ("devices", "findings", "tests"):
        for i, record in enumerate(getattr(doc, name)):
            _check_fields(record, path, f"{name}[{i}].")
    for key, value in doc.host.items():
        if type(value) is not str:
            raise ConfigError(f"expected a string, got {short(value)}", file=path, field=f"host.{key}")
    for name in ("started_at", "ended_at"):
        moment = getattr(doc, name)
        if moment is not None and not EARLIEST <= moment < LATEST:
            raise ConfigError(
                f"is {moment.isoformat()}, outside {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (a broken clock?)",
                file=path,
                field=name,
            )


def _check_fields(record: Any, path: Path | str, where: str) -> None:
    for name, allowed in _typed_fields(type(record)):
        value = getattr(record, name)
        if type(value) not in allowed or not _fits(value):
            kind = "a string" if allowed == (str,) else "a whole number" if allowed == (int,) else "a number"
            raise ConfigError(f"expected {kind}, got {short(value)}", file=path, field=f"{where}{name}")


def _fits(value: Any) -> bool:
    """A float that is finite, an integer that a 64-bit column holds (a device index of 10**30 is neither)."""
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is not int or -(2**63) <= value < 2**63


def _typed_fields(cls: type) -> tuple[tuple[str, tuple[type, ...]], ...]:
    """A record's fields declared str, int or float (the annotations are strings here), worked out once."""
    found = _TYPED.get(cls)
    if found is None:
        found = _TYPED[cls] = tuple(
            (f.name, _FIELD_TYPES[str(f.type)]) for f in dataclasses.fields(cls) if str(f.type) in _FIELD_TYPES
        )
    return found


def short(value: Any) -> str:
    """A value for an error message: its repr, cut at 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_BYTES. A FIFO or a device is refused before it
    is opened, and opened without blocking in case it was swapped in since (checked again)."""
    try:
        _regular(os.stat(path), path)
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(handle, "rb") as source:
            _regular(os.fstat(source.fileno()), path)
            raw = source.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", file=path) from err
    return raw


def _regular(found: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(found.st_mode):
        kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))  # fmt: skip
        kind = next((name for test, name in kinds if test(found.st_mode)), "not a file")
        raise ConfigError(f"is {kind}, not a regular file: only result files are read", file=path)
    check_size(found.st_size, path)


def check_size(size: int, name: Path | str) -> None:
    """A file's or an object's size, known before it is read: ConfigError over MAX_BYTES."""
    if size > MAX_BYTES:
        limit = MAX_BYTES // 2**20
        raise ConfigError(f"is {size / 2**20:.0f} MiB, larger than {limit} MiB: not a result file", file=name)


class _NotFinite(ValueError):
    """NaN, Infinity or -Infinity in a document: Python reads them, JSON has no such numbers."""


def _refuse_constant(name: str) -> float:
    raise _NotFinite(name)


def _not_finite_at(raw: bytes) -> str | None:
    """Where the first NaN or Infinity of a document is, as a field path (read again, only for the error)."""
    marker = object()
    try:
        data = json.loads(raw, parse_constant=lambda name: marker)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:  # depth first, in document order, without recursion (the nesting may be deep)
        where, value = stack.pop()
        if value is marker:
            return where or None
        if isinstance(value, dict):
            stack += [(f"{where}.{k}" if where else str(k), v) for k, v in reversed(value.items())]
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value)))]
    return None
