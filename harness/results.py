"""Result files: one JSON document per run, written atomically.

The schema is documented in docs/results.md. A run writes its file when it starts
(state "running", verdict incomplete), again after every test, and a last time
when it ends, always to a temporary name in the same directory followed by a
rename: a reader sees the previous whole document or the next, never half of one,
and a run killed at any point leaves a file that says incomplete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness import files
from harness.devices import Device
from harness.errors import ConfigError
from harness.profiles import Profile
from harness.records import Finding, Measurement
from harness.verdict import Status, TestOutcome, Verdict

SCHEMA = "gpu-burnin/result"
JOB_SCHEMA = "gpu-burnin/job"
SCHEMA_VERSION = 1
"""Raised only for changes a reader of the previous version would misread.
Adding fields does not raise it; readers ignore fields they do not know."""


class RunState(StrEnum):
    RUNNING = "running"
    """A checkpoint: the run is going on, or was killed before it could finish the file."""
    FINISHED = "finished"
    ABANDONED = "abandoned"
    """Finished by the `gpu-burnin run` watchdog for a run it had to stop."""


@dataclasses.dataclass(kw_only=True)
class TestRecord:
    """One selected test and how it ended."""

    __test__ = False  # not a pytest test class, whatever its name

    nodeid: str
    group: str = ""
    outcome: TestOutcome = TestOutcome.NOT_RUN
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "group": self.group, "outcome": str(self.outcome), "duration_s": self.duration_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TestRecord:
        return cls(
            nodeid=data["nodeid"],
            group=data.get("group", ""),
            outcome=TestOutcome(data.get("outcome", TestOutcome.NOT_RUN)),
            duration_s=float(data.get("duration_s", 0.0)),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineUse:
    """A baseline file that judged the run."""

    model: str
    file: str
    sha256: str
    driver: str = ""


@dataclasses.dataclass(kw_only=True)
class ResultDocument:
    """One run's result file, as data. docs/results.md describes every field."""

    run_id: str
    node: str
    started_at: dt.datetime
    device_kind: str
    entrypoint: str = ""
    """The command that started the run (pytest, run, preflight, periodic); "" in files before 2026-11-28."""
    state: RunState = RunState.RUNNING
    ended_at: dt.datetime | None = None
    profile: Profile | None = None
    selection: str = ""
    faults: list[str] = dataclasses.field(default_factory=list)
    host: dict[str, str] = dataclasses.field(default_factory=dict)
    devices: list[Device] = dataclasses.field(default_factory=list)
    device_problem: str = ""
    baselines: list[BaselineUse] = dataclasses.field(default_factory=list)
    tests: list[TestRecord] = dataclasses.field(default_factory=list)
    measurements: list[Measurement] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    health: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Health snapshots by moment (start, before:GROUP, after:GROUP, health, end): docs/health.md."""
    telemetry: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Per stress test (node id), per GPU UUID: the telemetry summary of its burn."""
    verdict: Verdict = dataclasses.field(default_factory=Verdict.unfinished)

    def outcomes(self) -> dict[str, TestOutcome]:
        return {t.nodeid: t.outcome for t in self.tests}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "state": str(self.state),
            "run_id": self.run_id,
            "node": self.node,
            "started_at": timestamp(self.started_at),
            "ended_at": timestamp(self.ended_at) if self.ended_at else None,
            "device_kind": self.device_kind,
            "entrypoint": self.entrypoint,
            "profile": self.profile.to_dict() if self.profile else {},
            "selection": self.selection,
            "faults": list(self.faults),
            "host": dict(self.host),
            "devices": [d.to_dict() for d in self.devices],
            "device_problem": self.device_problem,
            "baselines": [dataclasses.asdict(b) for b in self.baselines],
            "tests": [t.to_dict() for t in self.tests],
            "measurements": [m.to_dict() for m in self.measurements],
            "findings": [f.to_dict() for f in self.findings],
            "health": dict(self.health),
            "telemetry": dict(self.telemetry),
            "verdict": self.verdict.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultDocument:
        """Raises KeyError, TypeError or ValueError for a malformed document (`load` names the file)."""
        profile = data.get("profile") or None
        return cls(
            run_id=data["run_id"],
            node=data["node"],
            started_at=parse_timestamp(data["started_at"]),
            device_kind=data["device_kind"],
            entrypoint=data.get("entrypoint", ""),
            state=RunState(data["state"]),
            ended_at=parse_timestamp(data["ended_at"]) if data.get("ended_at") else None,
            profile=Profile.from_dict(profile) if profile else None,
            selection=data.get("selection", ""),
            faults=list(data.get("faults", [])),
            host=dict(data.get("host", {})),
            devices=[Device.from_dict(d) for d in data.get("devices", [])],
            device_problem=data.get("device_problem", ""),
            baselines=[
                BaselineUse(**{k: b[k] for k in ("model", "file", "sha256", "driver") if k in b})
                for b in data.get("baselines", [])
            ],
            tests=[TestRecord.from_dict(t) for t in data.get("tests", [])],
            measurements=[Measurement.from_dict(m) for m in data.get("measurements", [])],
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            health=dict(data.get("health", {})),
            telemetry=dict(data.get("telemetry", {})),
            verdict=Verdict.from_dict(data["verdict"]),
        )


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable by start time, unique across a fleet: 20261127T130000Z-a1b2c3."""
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


MAX_BYTES = 16 * 2**20
"""The largest result file read: 16 MiB. Results are tens of kilobytes (45 KB for 8 GPUs and
every test in bench/fleet.py's fleets, 4 KB for a one-GPU H200 run in bench/results), so a
margin of hundreds for health snapshots and telemetry; anything larger is not a result, and
would only cost memory."""

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""What a run id may be: it names files. new_run_id() makes `20261127T130000Z-a1b2c3`."""


def path_for(directory: Path, node: str, run_id: str) -> Path:
    """`directory/<node>_<run id>.json`, always inside `directory` (ConfigError for a run id that is
    not one, such as `x/../../escape`; a node name's other characters become `_`)."""
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"{run_id[:80]!r} is not a run id (letters, digits, - and _, at most 64)", field="run_id")
    return directory / f"{file_part(node)}_{run_id}.json"


def node_pattern(node: str) -> str:
    """A glob for every result file of `node` in a results directory."""
    return f"{file_part(node)}_*.json"


def file_part(node: str) -> str:
    """A node name as part of a file name: only letters, digits, '.', '-' and '_', never a path."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", node)[:253]
    return safe if safe.strip(".") else "node"


def ensure_directory(directory: Path) -> Path:
    """Create the results directory if needed and make sure it can be written, before anything runs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the results directory: {err.strerror}", file=directory) from err
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError("the results directory is not writable", file=directory)
    return directory


def write(path: Path, document: ResultDocument) -> Path:
    """Replace `path` with `document` in one step; the directory is created if needed."""
    return write_json(path, document.to_dict())


def job_path(directory: Path, run_id: str) -> Path:
    """Where rank 0 of a job that spans nodes (MPI) writes the job's result: beside the nodes' own."""
    return path_for(directory / "jobs", "job", run_id).with_name(f"{run_id}.json")


def write_job(path: Path, run_id: str, nodes: Sequence[tuple[str, ResultDocument | None, str]]) -> Path:
    """One file for a job that spans nodes: per node (name, its result or None, why there is none)
    its verdict and its whole result document. A node without a result is incomplete."""
    entries = []
    for node, document, problem in nodes:
        verdict = str(document.verdict.status) if document is not None else str(Status.INCOMPLETE)
        entries.append(
            {
                "node": node,
                "verdict": verdict,
                "problem": problem,
                "result": document.to_dict() if document is not None else None,
            }
        )
    data = {"schema": JOB_SCHEMA, "schema_version": 1, "run_id": run_id, "nodes": entries}
    return write_json(path, data)


def write_json(path: Path, document: dict[str, Any]) -> Path:
    """Replace `path` with `document` in one step (a temporary file renamed over it, fsynced)."""
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


def load(path: Path) -> ResultDocument:
    """Read a result file, refusing documents this version cannot read correctly (ConfigError), and
    anything but a regular file of at most MAX_BYTES (a FIFO would block the reader for ever)."""
    raw = files.read_regular(path, limit=MAX_BYTES)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ConfigError(f"not a JSON document: {err}", file=path) from err
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ConfigError(f"not a gpu-burnin result (schema is not {SCHEMA!r})", file=path, field="schema")
    version = document.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise ConfigError(
            f"is {version!r}; this gpu-burnin reads versions 1 to {SCHEMA_VERSION}", file=path, field="schema_version"
        )
    try:
        return ResultDocument.from_dict(document)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        field = err.field if isinstance(err, ConfigError) else None
        raise ConfigError(f"malformed result: {type(err).__name__}: {err}", file=path, field=field) from err


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, so a crash right after cannot lose the file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
