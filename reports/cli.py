"""`gpu-burnin report` and `gpu-burnin baseline propose`: their arguments and the glue to reports/.

Only argparse and harness are imported here; pandas and plotly load when one of these
commands runs, so the node-side commands start as fast as before.

Exit status: 0 done, 2 nothing could be judged (no result read, nothing to propose),
4 usage or configuration error (nothing written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from harness import baselines, results
from harness.errors import ConfigError
from harness.verdict import ExitCode

if TYPE_CHECKING:
    from reports.load import Loaded
    from reports.review import Review


def add_commands(commands: Any) -> None:
    """Add `report` and `baseline propose` to gpu-burnin's subcommands."""
    report = commands.add_parser(
        "report",
        help="review many result files: fleet statistics, outliers, coverage, proposed baselines; an HTML report",
        description="Read result files (files, directories, globs) and write one self-contained HTML report: "
        "fleet statistics per GPU model and metric, outliers, failing and stale nodes, proposed floors and "
        "tolerances with their sensitivity. Unreadable files are listed and skipped. "
        "Exit 0 done, 2 no result could be read, 4 usage or configuration error.",
    )
    _sources(report)
    report.add_argument(
        "-o", "--output", type=Path, default=Path("gpu-burnin-report.html"), metavar="FILE",
        help="the HTML report (default gpu-burnin-report.html)",
    )  # fmt: skip
    report.add_argument("--csv", type=Path, metavar="FILE", help="also write the tidy table, one row a measurement")
    report.add_argument("--parquet", type=Path, metavar="FILE", help="the same table as Parquet")
    report.add_argument("--json", type=Path, metavar="FILE", help="the findings as JSON, for scripts and alerting")
    report.add_argument(
        "--baseline-dir", type=Path, metavar="DIR", help="the baselines to compare with (default: the packaged ones)"
    )
    report.add_argument(
        "--stale-days", type=_positive, default=7.0, metavar="DAYS",
        help="a node whose last run is older is stale (default 7)",
    )  # fmt: skip
    report.add_argument(
        "--outlier-z", type=_positive, default=6.0, metavar="Z",
        help="robust sigmas below the model's median that make a figure an outlier (default 6)",
    )  # fmt: skip
    report.add_argument(
        "--fell", type=_fraction, default=0.05, metavar="FRACTION",
        help="a GPU worse than its previous run by more than this share fell (default 0.05)",
    )  # fmt: skip
    _rule(report)
    report.set_defaults(handler=run_report)

    baseline = commands.add_parser("baseline", help="baseline files: propose new limits from the fleet")
    actions = baseline.add_subparsers(dest="baseline_command", required=True, parser_class=type(baseline))
    propose = actions.add_parser(
        "propose",
        help="propose floors and node tolerances for one baseline from the fleet's passing runs",
        description="Print, per metric, the current and proposed limit and node tolerance and how many of the "
        "fleet's GPUs each fails. Writes the proposal (a valid baseline file, provenance 'measured') only to "
        "-o FILE, and replaces an existing file (or, without -o, the baseline itself) only with --write. "
        "Exit 0 done, 2 no metric had enough passing GPUs, 4 usage or configuration error.",
    )
    _sources(propose)
    propose.add_argument("--baseline", type=Path, required=True, metavar="FILE", help="the current baseline file")
    propose.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the proposed baseline here")
    propose.add_argument(
        "--write", action="store_true", help="allow replacing an existing file: -o FILE, or without -o the baseline"
    )
    _rule(propose)
    propose.set_defaults(handler=run_propose)


def run_report(args: argparse.Namespace) -> int:
    from reports import export, html, review

    export.check_writable(args.output, args.csv, args.parquet, args.json)
    found = baselines.load_dir(args.baseline_dir) if args.baseline_dir else baselines.load_dir(baselines.default_dir())
    loaded = _load(args)
    settings = review.Settings(
        now=args.now or dt.datetime.now(dt.UTC),
        window=dt.timedelta(days=args.stale_days),
        limits=_limits(args),
        rule=_propose_rule(args),
    )
    done = review.review(loaded, settings, found)
    export.write_html(args.output, html.render(done))
    if args.json:
        export.write_json(args.json, done)
    if args.csv:
        export.write_csv(args.csv, loaded.measurements)
    if args.parquet:
        export.write_parquet(args.parquet, loaded.measurements)
    print(summary_text(done, args.output))
    return int(ExitCode.INCOMPLETE if loaded.runs.empty else ExitCode.PASS)


def run_propose(args: argparse.Namespace) -> int:
    from reports import export, propose, tomlfile

    current = baselines.load_file(args.baseline)
    target = args.output or (args.baseline if args.write else None)
    if target is not None:
        export.check_writable(target)
        if target.exists() and not args.write:
            raise ConfigError("exists; pass --write to replace it (nothing was written)", file=target)
    loaded = _load(args)
    for error in loaded.errors:
        print(f"gpu-burnin: skipped {error}", file=sys.stderr)
    proposal = propose.propose(loaded.measurements, current, _propose_rule(args), args.now or dt.datetime.now(dt.UTC))
    print(proposal.diff())
    if not any(c.gpus >= args.min_gpus for c in proposal.changes):
        print(
            f"gpu-burnin: nothing to propose: no metric of {args.baseline} has {args.min_gpus} passing GPUs "
            "in these results; nothing written",
            file=sys.stderr,
        )
        return int(ExitCode.INCOMPLETE)
    if target is None:
        print("dry run: nothing written (-o FILE writes the proposal; --write replaces the baseline)")
        return int(ExitCode.PASS)
    tomlfile.write_text(target, proposal.text())
    print(f"wrote {target}")
    return int(ExitCode.PASS)


def summary_text(review: Review, output: Path) -> str:
    s = review.summary()
    verdicts = s["latest_verdicts"]
    lines = [
        f"gpu-burnin report: {s['files']} files ({s['broken_files']} broken, skipped), {s['runs']} runs, "
        f"{s['nodes']} nodes, {s['gpus']} GPUs, {s['measurements']} measurements, "
        f"{_minute(s['first'])} to {_minute(s['last'])}",
        f"latest run per node: {verdicts['pass']} pass, {verdicts['fail']} fail, {verdicts['incomplete']} incomplete",
    ]
    codes = review.failures.drop_duplicates(["node", "code"])["code"].value_counts()
    if not codes.empty:
        lines.append("failing nodes by code: " + ", ".join(f"{code} {n}" for code, n in codes.items()))
    lines += [
        f"outliers: {s['outlier_figures']} figures on {s['outlier_gpus']} GPUs; fell between runs: {s['fell_figures']}",
        f"coverage: {s['stale_nodes']} nodes not tested in {review.coverage.window.total_seconds() / 86400:g} days, "
        f"{s['unfinished_preflights']} with an unfinished preflight",
    ]
    if review.uncovered:
        lines.append(f"no baseline covers: {', '.join(sorted(set(review.uncovered)))}")
    for p in review.proposals:
        changed = [c.metric for c in p.changes if c.changed]
        lines.append(f"proposal for {p.current.model}: {len(changed)} of {len(p.changes)} metrics would change")
    table = review.sensitivity
    if not table.empty:
        lines.append(
            f"node tolerances meeting the sensitivity goal (a GPU 5% slow caught 99%, at most 0.1% false flags): "
            f"{int(table['meets_goal'].sum())} of {len(table)} as set, {int(table['proposed_meets_goal'].sum())} "
            "as proposed"
        )
    lines.append(f"report: {output}")
    return "\n".join(lines)


def _minute(moment: str | None) -> str:
    return "never" if moment is None else moment[:16].replace("T", " ")


def _load(args: argparse.Namespace) -> Loaded:
    from reports.load import load_results

    show = args.progress or sys.stderr.isatty()
    return load_results(*args.results, progress=Progress(sys.stderr) if show else None)


class Progress:
    """`reading result files: 1234/7500` on one line of stderr, at most four times a second."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.shown < 0.25:
            return
        self.shown = now
        self.stream.write(f"\rgpu-burnin: reading result files {done}/{total}")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def _sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="result files, directories and globs")
    parser.add_argument(
        "--now", type=_moment, default=None, metavar="TIME",
        help="what coverage and dates are measured from, ISO 8601 (default: the current time)",
    )  # fmt: skip
    parser.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a tty")
    parser.set_defaults(now=None)


def _rule(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--k", type=_positive, default=6.0, metavar="K",
        help="proposed limits sit K robust sigmas (1.4826 x MAD) from the median (default 6)",
    )  # fmt: skip
    parser.add_argument(
        "--min-gpus", type=_count, default=50, metavar="N",
        help="keep a limit measured on fewer passing GPUs (default 50)",
    )  # fmt: skip
    parser.add_argument(
        "--min-nodes", type=_count, default=10, metavar="N",
        help="keep a tolerance measured on fewer passing nodes (default 10)",
    )  # fmt: skip


def _limits(args: argparse.Namespace) -> Any:
    from reports.stats import Limits

    return Limits(outlier_z=args.outlier_z, fell_share=args.fell)


def _propose_rule(args: argparse.Namespace) -> Any:
    from reports.propose import Rule

    return Rule(k=args.k, min_gpus=args.min_gpus, min_nodes=args.min_nodes)


def _moment(text: str) -> dt.datetime:
    try:
        moment = results.parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time such as 2026-11-28T00:00:00Z, got {text!r}") from None
    return moment


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {text}")
    return value
