"""`gpu-burnin watch-ready`: the watch pod's readiness (and liveness) probe.

The watch writes the wall time of every poll to `last-poll` in its state directory (the
journal's, /var/lib/gpu-burnin/watch in the DaemonSet), a new file renamed over the old.
The probe reads it: exit 0 when the last poll is younger than `--max-age`, else 1 with one
line saying why (no poll yet, a poll too old, a file that is not a time). No API call: a
live watch costs the API server nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import options
from harness.verdict import ExitCode
from harness.watch.config import JOURNAL, LAST_POLL

STATE_DIR = JOURNAL.parent
MAX_AGE_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-age",
        type=options.seconds,
        default=MAX_AGE_S,
        metavar="SECONDS",
        help=f"ready while the last poll is younger than this (default {MAX_AGE_S:g}; a few --interval)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR,
        metavar="DIR",
        help=f"the watch's state directory, where its journal and {LAST_POLL} are (default {STATE_DIR})",
    )


def main(args: argparse.Namespace, *, now: Callable[[], float] = time.time) -> int:
    path = args.state_dir / LAST_POLL
    problem = _problem(path, args.max_age, now())
    if problem is None:
        return int(ExitCode.PASS)
    print(f"gpu-burnin watch-ready: not ready: {problem}", file=sys.stderr)
    return int(ExitCode.FAIL)  # not ready: the kubelet reads any code but 0 so


def _problem(path: Path, max_age_s: float, now: float) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace")[:64]
    except FileNotFoundError:
        return f"no poll yet ({path} does not exist)"
    except OSError as err:
        return f"{path} cannot be read: {err.strerror or err}"
    try:
        polled = float(text.strip())
    except ValueError:
        polled = math.nan
    if not math.isfinite(polled):
        return f"{path} does not hold a time: {text.strip()[:40]!r}"
    age = now - polled
    if age >= max_age_s:
        return f"the last poll was {age:.0f} s ago, --max-age is {max_age_s:g} s ({path})"
    return None
