"""Worker functions for tests/test_workers.py (workers import their target by name)."""

import os
import signal
import time


def echo(job, channel):
    channel.progress("ready")
    channel.send("value", value=job["value"] * 2)
    command = channel.recv()
    channel.send("reply", got=command)


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
    channel.send("pid", pid=os.getpid())
    while True:
        time.sleep(60)


def die_after_burned(job, channel):
    channel.send("burned")
    os._exit(3)


def steady(job, channel):
    """Healthy: reports progress every 0.2 s for a few seconds."""
    for n in range(job.get("beats", 25)):
        channel.progress(f"beat {n}")
        time.sleep(0.2)
    channel.send("finished")


def stall_or_steady(job, channel):
    (stall if job["stall"] else steady)(job, channel)
