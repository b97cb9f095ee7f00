"""One burn at a time on a node: an exclusive lock on a file in the results directory.

Two runs that burn the same GPUs at once skew each other's figures, and two preflights of
one node (a restarted pod racing the old one) would both act on the node, the later writer
winning. Every run that burns takes this lock first and holds it until it has acted; a
second run exits 4 at once, naming the holder. The preflight DaemonSet and the periodic
CronJob share the results directory (a hostPath), so they exclude each other too.

`flock` is released by the kernel when the holder dies, however it dies: a killed run
never leaves a lock behind. The file keeps the last holder's pid and run id, for the
message only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from harness.errors import ConfigError

NAME = ".gpu-burnin.lock"


def path_in(directory: Path) -> Path:
    return directory / NAME


@contextlib.contextmanager
def hold(directory: Path, run_id: str) -> Iterator[Path]:
    """Hold the node's burn lock for `run_id` while the block runs; ConfigError if another run has it."""
    path = path_in(directory)
    try:
        # O_NOFOLLOW: a link planted in the results directory must not make us open something else.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise ConfigError(f"cannot open the node's burn lock: {err.strerror}", file=path) from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ConfigError(f"cannot take the node's burn lock: {err.strerror}", file=path) from err
            raise ConfigError(
                f"another gpu-burnin run is burning this node's GPUs ({_holder(fd)}); wait for it to end", file=path
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "run_id": run_id}).encode() + b"\n", 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(data['pid'])}, run {str(data['run_id'])[:80]!r}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def check_held(directory: Path, run_id: str, pid: int) -> None:
    """That process `pid` holds the node's burn lock for `run_id` (a gpu-burnin command that started
    this pytest child); ConfigError otherwise, so that no one can claim a lock they do not hold."""
    path = path_in(directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise ConfigError(f"the node's burn lock is not held: {err.strerror}", file=path) from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            held = True  # someone holds it exclusively: is it our parent, for this run?
        else:
            held = False
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            data = {}
    finally:
        os.close(fd)
    if not (held and isinstance(data, dict) and data.get("pid") == pid and data.get("run_id") == run_id):
        raise ConfigError(f"the node's burn lock is not held for run {run_id!r} by process {pid}", file=path)
