"""The `gpu-burnin` command.

Exit status, for every subcommand: 0 pass, 1 fail, 2 incomplete, 4 usage or
configuration error (nothing was run, nothing on the node was changed).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import harness
from harness import devices, options, runner
from harness.errors import ConfigError
from harness.verdict import ExitCode

TIMEOUT_BASE_S = 600.0
TIMEOUT_PER_DURATION = 6
"""The default watchdog: ten minutes plus six times the burn duration (one per test group)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, one prefix, exit 4: as every gpu-burnin error."""
        self.exit(int(ExitCode.USAGE), f"gpu-burnin: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpu-burnin", description="GPU burn-in tests with baselines and verdicts.")
    parser.add_argument("--version", action="version", version=f"gpu-burnin {harness.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser(
        "run",
        help="run the burn-in suite and print its verdict",
        description="Run the burn-in suite in a child pytest process under a watchdog. "
        "Exit 0 pass, 1 fail, 2 incomplete, 4 usage or configuration error.",
        epilog="Arguments after `--` go to pytest unchanged.",
    )
    options.add_to_argparse(run)
    run.add_argument(
        "--timeout",
        type=options.seconds,
        metavar="SECONDS",
        help=f"kill the whole run after this long (default {TIMEOUT_BASE_S:.0f} s + {TIMEOUT_PER_DURATION} x duration)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print the final result document on stdout (everything else goes to stderr), for scripts",
    )
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST-ARGS", help=argparse.SUPPRESS)
    run.set_defaults(handler=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed
        return stop.code if isinstance(stop.code, int) else int(ExitCode.USAGE)
    try:
        return int(args.handler(args))
    except ConfigError as err:
        print(f"gpu-burnin: error: {options.explain(err, 'cli')}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except Exception:  # noqa: BLE001 - a crash here says nothing about the GPUs: incomplete, never fail
        traceback.print_exc()
        print("gpu-burnin: internal error; the run is incomplete", file=sys.stderr)
        return int(ExitCode.INCOMPLETE)


def _run(args: argparse.Namespace) -> int:
    values = options.values_from(args)
    values["device"] = options.resolve_device(values["device"])
    if args.gpu_device == "auto" and values["device"] == "cpu":
        print("gpu-burnin: no NVIDIA driver on this machine; running the CPU self-test", file=sys.stderr)
    chosen = options.resolve(values)
    _check_fault_devices(chosen)
    values.update(results=chosen.results_dir, run_id=chosen.run_id)
    request = runner.RunRequest(
        options=chosen,
        argv=tuple(runner.pytest_argv(values, args.pytest_args)),
        timeout_s=args.timeout or TIMEOUT_BASE_S + TIMEOUT_PER_DURATION * chosen.profile.duration_s,
        json=args.json,
    )
    return runner.run(request)


def _check_fault_devices(chosen: options.RunOptions) -> None:
    """A fault must name a device this node has: checked here, so the error names --inject.
    Listing GPUs takes a worker, so only a fault on a device other than 0 pays for it."""
    named = {f.device for f in chosen.faults} - {0}
    if not named:
        return
    found = devices.discover(chosen.device, startup_timeout_s=chosen.profile.startup_timeout_s).devices
    indices = sorted(d.index for d in found)
    for fault in chosen.faults:
        if found and fault.device not in indices:
            raise ConfigError(f"{fault} names device {fault.device}; this node has {indices}", option="inject")


if __name__ == "__main__":
    sys.exit(main())
