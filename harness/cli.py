"""The `gpu-burnin` command.

Exit status, for every subcommand: 0 pass, 1 fail, 2 incomplete, 4 usage or
configuration error (nothing was run, nothing on the node was changed).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from harness import devices, profiles, runner
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
    run.add_argument(
        "--device",
        choices=("cuda", "cpu", "auto"),
        default="cuda",
        help="cuda (default); cpu for the self-test; auto: cpu only where no NVIDIA driver is installed",
    )
    run.add_argument("--profile", choices=sorted(profiles.PROFILES), default="quick")
    run.add_argument(
        "--duration", type=_positive, metavar="SECONDS", help="seconds each test burns (default: the profile's)"
    )
    run.add_argument(
        "-m", dest="markexpr", metavar="MARKEXPR", help="select tests by marker, as pytest -m (matmul, memory, ...)"
    )
    chosen = run.add_mutually_exclusive_group()
    chosen.add_argument("--baseline", type=Path, metavar="FILE", help="judge against this baseline file only")
    chosen.add_argument(
        "--baseline-dir", type=Path, metavar="DIR", help="baselines directory (default: the packaged ones)"
    )
    run.add_argument(
        "--results",
        type=Path,
        default=Path("gpu-burnin-results"),
        metavar="DIR",
        help="where the JSON result file goes (default: ./gpu-burnin-results)",
    )
    run.add_argument("--expect-gpus", type=int, metavar="N", help="fail unless exactly N GPUs are visible")
    run.add_argument(
        "--hang-timeout", type=_positive, metavar="SECONDS", help="seconds without progress before a worker is hung"
    )
    run.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="FAULT",
        help="inject a fault (see --gpu-inject in pytest --help)",
    )
    run.add_argument(
        "--timeout",
        type=_positive,
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
        print(f"gpu-burnin: error: {err}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except Exception:  # noqa: BLE001 - a crash here says nothing about the GPUs: incomplete, never fail
        traceback.print_exc()
        print("gpu-burnin: internal error; the run is incomplete", file=sys.stderr)
        return int(ExitCode.INCOMPLETE)


def _run(args: argparse.Namespace) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if devices.nvidia_driver_present() else "cpu"
        if device == "cpu":
            print("gpu-burnin: no NVIDIA driver on this machine; running the CPU self-test", file=sys.stderr)
    profile = profiles.by_name(args.profile)
    if device == "cpu":
        profile = profile.for_cpu()
    duration = args.duration or profile.duration_s
    request = runner.RunRequest(
        device=device,
        profile=args.profile,
        results=args.results,
        timeout_s=args.timeout or TIMEOUT_BASE_S + TIMEOUT_PER_DURATION * duration,
        duration=args.duration,
        markexpr=args.markexpr,
        baseline=args.baseline,
        baseline_dir=args.baseline_dir,
        expect_gpus=args.expect_gpus,
        hang_timeout=args.hang_timeout,
        inject=tuple(args.inject),
        pytest_args=tuple(args.pytest_args),
    )
    return runner.run(request)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
