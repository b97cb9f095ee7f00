"""Results off the node: each result file also goes to object storage, and none is lost on the way.

    outbox.deliver(results_dir, node, run_id, "s3://fleet-results/burnin")   # after the file is written

The result file is written on the node first, whole, as always. Then an entry naming it is put
in the outbox (`RESULTS/outbox/<run id>_<node>.pending`, written atomically), and every entry
there is sent, oldest run first, each as one object `URL/<node>/<run id>.json` holding the file's
bytes; an entry goes only once its object is in the store. A failure (the store down, a 5xx, no
credentials, a 403) is tried again with growing waits, all of it within PATIENCE_S; then the run
goes on, its verdict and exit code untouched, and what is left waits for the next run with a
results URL, or `gpu-burnin results push`. A result is sent again only when its entry outlived
the first send (a crash in between, an answer lost): under the same name, with the same bytes.

The store itself is harness/store.py's; this module decides what to send and when to try again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from harness import lock, results
from harness.errors import ConfigError
from harness.terminal import printable
from harness.verdict import ExitCode

OUTBOX = "outbox"
SUFFIX = ".pending"
PATIENCE_S = 60.0
"""How long one run may spend sending, every retry of every waiting result included."""
FIRST_WAIT_S = 1.0
LONGEST_WAIT_S = 15.0
"""The wait after a failed attempt doubles from FIRST_WAIT_S up to LONGEST_WAIT_S (less a random
share, so that a fleet whose store comes back does not retry in step)."""
SHORTEST_ATTEMPT_S = 2.0
"""No attempt is started with less time than this left: it could only time out."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A result waiting to be sent: the entry's own file, and the result's node and run id."""

    path: Path
    node: str
    run_id: str

    @property
    def key(self) -> str:
        """The object's name under the results URL."""
        return f"{results.file_part(self.node)}/{self.run_id}.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Drained:
    sent: tuple[str, ...] = ()
    """The objects written, by URL, oldest run first."""
    dropped: tuple[str, ...] = ()
    """Entries removed unsent, each with why (its result file is gone or is not a result)."""
    left: int = 0
    """Entries still waiting."""
    problem: str = ""
    """Why the last attempt failed, when one did (no secret in it)."""


def directory(results_dir: Path) -> Path:
    return results_dir / OUTBOX


def queue(results_dir: Path, node: str, run_id: str) -> Path:
    """Put the result of `node`'s run `run_id` in the outbox (atomically); the entry's path."""
    name = f"{run_id}_{results.file_part(node)}{SUFFIX}"
    record = {"node": node, "run_id": run_id, "queued_at": results.timestamp(results.utcnow())}
    return results.write_json(directory(results_dir) / name, record)


def waiting(results_dir: Path) -> int:
    """How many results wait in the outbox (an unreadable entry counts: it waits for a person)."""
    try:
        return sum(1 for _ in directory(results_dir).glob(f"*{SUFFIX}"))
    except OSError:
        return 0


def entries(results_dir: Path) -> tuple[list[Entry], list[Path]]:
    """The waiting results, oldest run first (run ids sort by start time), and the entries that
    cannot be read (left where they are, and said)."""
    found: list[Entry] = []
    broken: list[Path] = []
    for path in sorted(directory(results_dir).glob(f"*{SUFFIX}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entry = Entry(path=path, node=str(data["node"]), run_id=str(data["run_id"]))
            results.path_for(results_dir, entry.node, entry.run_id)  # a run id that is one, or ConfigError
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            broken.append(path)
            continue
        found.append(entry)
    found.sort(key=lambda e: (e.run_id, e.node))
    return found, broken


def drain(
    results_dir: Path,
    url: str,
    *,
    patience_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Drained:
    """Send every waiting result to `url`, oldest first, within `patience_s` (default PATIENCE_S)."""
    deadline = clock() + (PATIENCE_S if patience_s is None else patience_s)
    found, _ = entries(results_dir)
    sent: list[str] = []
    dropped: list[str] = []
    problem = ""
    for entry in found:
        data, why = _result_bytes(results_dir, entry)
        if data is None:
            entry.path.unlink(missing_ok=True)
            dropped.append(f"{entry.path.name}: {why}")
            continue
        failures = 0
        while True:
            problem = _attempt(url, entry.key, data, deadline - clock())
            if not problem:
                entry.path.unlink(missing_ok=True)  # only now: until the store has it, the entry stays
                sent.append(f"{url}/{entry.key}")
                break
            failures += 1
            wait = min(LONGEST_WAIT_S, FIRST_WAIT_S * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            if clock() + wait + SHORTEST_ATTEMPT_S > deadline:  # no time for a fair try after the wait
                return Drained(sent=tuple(sent), dropped=tuple(dropped), left=waiting(results_dir), problem=problem)
            sleep(wait)
    return Drained(sent=tuple(sent), dropped=tuple(dropped), left=waiting(results_dir))


def deliver(
    results_dir: Path, node: str, run_id: str, url: str, *, send: bool = True, out: TextIO | None = None
) -> Drained:
    """After a run's result file is written: queue it, then (when `send`) drain the outbox, saying
    on `out` (stderr) what was sent and how many wait. Never raises for the store's sake: the
    run's verdict does not depend on it. `send` is False for a run asked to stop: its pod has
    seconds left, and the next run sends it."""
    out = out or sys.stderr
    try:
        queue(results_dir, node, run_id)
    except OSError as err:
        print(f"gpu-burnin: warning: the result {run_id} could not be put in the outbox: {err}", file=out)
    done = drain(results_dir, url) if send else Drained(left=waiting(results_dir))
    say(done, results_dir, out)
    return done


def say(done: Drained, results_dir: Path, out: TextIO) -> None:
    for url in done.sent:
        print(printable(f"gpu-burnin: result sent to {url}"), file=out)
    for why in done.dropped:
        print(printable(f"gpu-burnin: warning: outbox entry dropped unsent, {why}"), file=out)
    _, broken = entries(results_dir)
    for path in broken:
        print(printable(f"gpu-burnin: warning: {path} is not an outbox entry gpu-burnin can read; left as it is"),
              file=out)  # fmt: skip
    if done.left:
        why = f" (the store: {done.problem})" if done.problem else ""
        print(
            printable(
                f"gpu-burnin: warning: {done.left} result(s) wait in {directory(results_dir)} to be sent{why}; the "
                "next run with --results-url sends them, or gpu-burnin results push"
            ),
            file=out,
        )


def _attempt(url: str, key: str, data: bytes, limit_s: float) -> str:
    """One PUT, given at most `limit_s`: "" when the object is written, else why not. The request
    runs in a thread of its own, so that a store that never answers cannot hold the run."""
    from harness import store  # fsspec and the store's client load only when something is sent

    if limit_s <= 0:
        return "no time left to send"
    outcome: list[str] = []

    def send() -> None:
        try:
            store.put(url, key, data)
            outcome.append("")
        except store.StoreError as err:
            outcome.append(str(err))
        except Exception as err:  # noqa: BLE001 - a client's surprise is one more failed attempt
            outcome.append(store.describe(err))

    worker = threading.Thread(target=send, name="gpu-burnin-send", daemon=True)
    worker.start()
    worker.join(limit_s)
    return outcome[0] if outcome else f"no answer within {limit_s:.1f} s"


def _result_bytes(results_dir: Path, entry: Entry) -> tuple[bytes | None, str]:
    """The result file's bytes, when it is this node's run's result; else None and why."""
    path = results.path_for(results_dir, entry.node, entry.run_id)
    try:
        data = path.read_bytes()
        document = json.loads(data)
    except OSError as err:
        return None, f"{path}: {err.strerror or err}"
    except ValueError:
        return None, f"{path} is not a JSON document"
    if not isinstance(document, dict) or document.get("schema") != results.SCHEMA:
        return None, f"{path} is not a gpu-burnin result"
    if (document.get("node"), document.get("run_id")) != (entry.node, entry.run_id):
        return None, f"{path} holds another run's result"
    return data, ""


def add_commands(commands: Any) -> None:
    """`gpu-burnin results push`, into gpu-burnin's subcommands."""
    from harness import options

    group = commands.add_parser("results", help="result files: send those waiting in the outbox to the store")
    actions = group.add_subparsers(dest="results_command", required=True, parser_class=type(group))
    push = actions.add_parser(
        "push",
        help="send the results waiting in RESULTS/outbox to the store, oldest first",
        description="Send every result waiting in the outbox (a run's upload that failed) to URL/<node>/<run id>.json, "
        f"oldest first, retrying within {PATIENCE_S:.0f} s. Exit 0 when none is left waiting, 2 when some are, "
        "4 usage or configuration error.",
    )
    push.add_argument(
        "--results", type=options.given_path, default=options.DEFAULT_RESULTS, metavar="DIR",
        help=f"the results directory whose outbox to send (default ./{options.DEFAULT_RESULTS})",
    )  # fmt: skip
    push.add_argument("--results-url", type=options.results_url, required=True, metavar="URL", help="the store")
    push.set_defaults(handler=push_command)


def push_command(args: argparse.Namespace) -> int:
    """`gpu-burnin results push`: under the node's burn lock, so that no run drains at the same time."""
    if not args.results.is_dir():
        raise ConfigError("no such results directory", file=args.results, field=None)
    with lock.hold(args.results, "results-push"):
        done = drain(args.results, args.results_url)
    say(done, args.results, sys.stderr)
    if not done.sent and not done.left:
        print("gpu-burnin: nothing waits in the outbox", file=sys.stderr)
    return int(ExitCode.INCOMPLETE) if done.left else int(ExitCode.PASS)
