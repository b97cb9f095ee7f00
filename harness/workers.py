"""Device workers: one process per device, which the parent can always stop.

A hung kernel cannot be interrupted from inside its own process, so the work that
touches a device runs in a child process and the parent (the pytest process,
which never initialises CUDA) keeps the clock: a worker that sends nothing for
`stall_s`, or is still running at `limit_s`, is killed and reported hung. The
parent's verdict therefore arrives within the limit whatever the device does.

Workers start from a fork server that has imported torch once, so a worker costs
a fork rather than an interpreter start; the fork server never touches CUDA, which
keeps forking safe. A worker exits by itself when its parent dies.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

PROGRESS = "progress"
DONE = "done"
ERROR = "error"
_INTERNAL = {PROGRESS, DONE, ERROR}

_context: Any = None


def _mp() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["torch"])
    return _context


class Channel:
    """The worker's end: send messages up, receive commands down."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def send(self, kind: str, **payload: Any) -> None:
        self._conn.send({"type": kind, **payload})

    def progress(self, phase: str, **payload: Any) -> None:
        """Say the worker is alive and what it is doing; also resets the stall clock."""
        self.send(PROGRESS, phase=phase, **payload)

    def recv(self) -> dict[str, Any]:
        message: dict[str, Any] = self._conn.recv()
        return message


@dataclasses.dataclass
class WorkerEnd:
    """How a worker finished."""

    status: str
    """"running", "done", "error", "crashed" or "hung"."""
    phase: str
    """The last phase it reported."""
    exitcode: int | None = None
    error: str = ""
    """The worker's exception and traceback, or why it was declared hung."""

    @property
    def last_line(self) -> str:
        """The error's last line: the exception itself, under its traceback."""
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return lines[-1] if lines else "no detail"


@dataclasses.dataclass
class _Worker:
    process: Any
    conn: Connection
    alive: Connection
    started_at: float
    last_seen: float
    heard: bool = False
    phase: str = "starting"
    status: str = "running"
    error: str = ""


class WorkerGroup:
    """Runs `target(job, channel)` in one process per job.

    `target` is "module:function". Use as a context manager: leaving it stops every
    worker that is still running.
    """

    def __init__(
        self,
        target: str,
        jobs: Sequence[Mapping[str, Any]],
        *,
        startup_s: float,
        stall_s: float,
        limit_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.target = target
        self.jobs = [dict(job) for job in jobs]
        self.startup_s = startup_s
        self.stall_s = stall_s
        self.limit_s = limit_s
        self._clock = clock
        self._workers: list[_Worker] = []
        self._began = 0.0

    def __enter__(self) -> WorkerGroup:
        ctx = _mp()
        self._began = self._clock()
        for job in self.jobs:
            parent_end, child_end = ctx.Pipe(duplex=True)
            alive_r, alive_w = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_bootstrap, args=(self.target, job, child_end, alive_r), daemon=True)
            process.start()
            child_end.close()
            alive_r.close()
            now = self._clock()
            self._workers.append(_Worker(process, parent_end, alive_w, started_at=now, last_seen=now))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __len__(self) -> int:
        return len(self._workers)

    def send(self, index: int, message: Mapping[str, Any]) -> None:
        worker = self._workers[index]
        if worker.status != "running":
            return
        try:
            worker.conn.send(dict(message))
        except OSError:  # it died since we last looked: that is a crash, not our error
            worker.process.join(1.0)
            self._settle(index)

    def end(self, index: int) -> WorkerEnd:
        worker = self._workers[index]
        return WorkerEnd(worker.status, worker.phase, worker.process.exitcode, worker.error)

    def messages(self, until: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (worker, message) until every worker has sent an `until` message or ended.

        Progress, done and error messages are handled here and not yielded; a worker
        that stalls or runs past the group's limit is killed on the way.
        """
        waiting = {i for i, w in enumerate(self._workers) if w.status == "running"}
        now = self._clock()
        for i in waiting:
            self._workers[i].last_seen = now
        while waiting:
            by_handle: dict[Any, int] = {}
            for i in waiting:
                by_handle[self._workers[i].conn] = i
                by_handle[self._workers[i].process.sentinel] = i
            ready = wait(list(by_handle), timeout=max(0.0, self._next_deadline(waiting) - self._clock()))
            for handle in ready:
                i = by_handle[handle]
                if i not in waiting:
                    continue
                for message in self._drain(i):
                    if message["type"] not in _INTERNAL:
                        yield i, message
                    if message["type"] == until:
                        waiting.discard(i)
                if self._workers[i].status != "running":
                    waiting.discard(i)
            # Judge everyone at one instant, then kill: a kill takes seconds, and the others'
            # messages sent meanwhile are read on the next pass, before they are judged again.
            overdue = [(i, reason) for i in sorted(waiting) if (reason := self._overdue(i))]
            for i, reason in overdue:
                self._kill(i, reason)
                waiting.discard(i)

    def join(self) -> None:
        """Wait until every worker has finished; the stall and overall limits still apply."""
        for _ in self.messages(until=DONE):
            pass

    def stop(self) -> None:
        """Ask every running worker to go (its liveness pipe closes), then make it go."""
        for worker in self._workers:
            worker.alive.close()
        deadline = self._clock() + 2.0
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - self._clock()))
        for i, worker in enumerate(self._workers):
            if worker.process.is_alive():
                _terminate(worker.process)
            if worker.status == "running":
                self._settle(i)
            worker.conn.close()

    # -- internals ---------------------------------------------------------

    def _drain(self, i: int) -> Iterator[dict[str, Any]]:
        worker = self._workers[i]
        while worker.status == "running":
            try:
                if not worker.conn.poll():
                    if not worker.process.is_alive():
                        self._settle(i)
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join(5.0)
                self._settle(i)
                return
            worker.heard = True
            worker.last_seen = self._clock()
            kind = message.get("type")
            if kind == PROGRESS:
                worker.phase = str(message.get("phase", worker.phase))
            elif kind == ERROR:
                worker.status = "error"
                worker.error = str(message.get("traceback") or message.get("error", ""))
            elif kind == DONE:
                worker.status = "done"
            yield message

    def _settle(self, i: int) -> None:
        worker = self._workers[i]
        if worker.status == "running":
            worker.process.join(1.0)
            worker.status = "crashed"
            worker.error = f"worker exited with {_describe_exit(worker.process.exitcode)} during {worker.phase}"

    def _next_deadline(self, waiting: set[int]) -> float:
        return min(self._deadline(i) for i in waiting)

    def _deadline(self, i: int) -> float:
        worker = self._workers[i]
        limit = self._began + self.limit_s
        if worker.heard:
            return min(limit, worker.last_seen + self.stall_s)
        return min(limit, worker.started_at + self.startup_s)

    def _overdue(self, i: int) -> str:
        worker = self._workers[i]
        now = self._clock()
        if now >= self._began + self.limit_s:
            return f"still running after the limit of {self.limit_s:.0f} s, during {worker.phase}"
        if worker.heard and now >= worker.last_seen + self.stall_s:
            return f"no progress for {now - worker.last_seen:.0f} s (limit {self.stall_s:.0f} s) during {worker.phase}"
        if not worker.heard and now >= worker.started_at + self.startup_s:
            return f"did not start within {self.startup_s:.0f} s"
        return ""

    def _kill(self, i: int, reason: str) -> None:
        worker = self._workers[i]
        lingering = _terminate(worker.process)
        worker.status = "hung"
        worker.error = reason + (" (it did not exit even after SIGKILL)" if lingering else "")


def _terminate(process: Any) -> bool:
    """SIGTERM, then SIGKILL. Returns True if the process still would not go."""
    process.terminate()
    process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join(5.0)
    if process.is_alive():
        # Stuck in the driver (state D): multiprocessing would join it without a timeout at
        # interpreter exit and hang the run that has already reported it. Let it go.
        multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
        return True
    return False


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _bootstrap(target: str, job: dict[str, Any], conn: Connection, alive: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    threading.Thread(target=_exit_with_parent, args=(alive,), daemon=True).start()
    channel = Channel(conn)
    try:
        module, _, name = target.partition(":")
        function = getattr(importlib.import_module(module), name)
        function(job, channel)
    except BaseException as err:  # noqa: BLE001 - every failure is reported, none is judged here
        channel.send(ERROR, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        conn.close()
        os._exit(1)
    channel.send(DONE)


def _exit_with_parent(alive: Connection) -> None:
    try:
        alive.recv()
    except (EOFError, OSError):
        pass
    os._exit(0)
