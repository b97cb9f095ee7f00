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

from harness import options, runner
from harness.errors import ConfigError
from harness.verdict import ExitCode

TIMEOUT_BASE_S = 600.0
TIMEOUT_PER_DURATION = 6
"""The default watchdog: ten minutes plus six times the burn duration (one per test group)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpu-burnin", description="GPU burn-in tests with baselines and verdicts.")
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
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST-ARGS", help=argparse.SUPPRESS)
    run.set_defaults(handler=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    values.update(results=chosen.results_dir, run_id=chosen.run_id)
    request = runner.RunRequest(
        options=chosen,
        argv=tuple(runner.pytest_argv(values, args.pytest_args)),
        timeout_s=args.timeout or TIMEOUT_BASE_S + TIMEOUT_PER_DURATION * chosen.profile.duration_s,
    )
    return runner.run(request)


if __name__ == "__main__":
    sys.exit(main())
