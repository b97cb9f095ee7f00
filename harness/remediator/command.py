"""`gpu-burnin remediator`: its arguments, and the process from them to an exit code.

In the Deployment it runs until stopped (exit 0 on SIGTERM): a thread renews or seeks the
Lease every retry period, a thread keeps the view current through its watch, and the main
loop runs a pass whenever the view changed (after `settle_s`, so that a roll-out's
hundreds of requests are decided together) or `interval_s` passed, while this replica
leads. `--once` takes the Lease for one pass, gives it back and exits: 0 when the pass was
carried out whole, 2 when another replica holds the Lease or an API call failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness import options
from harness.kube.api import Api, KubeError, Patience, connect
from harness.kube.node import Marks
from harness.remediator import act, brake
from harness.remediator.config import DRAINS, WEEK_S, Config
from harness.remediator.leader import Elector, Timing
from harness.remediator.view import View
from harness.verdict import ExitCode

DEFAULTS = Config(identity="-")
LONG = options.bounded(0.0, 366 * 24 * 3600.0, "a number of seconds")

if TYPE_CHECKING:  # prometheus_client, loaded only by a remediator that runs
    from harness.remediator.metrics import Metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The remediator's own options (the API, mark and fleet options are the CLI's shared ones)."""
    parser.add_argument(
        "--max-unhealthy-nodes",
        type=options.count,
        default=DEFAULTS.max_nodes,
        metavar="N",
        help=f"take out at most this many GPU nodes, whatever the share (default {DEFAULTS.max_nodes})",
    )
    parser.add_argument(
        "--drain",
        choices=DRAINS,
        default=DEFAULTS.drain,
        help="evict the GPU pods of nodes taken out for a critical failure, for any failure, or never "
        f"(default {DEFAULTS.drain})",
    )
    parser.add_argument(
        "--drain-deadline",
        type=LONG,
        default=DEFAULTS.drain_deadline_s,
        metavar="SECONDS",
        help=f"report a drain still unfinished this long after the take-out as overdue (default {WEEK_S:.0f})",
    )
    parser.add_argument(
        "--force-after",
        type=LONG,
        metavar="SECONDS",
        help="delete GPU pods still on a drained node this long after the take-out, past their disruption "
        "budgets (default: never; needs `delete pods`)",
    )
    parser.add_argument(
        "--namespace",
        metavar="NAMESPACE",
        help="the tool's namespace: the Lease and the Events (default: $POD_NAMESPACE, else gpu-burnin)",
    )
    parser.add_argument("--lease-name", default=DEFAULTS.lease_name, metavar="NAME", help="the Lease's name")
    parser.add_argument(
        "--identity", metavar="ID", help="this replica's name in the Lease (default: $POD_NAME, else the host name)"
    )
    for flag, default, what in (
        ("--lease-duration", DEFAULTS.timing.lease_s, "a holder that stops renewing holds the Lease this long"),
        ("--renew-deadline", DEFAULTS.timing.renew_deadline_s, "the leader stops acting unrenewed this long"),
        ("--retry-period", DEFAULTS.timing.retry_s, "seconds between tries for the Lease"),
        ("--interval", DEFAULTS.interval_s, "the longest between two passes"),
    ):
        parser.add_argument(
            flag, type=options.seconds, default=default, metavar="S", help=f"{what} (default {default:g})"
        )
    parser.add_argument(
        "--metrics-port",
        type=options.whole(0, 65535, "0: not at all"),
        default=DEFAULTS.metrics_port,
        metavar="PORT",
        help=f"serve /metrics here (default {DEFAULTS.metrics_port}; 0: not at all)",
    )
    parser.add_argument("--once", action="store_true", help="one pass, then exit (for a person, and for tests)")


def config_from(args: argparse.Namespace, marks: Marks, selector: str, share: float) -> Config:
    return Config(
        identity=args.identity or os.environ.get("POD_NAME") or socket.gethostname(),
        marks=marks,
        gpu_selector=selector,
        max_share=share,
        max_nodes=args.max_unhealthy_nodes,
        drain=args.drain,
        drain_deadline_s=args.drain_deadline,
        force_after_s=args.force_after,
        lease_name=args.lease_name,
        timing=Timing(lease_s=args.lease_duration, renew_deadline_s=args.renew_deadline, retry_s=args.retry_period),
        interval_s=args.interval,
        metrics_port=0 if args.once else args.metrics_port,
    )


def main(args: argparse.Namespace, config: Config) -> int:
    """Everything checked first (exit 4 on ConfigError, raised to the CLI), then run."""
    api = connect(args.kubeconfig, patience=Patience(total_s=args.api_timeout), namespace=args.namespace)
    process = Process(api, config)
    if args.once:
        return process.once()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return process.serve(stop)


def say(line: str) -> None:
    print(f"gpu-burnin remediator: {line}", file=sys.stderr, flush=True)


class Process:
    """The remediator's parts, wired; `clock` and `wall` are injectable for tests."""

    def __init__(
        self,
        api: Api,
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        log: Callable[[str], None] = say,
    ):
        self.api = api
        self.config = config
        self.say = log
        self.metrics = _metrics()
        self.view = View(api, config.gpu_selector, config.marks, say=log)
        self.elector = Elector(api, config.lease_name, config.identity, config.timing, clock=clock, wall=wall, say=log)
        self.remediator = act.Remediator(
            api, self.view, config, leading=self.elector.leading, wall=wall, say=log, metrics=self.metrics
        )

    def once(self) -> int:
        if not self.elector.tick():
            lease = f"{self.api.namespace}/{self.config.lease_name}"
            self.say(
                f"error: the lease {lease} is held by {self.elector.holder() or 'another replica'}: nothing was done"
            )
            return int(ExitCode.INCOMPLETE)
        try:
            self.view.relist()
            plan = self.remediator.run_pass()
        except (KubeError, act.LostLead) as err:
            self.say(f"error: the pass was cut short: {err}")
            return int(ExitCode.INCOMPLETE)
        finally:
            self.elector.release()
        self.say(summary(plan, self.view.snapshot(), self.config.marks))
        return int(ExitCode.INCOMPLETE if self.remediator.errors else ExitCode.PASS)

    def serve(self, stop: threading.Event) -> int:
        """Run until `stop` is set: 0."""
        stop_http = None
        if self.config.metrics_port:
            port, stop_http = self.metrics.exporter.serve(self.config.metrics_port)
            self.say(f"serving /metrics on port {port}")
        renew = threading.Thread(target=self._renew, args=(stop,), name="gpu-burnin-lease", daemon=True)
        follow = threading.Thread(target=self.view.follow, name="gpu-burnin-view", daemon=True)
        renew.start()
        follow.start()
        self.say(f"started as {self.config.identity}; watching the GPU nodes ({self.config.gpu_selector})")
        led = False
        try:
            while not stop.is_set():
                leading = self.elector.leading() and bool(self.view.version)
                self.metrics.leader.set(1 if leading else 0)
                if not leading:
                    led = False
                    stop.wait(self.config.timing.retry_s)
                    continue
                if not led:
                    self.remediator.begin()
                    led = True
                self.view.changed.clear()
                try:
                    self.remediator.run_pass()
                except act.LostLead as err:
                    self.say(f"stopped acting mid-pass: {err}")
                    continue
                except KubeError as err:
                    self.metrics.api_errors.inc()
                    self.say(f"the pass was cut short ({err}); again at the next")
                if self.view.changed.wait(self.config.interval_s) and not stop.is_set():
                    stop.wait(self.config.settle_s)  # the rest of a roll-out's requests, decided together
        finally:
            stop.set()
            self.view.stop()
            renew.join()
            follow.join(timeout=5)
            self.elector.release()
            if stop_http is not None:
                stop_http()
        self.say("stopped")
        return int(ExitCode.PASS)

    def _renew(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.elector.tick()
            stop.wait(self.config.timing.retry_s)
        self.view.changed.set()  # wake the main loop


def summary(plan: brake.Plan, seen: list[brake.Seen], marks: Marks) -> str:
    unhealthy = marks.unhealthy_label.value
    out = sum(1 for n in seen if not n.preflight and n.out(unhealthy))
    held = f"; the brake holds {len(plan.braked)} request(s)" if plan.held else ""
    return (
        f"pass done: {len(plan.take)} taken out, {out} of {plan.in_service} GPU nodes in service out "
        f"(limit {plan.limit}){held}"
    )



def _metrics() -> Metrics:
    from harness.remediator.metrics import Metrics  # prometheus_client: only when the remediator runs

    return Metrics()
