"""Result files: one JSON document per run, written atomically.

The schema is documented in docs/results.md. A run writes its file when it starts
(state "running", verdict incomplete), again after every test, and a last time
when it ends, always to a temporary name in the same directory followed by a
rename: a reader sees the previous whole document or the next, never half of one,
and a run killed at any point leaves a file that says incomplete.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

SCHEMA = "gpu-burnin/result"
SCHEMA_VERSION = 1
"""Raised only for changes a reader of the previous version would misread.
Adding fields does not raise it; readers ignore fields they do not know."""

RUNNING = "running"
FINISHED = "finished"
ABANDONED = "abandoned"
"""Written by the `gpu-burnin run` watchdog for a run it had to kill."""


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable by start time, unique across a fleet: 20261127T130000Z-a1b2c3."""
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def path_for(directory: Path, node: str, run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", node) or "node"
    return directory / f"{safe}_{run_id}.json"


def skeleton(*, run_id: str, node: str, started_at: dt.datetime, device_kind: str) -> dict[str, Any]:
    """A document with every top-level field, for writers to fill in."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "state": RUNNING,
        "run_id": run_id,
        "node": node,
        "started_at": timestamp(started_at),
        "ended_at": None,
        "device_kind": device_kind,
        "profile": {},
        "selection": "",
        "faults": [],
        "host": {},
        "devices": [],
        "device_problem": "",
        "baselines": [],
        "tests": [],
        "measurements": [],
        "findings": [],
        "verdict": {
            "status": "incomplete",
            "reasons": ["the run has not finished (or was killed before it could)"],
            "exit_code": 2,
        },
    }


def ensure_directory(directory: Path) -> Path:
    """Create the results directory if needed and make sure it can be written, before anything runs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the results directory: {err.strerror}", file=directory) from err
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError("the results directory is not writable", file=directory)
    return directory


def write(path: Path, document: dict[str, Any]) -> Path:
    """Replace `path` with `document` in one step; the directory is created if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(document, indent=1, sort_keys=False, allow_nan=False).encode() + b"\n"
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # readable by the fleet's collectors, as any result file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def load(path: Path) -> dict[str, Any]:
    """Read a result file, refusing documents this version cannot read correctly."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=path) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"not a JSON document: {err}", file=path) from err
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ConfigError(f"not a gpu-burnin result (schema is not {SCHEMA!r})", file=path, field="schema")
    version = document.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise ConfigError(
            f"is {version!r}; this gpu-burnin reads versions 1 to {SCHEMA_VERSION}", file=path, field="schema_version"
        )
    return document


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, so a crash right after cannot lose the file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
