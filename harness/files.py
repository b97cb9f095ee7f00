"""Reading the files a user names (baselines, the Xid table, a kubeconfig), as strictly as their contents.

A path can name a FIFO (a read blocks for ever), a device (`/dev/zero` never ends), a directory
or something too long for the filesystem to look up: each is a ConfigError naming the file and
the option, never a hang or a traceback. Links are followed, as a ConfigMap mounted in a pod is
a tree of links; what they lead to must be a regular file of a sane size.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.errors import ConfigError

CONFIG_LIMIT = 4 * 1024 * 1024
"""The largest configuration file read (a baseline is ~20 KB, the packaged Xid table ~40 KB)."""


def read_regular(path: Path, *, option: str | None = None, limit: int = CONFIG_LIMIT) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; ConfigError for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=_shown(path), option=option) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"is not a regular file ({_kind(info.st_mode)})", file=_shown(path), option=option)
        if info.st_size > limit:
            raise ConfigError(f"is {info.st_size} bytes, over the limit of {limit}", file=_shown(path), option=option)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=_shown(path), option=option) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigError(f"grew over the limit of {limit} bytes while read", file=_shown(path), option=option)
    return data


def is_dir(path: Path, *, option: str | None = None) -> bool:
    """Whether `path` is a directory (False when nothing is there); ConfigError when it cannot be
    looked up at all (a name too long, a permission denied on the way)."""
    found = _mode(path, option)
    return found is not None and stat.S_ISDIR(found)


def is_file(path: Path, *, option: str | None = None) -> bool:
    """Whether `path` is a regular file (False when nothing is there); ConfigError as `is_dir`."""
    found = _mode(path, option)
    return found is not None and stat.S_ISREG(found)


def _mode(path: Path, option: str | None) -> int | None:
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise ConfigError(f"cannot look it up: {err.strerror}", file=_shown(path), option=option) from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def _shown(path: Path) -> str:
    """A path as an error shows it: shortened, whatever it holds."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:100]}...{text[-40:]}"
