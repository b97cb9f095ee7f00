"""The `gpu-burnin` command.

    gpu-burnin run         the suite, here; exit = verdict
    gpu-burnin preflight   the suite, then release or hold this node (the DaemonSet)
    gpu-burnin periodic    the suite, then report on this node, asking for it to be taken out on a failure (the CronJob)
    gpu-burnin retest      put a repaired node back in preflight
    gpu-burnin status      GPU nodes by state
    gpu-burnin watch       watch this node's GPUs through NVML, all the time (the watch DaemonSet)
    gpu-burnin watch-ready the watch pod's readiness probe: exit 0 while its last poll is recent
    gpu-burnin remediator  take failing nodes out, under the fleet's brake, and drain critical ones (the Deployment)
    gpu-burnin report      review many result files: statistics, outliers, coverage; an HTML report
    gpu-burnin baseline propose   new floors and tolerances for a baseline, from the fleet
    gpu-burnin results push       send the results waiting in the outbox to object storage

Exit status, for every subcommand: 0 pass, 1 fail, 2 incomplete, 4 usage or
configuration error (nothing was run, nothing on the node was changed).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn, TypeVar

import harness
from harness import devices, entrypoints, options, outbox, results, runner
from harness.errors import ConfigError
from harness.kube.actions import Fleet
from harness.kube.api import Patience
from harness.kube.node import PREFIX, Label, Marks, Taint, check_node_name, check_prefix
from harness.remediator import command as remediator_command
from harness.terminal import printable, shortened
from harness.verdict import ExitCode
from harness.watch import command as watch_command
from harness.watch import ready as watch_ready
from reports import cli as report_cli

T = TypeVar("T")
DEFAULTS = Marks()
FLEET = Fleet()
MARK_FLAGS = (
    ("--preflight-taint", "taint", DEFAULTS.preflight_taint, "the taint new nodes join with"),
    ("--preflight-label", "label", DEFAULTS.preflight_label, "the label new nodes join with"),
    ("--unhealthy-taint", "taint", DEFAULTS.unhealthy_taint, "the taint the remediator puts on a failing node"),
    ("--unhealthy-label", "label", DEFAULTS.unhealthy_label, "the health label (KEY=its value once taken out)"),
)
MARK_FIELDS = {flag.removeprefix("--").replace("-", "_"): flag for flag, *_ in MARK_FLAGS}
"""Marks field (and argparse dest) -> its flag."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, one prefix, exit 4: as every gpu-burnin error (what the user typed shown escaped)."""
        self.exit(int(ExitCode.USAGE), f"gpu-burnin: error: {printable(message)} (see {self.prog} --help)\n")


class _CommandParser(_Parser):
    """A subcommand's parser: it refuses what it does not know itself, so the error points at its
    own help (`gpu-burnin run --help`), where the top-level parser would point at gpu-burnin's."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra:
            after = "; pytest's own arguments go after --" if hasattr(parsed, "pytest_args") else ""
            self.error(f"unrecognized arguments: {' '.join(extra)}{after}")
        return parsed, extra


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpu-burnin", description="GPU burn-in tests with baselines and verdicts.")
    parser.add_argument("--version", action="version", version=f"gpu-burnin {harness.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    run = commands.add_parser(
        "run",
        help="run the burn-in suite and print its verdict",
        description="Run the burn-in suite in a child pytest process under a watchdog. "
        "Exit 0 pass, 1 fail, 2 incomplete, 4 usage or configuration error.",
        epilog="Arguments after `--` go to pytest unchanged.",
    )
    _suite_arguments(run)
    run.set_defaults(handler=_run)

    preflight = commands.add_parser(
        "preflight",
        help="run the suite on this node, then release it from preflight on a pass (the DaemonSet's entrypoint)",
        description="Run the suite; write the result; then on a pass remove the preflight taint and label, "
        "and otherwise keep the taint and label the node failed or incomplete, with a condition and an Event.",
        epilog="Arguments after `--` go to pytest unchanged.",
    )
    _suite_arguments(preflight)
    _node_arguments(preflight)
    preflight.add_argument(
        "--stay",
        action="store_true",
        help="after acting, wait to be stopped instead of exiting (in a DaemonSet, so the pod is not restarted)",
    )
    preflight.add_argument(
        "--reuse-within",
        type=options.seconds_or_zero,
        default=3600.0,
        metavar="SECONDS",
        help="act on this node's last preflight result, if this recent and from the same options, instead of "
        "burning again (after a failed node update; default 3600; 0: never)",
    )
    preflight.add_argument(
        "--preflight-retries",
        type=options.whole(0, entrypoints.RETRIES_MAX),
        default=3,
        metavar="N",
        help=f"burn again this many times after an incomplete run, each a new run with its own result, before "
        f"marking the node incomplete for a person (a failure is never retried; 0 to {entrypoints.RETRIES_MAX}; "
        "default 3)",
    )
    preflight.add_argument(
        "--preflight-retry-wait",
        type=options.seconds,
        default=60.0,
        metavar="SECONDS",
        help=f"wait this long before the first retry, twice as long before each next (at most "
        f"{entrypoints.RETRY_WAIT_MAX_S:.0f}; default 60)",
    )
    preflight.set_defaults(handler=_preflight)

    periodic = commands.add_parser(
        "periodic",
        help="run the suite on this node, then ask for it to be taken out on a failure (the CronJob's entrypoint)",
        description="Run the suite; write the result; then on a pass refresh the node's condition, and on a "
        "failure label the node gpu-burnin/health=failing with its severity: a request the remediator serves "
        "under the fleet's brake. It writes only its own node.",
        epilog="Arguments after `--` go to pytest unchanged.",
    )
    _suite_arguments(periodic)
    _node_arguments(periodic)
    periodic.add_argument(
        "--incomplete-limit",
        type=options.count,
        default=FLEET.incomplete_limit,
        metavar="N",
        help=f"this many incomplete runs in a row count as a failure (default {FLEET.incomplete_limit})",
    )
    periodic.set_defaults(handler=_periodic)

    retest = commands.add_parser(
        "retest",
        help="put a repaired node back in preflight, so the DaemonSet burns it again",
        description="Add the preflight taint and pending label, remove gpu-burnin's unhealthy taint and label, "
        "and lift the cordon if gpu-burnin set it.",
    )
    retest.add_argument("--node", required=True, type=_NODE_NAME, metavar="NAME", help="the node")
    _kube_arguments(retest)
    retest.set_defaults(handler=_retest)

    status = commands.add_parser(
        "status",
        help="GPU nodes by state: preflight pending, failed, incomplete, unhealthy, healthy, never tested",
        description="One read-only list of the GPU nodes, with how long each has been in its state, its last "
        "result and finding codes. Nodes pending in preflight past --pending-limit are called out.",
    )
    _kube_arguments(status)
    _fleet_arguments(status)
    status.add_argument(
        "--pending-limit",
        type=options.seconds,
        default=7200.0,
        metavar="SECONDS",
        help="call out nodes pending in preflight longer than this (default 7200)",
    )
    status.add_argument("--json", action="store_true", help="print the list as JSON")
    status.set_defaults(handler=_status)

    watch = commands.add_parser(
        "watch",
        help="watch this node's GPUs through NVML without taking them, and report what the suite would fail",
        description="Poll NVML health and listen for Xid events, judge them with the suite's health rules and "
        "the baselines' thresholds, and record each finding, or ask for the node to be taken out, once per "
        "finding, each action journaled first; it writes only its own node. Exit 0 when stopped, 2 when the "
        "node cannot be read at start, 4 for bad options; NVML missing or wedged never ends it (the condition "
        "says Unknown and NVML is tried again).",
    )
    _node_arguments(watch)
    watch_command.add_arguments(watch)
    watch.set_defaults(handler=_watch)

    ready = commands.add_parser(
        "watch-ready",
        help="the watch pod's readiness probe: exit 0 while the watch's last poll is recent, else 1",
        description="Read the time of the watch's last poll from its state directory: exit 0 when it is younger "
        "than --max-age, 1 (one line why) when it is older or missing, 4 for bad options. No API call.",
    )
    watch_ready.add_arguments(ready)
    ready.set_defaults(handler=watch_ready.main)

    remediator = commands.add_parser(
        "remediator",
        help="take out the nodes that ask for it, under the fleet's brake, and drain critical ones (the Deployment)",
        description="Keep a metadata-only view of the GPU nodes; for each node labelled gpu-burnin/health=failing, "
        "oldest request first, cordon it, taint it gpu-burnin/unhealthy:NoSchedule and label it unhealthy, as "
        "long as the brake allows (--max-unhealthy-share and --max-unhealthy-nodes; always at least one); evict "
        "the GPU pods of critical ones through the Eviction API. One replica acts, holding a Lease. Exit 0 when "
        "stopped; --once: one pass, exit 0, or 2 when it could not be carried out whole.",
    )
    _kube_arguments(remediator)
    _fleet_arguments(remediator)
    _brake_argument(remediator)
    remediator_command.add_arguments(remediator)
    remediator.set_defaults(handler=_remediator)
    report_cli.add_commands(commands)  # report, baseline propose: their logic is in reports/
    outbox.add_commands(commands)  # results push
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed
        return stop.code if isinstance(stop.code, int) else int(ExitCode.USAGE)
    except OSError as err:  # a flag's check that looked at the filesystem and could not: still a usage error
        print(f"gpu-burnin: error: {printable(shortened(str(err.filename or '')))}: {err.strerror}", file=sys.stderr)
        return int(ExitCode.USAGE)
    try:
        return int(args.handler(args))
    except ConfigError as err:
        print(f"gpu-burnin: error: {printable(options.explain(err, 'cli'))}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except OSError as err:
        if err.errno not in USAGE_ERRNOS:
            return _internal(err)
        # A path given that cannot even be looked up: nothing has run.
        print(f"gpu-burnin: error: {printable(shortened(str(err.filename or '')))}: {err.strerror}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except Exception as err:  # noqa: BLE001 - a crash here says nothing about the GPUs: incomplete, never fail
        return _internal(err)


USAGE_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})
"""Errors only a path the user gave can cause: a name too long to look up, a loop of links."""


def _internal(err: BaseException) -> int:
    traceback.print_exception(err)
    print("gpu-burnin: internal error; the run is incomplete", file=sys.stderr)
    return int(ExitCode.INCOMPLETE)


def _suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The run options, the watchdog, the metrics file, and pytest's own arguments."""
    options.add_to_argparse(parser)
    parser.add_argument(
        "--timeout",
        type=options.run_seconds,
        metavar="SECONDS",
        help=f"kill the whole run after this long, at least {options.MIN_RUN_TIMEOUT_S:g} s "
        f"(default {options.TIMEOUT_BASE_S:.0f} s + {options.TIMEOUT_PER_DURATION} x duration)",
    )
    parser.add_argument(
        "--metrics-textfile",
        type=options.output_file,
        metavar="FILE",
        help="also write the result as Prometheus metrics here, for node-exporter's textfile collector",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the final result document on stdout as one JSON line (everything else goes to stderr), "
        "for scripts and log pipelines",
    )
    parser.add_argument("pytest_args", nargs="*", metavar="-- PYTEST-ARGS", help=argparse.SUPPRESS)


def _kube_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="the cluster's kubeconfig (default: $KUBECONFIG, ~/.kube/config, then the pod's service account)",
    )
    parser.add_argument(
        "--api-timeout",
        type=options.seconds,
        default=Patience().total_s,
        metavar="SECONDS",
        help=f"keep retrying one API call (429, 5xx, timeouts) at most this long (default {Patience().total_s:.0f})",
    )
    parser.add_argument(
        "--mark-prefix",
        type=_mark_type(check_prefix, "--mark-prefix"),
        default=PREFIX,
        metavar="PREFIX",
        help=f"the prefix of every taint and label key gpu-burnin writes (default {PREFIX}); the flags below "
        "take only keys under it",
    )
    for flag, kind, default, what in MARK_FLAGS:
        parse: Callable[[str], object] = _mark_type(Taint.parse if kind == "taint" else Label.parse, flag)
        parser.add_argument(flag, type=parse, metavar=kind.upper(), help=f"{what} (default {default})")


def _node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node", type=_NODE_NAME, metavar="NAME", help="this node (default: $NODE_NAME, from the downward API)"
    )
    _kube_arguments(parser)


def _brake_argument(parser: argparse.ArgumentParser) -> None:
    share = remediator_command.DEFAULTS.max_share
    parser.add_argument(
        "--max-unhealthy-share",
        type=_share,
        default=share,
        metavar="FRACTION",
        help="take out at most this share of the GPU nodes in service, counting those out for any reason "
        f"(always at least one; default {share})",
    )


def _fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpu-node-selector",
        default=FLEET.gpu_selector,
        metavar="SELECTOR",
        help=f"the label selector of the fleet's GPU nodes (default {FLEET.gpu_selector})",
    )


def _run(args: argparse.Namespace) -> int:
    values = _values(args)
    chosen = options.resolve({**values, "entrypoint": "run"})
    options.check_fault_devices(chosen)
    metrics = _metrics_module() if args.metrics_textfile is not None else None
    values.update(results=chosen.results_dir)
    request = runner.RunRequest(
        options=chosen,
        argv=tuple(runner.pytest_argv(values, args.pytest_args)),
        timeout_s=args.timeout or options.default_timeout(chosen),
        json=args.json,
    )
    code = runner.run(request)
    if metrics is not None and code != ExitCode.USAGE:
        path = results.path_for(chosen.results_dir, devices.node_name(), chosen.run_id)
        try:
            metrics.write(args.metrics_textfile, results.load(path), outbox=outbox.waiting(chosen.results_dir))
        except ConfigError as err:
            print(f"gpu-burnin: warning: {options.explain(err, 'cli')}", file=sys.stderr)
    return code


def _metrics_module() -> ModuleType:
    """harness.metrics, imported only for a run that writes a metrics file: a GPU box without
    prometheus_client runs everything else. Checked before the run, so no burn is wasted."""
    try:
        from harness import metrics
    except ImportError as err:
        problem = f"needs prometheus_client, which cannot be imported: {err}"
        raise ConfigError(problem, option="--metrics-textfile") from err
    return metrics


def _preflight(args: argparse.Namespace) -> int:
    command = _node_command(
        args,
        stay=args.stay,
        reuse_within_s=args.reuse_within,
        retries=args.preflight_retries,
        retry_wait_s=args.preflight_retry_wait,
    )
    with runner.documents_on_stdout(args.json):
        return entrypoints.preflight(command, _values(args, node=True), args.pytest_args, args.timeout)


def _periodic(args: argparse.Namespace) -> int:
    with runner.documents_on_stdout(args.json):
        return entrypoints.periodic(_node_command(args), _values(args, node=True), args.pytest_args, args.timeout)


def _retest(args: argparse.Namespace) -> int:
    return entrypoints.retest(args.node, _access(args), _marks(args))


def _status(args: argparse.Namespace) -> int:
    fleet = Fleet(gpu_selector=args.gpu_node_selector)
    return entrypoints.status(_access(args), _marks(args), fleet, args.pending_limit, args.json)


def _watch(args: argparse.Namespace) -> int:
    return watch_command.main(args, entrypoints.node_from(args.node), _marks(args))


def _remediator(args: argparse.Namespace) -> int:
    config = remediator_command.config_from(args, _marks(args), args.gpu_node_selector, args.max_unhealthy_share)
    return remediator_command.main(args, config)


def _access(args: argparse.Namespace) -> entrypoints.Access:
    return entrypoints.Access(kubeconfig=args.kubeconfig, patience=Patience(total_s=args.api_timeout))


def _values(args: argparse.Namespace, *, node: bool = False) -> dict[str, object]:
    """The run options as parsed. For a node's verdict (`node`), `auto` means the GPUs: a node whose
    driver is not visible is not a node to run the CPU self-test on."""
    values = options.values_from(args)
    values["entrypoint"] = args.command  # the suite's own rules (-m) and gpu-burnin's flags in messages
    values["device"] = "cuda" if node and values["device"] == "auto" else options.resolve_device(str(values["device"]))
    if args.gpu_device == "auto" and values["device"] == "cpu":
        print("gpu-burnin: no NVIDIA driver on this machine; running the CPU self-test", file=sys.stderr)
    return values


def _node_command(args: argparse.Namespace, **extra: object) -> entrypoints.NodeCommand:
    fleet = Fleet(
        gpu_selector=getattr(args, "gpu_node_selector", FLEET.gpu_selector),
        incomplete_limit=getattr(args, "incomplete_limit", FLEET.incomplete_limit),
    )
    return entrypoints.NodeCommand(
        node=entrypoints.node_from(args.node),
        access=_access(args),
        marks=_marks(args),
        fleet=fleet,
        metrics_textfile=args.metrics_textfile,
        **extra,  # type: ignore[arg-type]
    )


def _marks(args: argparse.Namespace) -> Marks:
    """The marks as given, each key under --mark-prefix (ConfigError naming the flag otherwise)."""
    defaults = Marks.under(args.mark_prefix)
    given = {field: getattr(args, field) for field in MARK_FIELDS}
    marks = dataclasses.replace(defaults, **{k: v for k, v in given.items() if v is not None})
    return marks.check(args.mark_prefix, MARK_FIELDS)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text}")
    return value


def _mark_type(parse: Callable[..., T], flag: str) -> Callable[[str], T]:
    """A taint or label parser as an argparse type: its ConfigError becomes argparse's usage error."""

    def typed(text: str) -> T:
        try:
            return parse(text, option=flag)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(err.problem) from None

    return typed


_NODE_NAME = _mark_type(lambda text, option: check_node_name(text, option=option), "--node")

if __name__ == "__main__":
    sys.exit(main())
