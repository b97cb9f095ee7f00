"""`gpu-burnin report` and `gpu-burnin baseline propose`: their arguments and the glue to reports/.

Only argparse and harness are imported here; pandas and plotly load when one of these
commands runs, so the node-side commands start as fast as before.

Every output goes through harness.outputs: a regular file is replaced whole, a device, a FIFO
or `-` (standard output) is written through, a link's target is written, and an output that
is one of the inputs is refused.

Exit status: 0 done, 2 nothing could be judged (no result read, nothing to propose),
4 usage or configuration error (nothing written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from harness import baselines, options, outputs
from harness.errors import ConfigError
from harness.verdict import ExitCode, Status
from reports.settings import MAX_SIGMAS, MAX_STALE_DAYS, STALE_DAYS, Limits, Rule, default

if TYPE_CHECKING:
    from reports.review import Review

_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
OUTPUTS = "- is standard output; a device or FIFO is written through, a link's target written; never an input"


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
        "-o", "--output", type=_path, default=Path("gpu-burnin-report.html"), metavar="FILE",
        help=f"the HTML report (default gpu-burnin-report.html; {OUTPUTS})",
    )  # fmt: skip
    report.add_argument("--csv", type=_path, metavar="FILE", help="also write the tidy table, one row a measurement")
    report.add_argument("--parquet", type=_path, metavar="FILE", help="the same table as Parquet")
    report.add_argument("--json", type=_path, metavar="FILE", help="the findings as JSON, for scripts and alerting")
    report.add_argument(
        "--baseline-dir", type=_path, metavar="DIR", help="the baselines to compare with (default: the packaged ones)"
    )
    report.add_argument(
        "--stale-days", type=options.bounded(0, MAX_STALE_DAYS, "a number of days"), default=STALE_DAYS,
        metavar="DAYS", help=f"a node whose last run is older is stale (default {STALE_DAYS:g})",
    )  # fmt: skip
    report.add_argument(
        "--outlier-z", type=options.bounded(0, MAX_SIGMAS, "a number of robust sigmas"),
        default=default(Limits, "outlier_z"), metavar="Z",
        help="robust sigmas below the model's median that make a figure an outlier (default %(default)g)",
    )  # fmt: skip
    report.add_argument(
        "--fell", type=options.bounded(0, 1, "a fraction"), default=default(Limits, "fell_share"),
        metavar="FRACTION", help="a GPU worse than its previous run by more than this share fell (default %(default)g)",
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
    propose.add_argument("--baseline", type=_path, required=True, metavar="FILE", help="the current baseline file")
    propose.add_argument(
        "-o", "--output", type=_path, metavar="FILE", help=f"write the proposed baseline here ({OUTPUTS})"
    )
    propose.add_argument(
        "--write", action="store_true", help="allow replacing an existing file: -o FILE, or without -o the baseline"
    )
    _rule(propose)
    propose.set_defaults(handler=run_propose)


def run_report(args: argparse.Namespace) -> int:
    from reports import export, html, load, review

    directory = args.baseline_dir or baselines.default_dir()
    paths, missing = load.result_files(args.results)
    wanted = {"--output": args.output, "--json": args.json, "--csv": args.csv, "--parquet": args.parquet}
    outputs.check_outputs(wanted, [*_local(paths), *sorted(directory.glob("*.toml"))])
    found = baselines.load_dir(directory)
    loaded = load.load_files(paths, missing, progress=_progress(args))
    settings = review.Settings(
        now=args.now or dt.datetime.now(dt.UTC),
        window=dt.timedelta(days=args.stale_days),
        limits=Limits(outlier_z=args.outlier_z, fell_share=args.fell),
        rule=_rule_of(args),
    )
    done = review.review(loaded, settings, found)
    export.write_html(args.output, html.render(done))
    if args.json:
        export.write_json(args.json, done)
    if args.csv:
        export.write_csv(args.csv, loaded.measurements)
    if args.parquet:
        export.write_parquet(args.parquet, loaded.measurements)
    print(printable(summary_text(done, args.output)), file=_terminal(wanted.values()))
    return int(ExitCode.INCOMPLETE if loaded.runs.empty else ExitCode.PASS)


def run_propose(args: argparse.Namespace) -> int:
    from reports import load, propose, tomlfile

    current = baselines.load_file(args.baseline)
    target = args.output or (args.baseline if args.write else None)
    paths, missing = load.result_files(args.results)
    if target is not None:
        outputs.check_outputs({"--output" if args.output else "--baseline": target}, _local(paths))
        if _replaces(target) and not args.write:
            raise ConfigError("exists; pass --write to replace it (nothing was written)", file=target)
    loaded = load.load_files(paths, missing, progress=_progress(args))
    for error in loaded.errors:
        print(printable(f"gpu-burnin: skipped {error}"), file=sys.stderr)
    proposal = propose.propose(loaded.measurements, current, _rule_of(args), args.now or dt.datetime.now(dt.UTC))
    terminal = _terminal([target])
    print(printable(proposal.diff()), file=terminal)
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
    tomlfile.write_text(target, proposal.text(), option="--output" if args.output else "--baseline")
    print(printable(f"wrote {target}"), file=terminal)
    return int(ExitCode.PASS)


def summary_text(review: Review, output: Path) -> str:
    s = review.summary()
    verdicts = s["latest_verdicts"]
    span = "no runs read" if s["first"] is None else f"{_minute(s['first'])} to {_minute(s['last'])}"
    copies = f", {s['duplicate_files']} copies of runs read twice (counted once)" if s["duplicate_files"] else ""
    lines = [
        f"gpu-burnin report: {s['files']} files ({s['broken_files']} broken, skipped{copies}), {s['runs']} runs, "
        f"{s['nodes']} nodes, {s['gpus']} GPUs, {s['measurements']} measurements, {span}",
        f"latest run per node: {verdicts[Status.PASS]} pass, {verdicts[Status.FAIL]} fail, "
        f"{verdicts[Status.INCOMPLETE]} incomplete",
    ]
    if s["failing_codes"]:
        lines.append("failing nodes by code: " + ", ".join(f"{code} {n}" for code, n in s["failing_codes"].items()))
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


def printable(text: str) -> str:
    """`text` with control characters but newlines escaped (\\x1b): names from result files (a GPU
    model, a node, a file name) must not drive the terminal."""
    return _CONTROLS.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def _minute(moment: str) -> str:
    return moment[:16].replace("T", " ")


def _progress(args: argparse.Namespace) -> Progress | None:
    return Progress(sys.stderr) if args.progress or sys.stderr.isatty() else None


def _terminal(given: Any) -> TextIO:
    """Where the summary goes: stdout, unless an output is written there (then stderr, apart from the data)."""
    shared = any(p is not None and outputs.is_stream(p) and str(p) != "/dev/stderr" for p in given)
    return sys.stderr if shared else sys.stdout


def _replaces(target: Path) -> bool:
    """Whether writing `target` replaces a file (a regular file, or one a link points to)."""
    return not outputs.is_stream(target) and target.is_file()


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
    parser.add_argument(
        "results", nargs="+", metavar="RESULTS",
        help="result files, directories and globs; URLs of object storage (s3://, gs://, az://) read as directories",
    )  # fmt: skip
    parser.add_argument(
        "--now", type=options.moment, default=None, metavar="TIME",
        help=f"what coverage and dates are measured from, ISO 8601 from {options.EARLIEST:%Y} to "
        f"{options.LATEST:%Y} (default: the current time)",
    )  # fmt: skip
    parser.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a tty")
    parser.set_defaults(now=None)


def _rule(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--k", type=options.bounded(0, MAX_SIGMAS, "a number of robust sigmas"), default=default(Rule, "k"),
        metavar="K", help="proposed limits sit K robust sigmas (1.4826 x MAD) from the median (default %(default)g)",
    )  # fmt: skip
    parser.add_argument(
        "--min-gpus", type=options.count, default=default(Rule, "min_gpus"), metavar="N",
        help="keep a limit measured on fewer passing GPUs (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--min-nodes", type=options.count, default=default(Rule, "min_nodes"), metavar="N",
        help="keep a tolerance measured on fewer passing nodes (default %(default)s)",
    )  # fmt: skip


def _rule_of(args: argparse.Namespace) -> Rule:
    return Rule(k=args.k, min_gpus=args.min_gpus, min_nodes=args.min_nodes)


def _path(text: str) -> Path:
    """A file or directory name; an empty one is a mistake (it would mean the current directory), and
    so is a URL: results may be read from a store, but what is written (and a baseline) is local."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise argparse.ArgumentTypeError(f"{text} is a URL; this is a local file (only results are read from a store)")
    return Path(text)


def _local(found: list[Any]) -> list[Path]:
    """The inputs that are files here: an output, always local, can only ever be one of those."""
    return [p for p in found if isinstance(p, Path)]
