"""Device workers: one process per device, which the parent can always stop.

A hung kernel cannot be interrupted from inside its own process, so the work that
touches a device runs in a child process and the parent (the pytest process,
which never initialises CUDA) keeps the clock: a worker that sends nothing for
`stall_s`, or is still running at `limit_s`, is killed and reported hung. The
parent's verdict therefore arrives within the limit whatever the device does.

Workers start from a fork server that has imported torch once, so a worker costs
a fork rather than an interpreter start; the fork server never touches CUDA, which
keeps forking safe. A worker exits by itself when its parent dies.

Parent and worker speak in `Message`s: frozen dataclasses, pickled through a pipe.
A worker's entry point is a plain module-level function `target(job, channel)`.
Tests do not use this module directly: harness/workers/devicetest.py builds on it.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from enum import StrEnum
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

J = TypeVar("J")
M = TypeVar("M", bound="Message")


KEEPALIVE_S = 2.0
"""How often a worker waiting for its parent says it is alive."""


class Message:
    """What parent and worker send each other. Subclasses are frozen dataclasses of plain data."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Progress(Message):
    """The worker is alive: resets the stall clock, and says what it is doing."""

    phase: str
    figures: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Figures so far in this phase (a current TFLOP/s, errors so far), for progress lines."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Done(Message):
    """The worker's function returned."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Failed(Message):
    """The worker's function raised; sent just before the worker exits."""

    error: str
    traceback: str


class Overdue(StrEnum):
    """Why a hung worker was killed."""

    STARTUP = "startup"
    """It never reported anything within the startup limit."""
    STALLED = "stalled"
    """It had reported, then went silent for the stall limit: stuck in the middle of its work."""
    LIMIT = "limit"
    """It kept reporting but was still running at the overall limit."""


class WorkerStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    """Its function raised."""
    CRASHED = "crashed"
    """It exited without saying why (a signal, os._exit, the driver killed it)."""
    HUNG = "hung"
    """It stopped reporting progress, never started, or ran past its limit: it was killed."""
    STOPPED = "stopped"
    """The parent stopped it before it finished: it could not go on without a worker that failed."""


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

    def send(self, message: Message) -> None:
        self._conn.send(message)

    def progress(self, phase: str, **figures: float) -> None:
        """Say the worker is alive and what it is doing; also resets the stall clock."""
        self.send(Progress(phase=phase, figures=figures))

    def poll(self, timeout_s: float = 0.0) -> bool:
        """Whether a command from the parent is waiting (waits up to `timeout_s` for one)."""
        return bool(self._conn.poll(timeout_s))

    def recv(self, kind: type[M], *, waiting: str = "") -> M:
        """The next command from the parent, which must be a `kind`. With `waiting`, report
        progress under that phase every few seconds meanwhile: a worker that waits its turn
        while the parent reads the others (`messages(of=...)`) must not look stalled."""
        if waiting:
            while not self._conn.poll(KEEPALIVE_S):
                self.progress(waiting)
        message = self._conn.recv()
        if not isinstance(message, kind):
            raise TypeError(f"expected {kind.__name__} from the parent, got {type(message).__name__}")
        return message


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerEnd:
    """How a worker finished."""

    status: WorkerStatus
    phase: str
    """The last phase it reported."""
    started: bool
    """Whether it ever reported anything: a worker that never did is stuck starting, not working."""
    overdue: Overdue | None = None
    """Why it was declared hung (status HUNG only)."""
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
    status: WorkerStatus = WorkerStatus.RUNNING
    error: str = ""
    overdue: Overdue | None = None


class WorkerGroup(Generic[J]):
    """Runs `target(job, channel)` in one process per job.

    `target` is a module-level function (it is pickled by reference). Use as a
    context manager: leaving it stops every worker that is still running.
    """

    def __init__(
        self,
        target: Callable[[J, Channel], None],
        jobs: Sequence[J],
        *,
        startup_s: float,
        stall_s: float,
        limit_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.target = target
        self.jobs = list(jobs)
        self.startup_s = startup_s
        self.stall_s = stall_s
        self.limit_s = limit_s
        self._clock = clock
        self._workers: list[_Worker] = []
        self._began = 0.0

    def __enter__(self) -> WorkerGroup[J]:
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

    def send(self, index: int, message: Message) -> None:
        worker = self._workers[index]
        if worker.status is not WorkerStatus.RUNNING:
            return
        try:
            worker.conn.send(message)
        except OSError:  # it died since we last looked: that is a crash, not our error
            worker.process.join(1.0)
            self._settle(index)

    def end(self, index: int) -> WorkerEnd:
        worker = self._workers[index]
        return WorkerEnd(
            status=worker.status,
            phase=worker.phase,
            started=worker.heard,
            overdue=worker.overdue,
            exitcode=worker.process.exitcode,
            error=worker.error,
        )

    def messages(
        self, until: type[Message], *, of: Collection[int] | None = None, together: bool = False
    ) -> Iterator[tuple[int, Message]]:
        """Yield (worker, message) until every worker has sent an `until` message or ended.

        Progress messages are yielded too (for progress lines); done and failure
        messages are handled here. A worker that stalls or runs past the group's
        limit is killed on the way. A worker that has sent its `until` is no longer
        read (it may wait silently for the parent's next command).

        With `of`, only those workers must send `until`; every running worker is read
        and judged meanwhile, so the others must keep reporting progress while they
        wait (as `Channel.recv(..., waiting=...)` does).

        With `together`, the workers work together (the ranks of a collective) and none
        can finish without the others: the first that ends without finishing (killed,
        crashed, raised) ends the wait for all.
        """
        waiting = {i for i, w in enumerate(self._workers) if w.status is WorkerStatus.RUNNING}
        watched = set(waiting)
        if of is not None:
            waiting &= set(of)
        now = self._clock()
        for i in watched:
            self._workers[i].last_seen = now
        while waiting:
            by_handle: dict[Any, int] = {}
            for i in watched:
                by_handle[self._workers[i].conn] = i
                by_handle[self._workers[i].process.sentinel] = i
            ready = wait(list(by_handle), timeout=max(0.0, self._next_deadline(watched) - self._clock()))
            for handle in ready:
                i = by_handle[handle]
                if i not in watched:
                    continue
                for message in self._drain(i):
                    if not isinstance(message, Done | Failed):
                        yield i, message
                    if isinstance(message, until) and i in waiting:
                        waiting.discard(i)
                        if of is None:
                            watched.discard(i)
                if self._workers[i].status is not WorkerStatus.RUNNING:
                    waiting.discard(i)
                    watched.discard(i)
            # Judge everyone at one instant, then kill: a kill takes seconds, and the others'
            # messages sent meanwhile are read on the next pass, before they are judged again.
            overdue = [(i, found) for i in sorted(watched) if (found := self._overdue(i))]
            for i, (why, reason) in overdue:
                self._kill(i, why, reason)
                waiting.discard(i)
                watched.discard(i)
            if together and any(w.status not in (WorkerStatus.RUNNING, WorkerStatus.DONE) for w in self._workers):
                return

    def join(self) -> None:
        """Wait until every worker has finished; the stall and overall limits still apply."""
        for _ in self.messages(until=Done):
            pass

    def stop(self, reason: str = "") -> None:
        """Ask every running worker to go (its liveness pipe closes), then make it go. With a
        `reason`, a worker still running is STOPPED for that reason; without, it is judged by how
        it exits (one that had not finished crashed)."""
        if reason:
            for i, worker in enumerate(self._workers):
                for _ in self._drain(i):  # what it said before it was stopped: its own end, perhaps
                    pass
                if worker.status is WorkerStatus.RUNNING:
                    worker.status = WorkerStatus.STOPPED
                    worker.error = reason
        for worker in self._workers:
            worker.alive.close()
        deadline = self._clock() + 2.0
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - self._clock()))
        for i, worker in enumerate(self._workers):
            if worker.process.is_alive():
                _terminate(worker.process)
            if worker.status is WorkerStatus.RUNNING:
                self._settle(i)
            worker.conn.close()

    # -- internals ---------------------------------------------------------

    def _drain(self, i: int) -> Iterator[Message]:
        worker = self._workers[i]
        while worker.status is WorkerStatus.RUNNING:
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
            if isinstance(message, Progress):
                worker.phase = message.phase
            elif isinstance(message, Failed):
                worker.status = WorkerStatus.ERROR
                worker.error = message.traceback or message.error
            elif isinstance(message, Done):
                worker.status = WorkerStatus.DONE
            yield message

    def _settle(self, i: int) -> None:
        worker = self._workers[i]
        if worker.status is WorkerStatus.RUNNING:
            worker.process.join(1.0)
            worker.status = WorkerStatus.CRASHED
            worker.error = f"worker exited with {_describe_exit(worker.process.exitcode)} during {worker.phase}"

    def _next_deadline(self, waiting: set[int]) -> float:
        return min(self._deadline(i) for i in waiting)

    def _deadline(self, i: int) -> float:
        worker = self._workers[i]
        limit = self._began + self.limit_s
        if worker.heard:
            return min(limit, worker.last_seen + self.stall_s)
        return min(limit, worker.started_at + self.startup_s)

    def _overdue(self, i: int) -> tuple[Overdue, str] | None:
        worker = self._workers[i]
        now = self._clock()
        if now >= self._began + self.limit_s:
            return Overdue.LIMIT, f"still running after the limit of {self.limit_s:.0f} s, during {worker.phase}"
        if worker.heard and now >= worker.last_seen + self.stall_s:
            silent = now - worker.last_seen
            return Overdue.STALLED, f"no progress for {silent:.0f} s (limit {self.stall_s:.0f} s) during {worker.phase}"
        if not worker.heard and now >= worker.started_at + self.startup_s:
            return Overdue.STARTUP, f"did not start within {self.startup_s:.0f} s"
        return None

    def _kill(self, i: int, why: Overdue, reason: str) -> None:
        worker = self._workers[i]
        lingering = _terminate(worker.process)
        worker.status = WorkerStatus.HUNG
        worker.overdue = why
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


def _bootstrap(target: Callable[[Any, Channel], None], job: Any, conn: Connection, alive: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    threading.Thread(target=_exit_with_parent, args=(alive,), daemon=True).start()
    channel = Channel(conn)
    try:
        target(job, channel)
    except BaseException as err:  # noqa: BLE001 - every failure is reported, none is judged here
        channel.send(Failed(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()))
        conn.close()
        os._exit(1)
    channel.send(Done())


def _exit_with_parent(alive: Connection) -> None:
    try:
        alive.recv()
    except (EOFError, OSError):
        pass
    os._exit(0)
