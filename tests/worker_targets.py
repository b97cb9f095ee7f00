"""Worker functions and messages for tests/test_workers.py (module-level: they are pickled by reference)."""

import dataclasses
import os
import signal
import time

from harness.workers import Message


@dataclasses.dataclass(frozen=True)
class Value(Message):
    value: int


@dataclasses.dataclass(frozen=True)
class Command(Message):
    n: int


@dataclasses.dataclass(frozen=True)
class Reply(Message):
    got: Command


@dataclasses.dataclass(frozen=True)
class Burned(Message):
    pass


@dataclasses.dataclass(frozen=True)
class Pid(Message):
    pid: int


@dataclasses.dataclass(frozen=True)
class Finished(Message):
    pass


@dataclasses.dataclass(frozen=True)
class Never(Message):
    pass


def echo(job, channel):
    channel.progress("ready")
    channel.send(Value(job["value"] * 2))
    channel.send(Reply(channel.recv(Command)))


def fail(job, channel):
    channel.progress("ready")
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def crash(job, channel):
    channel.progress("about to crash")
    os.kill(os.getpid(), signal.SIGKILL)


def stall(job, channel):
    """Starts, then makes no progress and ignores SIGTERM, as a process stuck in the driver."""
    channel.progress("stalling")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(60)


def slow_start(job, channel):
    time.sleep(60)


def report_pid_then_wait(job, channel):
    channel.send(Pid(os.getpid()))
    while True:
        time.sleep(60)


def die_after_burned(job, channel):
    channel.send(Burned())
    os._exit(3)


def steady(job, channel):
    """Healthy: reports progress every 0.2 s for a few seconds."""
    for n in range(job.get("beats", 25)):
        channel.progress(f"beat {n}")
        time.sleep(0.2)
    channel.send(Finished())


def stall_or_steady(job, channel):
    (stall if job["stall"] else steady)(job, channel)


def wrong_command(job, channel):
    channel.progress("ready")
    channel.recv(Value)
