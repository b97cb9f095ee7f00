"""Writing an output file without destroying what its path names.

    write_output(Path("report.html"), page)            # a new or regular file: replaced whole
    write_output(Path("/dev/null"), page)              # a device or a FIFO: written through
    write_output(Path("-"), text)                      # standard output
    check_outputs({"-o": html, "--json": found}, inputs)  # before any work: ConfigError naming the flag

A regular file (or a new path) is written to a temporary name beside it and renamed over it, so a
reader never sees half of one. Anything else is written through, never replaced: a device
(`/dev/null`), a FIFO, `/dev/stdout`. A symbolic link stays a link: what it points to is written,
by the same rule. `-` is standard output.

Every output of `gpu-burnin report` and `baseline propose`, and the metrics textfiles, are
written here.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

from harness.errors import ConfigError

STDOUT = "-"
_STREAMS = {STDOUT: 1, "/dev/stdout": 1, "/dev/stderr": 2}
_DESCRIPTOR = re.compile(r"/(?:dev/fd|proc/self/fd)/([0-9]+)")
NEW_MODE = 0o644
"""A new output is readable by all, as result files are (a replaced file keeps its own mode)."""

Writer = Callable[[BinaryIO], object]


def write_output(path: Path | str, data: bytes | str | Writer, *, option: str | None = None) -> None:
    """Write `data` (bytes, text as UTF-8, or a function that writes to a binary file) to `path`,
    by the rules above. ConfigError, naming the file and `option`, when it cannot be written."""
    write: Writer
    if callable(data):
        write = data
    else:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        write = lambda out: out.write(raw)  # noqa: E731 - one line, one use
    descriptor = _descriptor(path)
    try:
        if descriptor is not None:
            _write_descriptor(descriptor, write)
            return
        target = Path(os.path.realpath(path))  # a link is written through to what it points to
        mode = _mode(target)
        if mode is None or stat.S_ISREG(mode):
            _replace(target, write, mode)
        elif stat.S_ISDIR(mode):
            raise _error("is a directory; expected a file name", path, option)
        else:
            with open(target, "wb") as out:  # a device or a FIFO: written through, never replaced
                write(out)
    except OSError as err:
        raise _error(f"cannot write: {err.strerror or err}", path, option) from err


def check_outputs(outputs: Mapping[str, Path | str | None], inputs: Iterable[Path | str] = ()) -> None:
    """Refuse, before any work, outputs that cannot be written or would destroy something: a missing
    or unwritable directory, a directory, one of `inputs` (the same file, through any link), or two
    outputs that are one file (but a device: `-o /dev/null --json /dev/null` discards both).
    `outputs` maps each flag to its path (None: not asked for)."""
    given = {flag: path for flag, path in outputs.items() if path is not None}
    identities = {}
    for source in inputs:
        try:
            identities[_identity(Path(source))] = source
        except OSError:
            continue  # an input that cannot be read is the reader's to report
    seen: dict[object, str] = {}
    for flag, path in given.items():
        identity, device = _check_one(flag, path)
        if identity in identities:
            raise _error(f"is one of the inputs ({identities[identity]}); nothing was written", path, flag)
        if identity in seen:
            raise _error(f"is the same file as {seen[identity]}'s; give each output its own", path, flag)
        if not device:
            seen[identity] = flag


def is_stream(path: Path | str) -> bool:
    """Whether `path` names an already open stream (`-`, /dev/stdout, /dev/fd/N), never a file to replace."""
    return _descriptor(path) is not None


def _check_one(flag: str, path: Path | str) -> tuple[object, bool]:
    """The output's identity (its inode, or where a new file would be) and whether it is a device
    named by its path; ConfigError if it cannot be written."""
    descriptor = _descriptor(path)
    if descriptor is not None:
        try:
            return _identity_fd(descriptor), False
        except OSError:
            raise _error("is not an open file descriptor", path, flag) from None
    target = Path(os.path.realpath(path))
    try:
        mode = _mode(target)
    except OSError as err:
        raise _error(f"cannot write: {err.strerror}", path, flag) from err
    if mode is not None and stat.S_ISDIR(mode):
        raise _error("is a directory; expected a file name", path, flag)
    if mode is not None and not stat.S_ISREG(mode):
        if not os.access(target, os.W_OK):
            raise _error("is not writable", path, flag)
        return _identity(target), stat.S_ISCHR(mode)
    if not target.parent.is_dir():
        raise _error("its directory does not exist", path, flag)
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise _error("its directory is not writable", path, flag)
    return (_identity(target) if mode is not None else ("new", str(target))), False


def _error(problem: str, path: Path | str, flag: str | None) -> ConfigError:
    """An error naming the flag with its file (`--json out/f.json: ...`)."""
    return ConfigError(problem, file=f"{flag} {os.fspath(path)}" if flag else path)


def _descriptor(path: Path | str) -> int | None:
    text = os.fspath(path)
    if text in _STREAMS:
        return _STREAMS[text]
    found = _DESCRIPTOR.fullmatch(text)
    return int(found.group(1)) if found else None


def _write_descriptor(descriptor: int, write: Writer) -> None:
    """Standard output and error through Python's streams (whatever they are now), other descriptors
    through a duplicate, so that ours stays open."""
    stream = {1: sys.stdout, 2: sys.stderr}.get(descriptor)
    if stream is not None:
        stream.flush()
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            write(buffer)
            buffer.flush()
            return
    with os.fdopen(os.dup(descriptor), "wb") as out:
        write(out)


def _replace(target: Path, write: Writer, mode: int | None) -> None:
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, NEW_MODE if mode is None else stat.S_IMODE(mode))
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _mode(target: Path) -> int | None:
    """The file type and mode of `target` (links followed), None when nothing is there."""
    try:
        return os.stat(target).st_mode
    except FileNotFoundError:
        return None


def _identity(path: Path) -> tuple[int, int]:
    found = os.stat(path)
    return found.st_dev, found.st_ino


def _identity_fd(descriptor: int) -> tuple[int, int]:
    found = os.fstat(descriptor)
    return found.st_dev, found.st_ino
