"""The fleet report at fleet scale: time and peak memory of `gpu-burnin report` alone.

    python -m bench.report_scale                      # 7,500 nodes x 8 GPUs x about 20 metrics
    python -m bench.report_scale --nodes 500 --dir /tmp/fleet --keep

Generates the fleet with bench/fleet.py (not timed), then runs the report in a child
process, as a user would (`python -m harness.cli report DIR -o ... --json ...`), and
prints its wall time and peak resident memory (the child's, from getrusage), and where
the time went by stage (the child prints those). Goal on a 2-core machine: at most 20 s
and 3 GB. Figures move with whatever else runs on the machine: the load average is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fleet import NOW, FleetSpec, write_fleet

GOAL_S = 20.0
GOAL_BYTES = 3 << 30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=7500)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--dir", type=Path, help="generate here, or reuse the fleet already here")
    parser.add_argument("--keep", action="store_true", help="keep the generated fleet and report")
    parser.add_argument("--stages", help=argparse.SUPPRESS)  # the child: time each stage of the report
    args = parser.parse_args(argv)
    if args.stages:
        return stages(Path(args.stages))

    directory = args.dir or Path(tempfile.mkdtemp(prefix="gpu-burnin-fleet-"))
    try:
        if not any(directory.glob("*.json")):
            started = time.perf_counter()
            spec = FleetSpec(
                nodes=args.nodes, gpus=args.gpus, slow_gpus=20, slow_nodes=5, failing_nodes=20, stale_nodes=30,
                unfinished_preflights=10, broken_files=12,
            )  # fmt: skip
            planted = write_fleet(directory, spec)
            print(
                f"generated {planted.runs} result files, {planted.measurements} measurements "
                f"({planted.nodes} nodes x {args.gpus} GPUs) in {time.perf_counter() - started:.0f} s: {directory}"
            )
        report(directory)
        print(f"load average (1, 5, 15 min) after: {_load()}; {os.cpu_count()} cores")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def report(directory: Path) -> None:
    out = directory / "report"
    out.mkdir(exist_ok=True)
    command = [
        sys.executable, "-m", "harness.cli", "report", str(directory / "*.json"), "-o", str(out / "report.html"),
        "--json", str(out / "findings.json"), "--now", f"{NOW:%Y-%m-%dT%H:%M:%SZ}",
    ]  # fmt: skip
    print(f"load average (1, 5, 15 min) before: {_load()}")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if done.returncode != 0:
        raise SystemExit(f"report failed ({done.returncode}):\n{done.stderr}")
    print(done.stdout.strip().splitlines()[0])
    verdict = "goal met" if wall <= GOAL_S and peak <= GOAL_BYTES else "GOAL MISSED"
    print(
        f"gpu-burnin report: {wall:.1f} s wall, peak RSS {peak / 2**30:.2f} GiB ({verdict}: <= {GOAL_S:.0f} s, 3 GiB)"
    )
    size = (out / "report.html").stat().st_size
    print(f"report.html {size / 2**20:.1f} MiB, findings.json {(out / 'findings.json').stat().st_size / 2**10:.0f} KiB")
    staged = subprocess.run([sys.executable, "-m", "bench.report_scale", "--stages", str(directory)], text=True)
    if staged.returncode != 0:
        raise SystemExit("the stage timing failed")


def stages(directory: Path) -> int:
    """In this process, the same work stage by stage: where the time goes."""
    moments = [("start", time.perf_counter())]

    def mark(name: str) -> None:
        moments.append((name, time.perf_counter()))

    from harness import baselines
    from reports import export, html, review
    from reports.load import load_results

    mark("import pandas, plotly, reports")
    loaded = load_results(directory / "*.json")
    mark(f"read {len(loaded.runs) + len(loaded.errors)} files into {len(loaded.measurements)} rows")
    settings = review.Settings(now=NOW, window=dt.timedelta(days=7))
    done = review.review(loaded, settings, baselines.load_dir(baselines.default_dir()))
    mark("statistics, outliers, coverage, proposals, sensitivity")
    page = html.render(done)
    mark("HTML page")
    with tempfile.TemporaryDirectory() as scratch:
        export.write_html(Path(scratch) / "r.html", page)
        export.write_json(Path(scratch) / "f.json", done)
        mark("write HTML and JSON")
        export.write_parquet(Path(scratch) / "m.parquet", loaded.measurements)
        mark("(--parquet, not in the figure above)")
    for (_, before), (name, after) in zip(moments, moments[1:], strict=False):
        print(f"  {after - before:6.2f} s  {name}")
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
