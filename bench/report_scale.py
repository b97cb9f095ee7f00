"""The fleet report at fleet scale: time and peak memory of `gpu-burnin report` alone.

    python -m bench.report_scale                      # 7,500 nodes x 8 GPUs x about 20 metrics
    python -m bench.report_scale --nodes 500 --dir /tmp/fleet --keep
    python -m bench.report_scale --url                # also from 7,500 objects in moto's S3 server

Generates the fleet with bench/fleet.py (not timed), then runs the report in a child
process, as a user would (`python -m harness.cli report DIR -o ... --json ...`), and
prints its wall time and peak resident memory (the child's, from getrusage), and where
the time went by stage (the child prints those). Goal on a 2-core machine: at most 20 s
and 3 GB. Figures move with whatever else runs on the machine: the load average is printed.

With --url the same files are also put, one object each, in moto's S3 server on 127.0.0.1
(tests/s3server.py, in this process; the upload is not timed), and the report is timed over
`s3://BUCKET/fleet` too, by the same child command: both times are printed side by side.
Goal: the report over the store within 2x its time over the directory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.fleet import NOW, FleetSpec, write_fleet

GOAL_S = 20.0
GOAL_BYTES = 3 << 30
URL_GOAL = 2.0
"""The report over object storage takes at most this many times its time over a directory."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=7500)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--dir", type=Path, help="generate here, or reuse the fleet already here")
    parser.add_argument("--keep", action="store_true", help="keep the generated fleet and report")
    parser.add_argument("--url", action="store_true", help="also time the report over the files as S3 objects")
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
        if args.url:
            over_store(directory)
        else:
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


def over_store(directory: Path) -> None:
    """The report over the directory and over the same files as objects in moto's S3, side by side."""
    from harness import store

    files = sorted(directory.glob("*.json"))
    with _s3_server(directory) as endpoint:
        env = {
            **os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }  # fmt: skip
        os.environ.update(env)
        started = time.perf_counter()
        url = "s3://gpu-burnin-bench/fleet"
        _make_bucket(endpoint, "gpu-burnin-bench")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda path: store.put(url, path.name, path.read_bytes()), files))
        print(f"put {len(files)} objects in moto's S3 at {endpoint} in {time.perf_counter() - started:.0f} s")
        print(f"load average (1, 5, 15 min) before: {_load()}")
        local = _timed([str(directory / "*.json")], directory, "dir", env)
        remote = _timed([url], directory, "url", env)
    ratio = remote[0] / local[0]
    verdict = "goal met" if ratio <= URL_GOAL else "GOAL MISSED"
    width = max(len(str(directory)), len(url))
    print(f"  {'source'.ljust(width)}  wall s  peak RSS GiB  first line")
    for source, (wall, peak, line) in ((str(directory), local), (url, remote)):
        print(f"  {source.ljust(width)}  {wall:6.1f}  {peak / 2**30:12.2f}  {line}")
    print(f"object storage / directory: {ratio:.2f}x ({verdict}: <= {URL_GOAL:g}x)")


@contextlib.contextmanager
def _s3_server(scratch: Path) -> Iterator[str]:
    """moto's S3 server (tests/s3server.py) in a process of its own, as a store is: its endpoint."""
    endpoint_file = scratch / "s3-endpoint"
    server = subprocess.Popen([sys.executable, "-m", "tests.s3server", "--endpoint-file", str(endpoint_file)])
    try:
        deadline = time.monotonic() + 60
        while not endpoint_file.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("moto's S3 server did not start")
            time.sleep(0.1)
        yield endpoint_file.read_text().strip()
    finally:
        server.terminate()
        server.wait(timeout=30)
        endpoint_file.unlink(missing_ok=True)


def _make_bucket(endpoint: str, name: str) -> None:
    """One bucket in moto, by the S3 API's own PUT /BUCKET (no client needed for that one call)."""
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT"), timeout=30) as answer:
        answer.read()


def _timed(sources: list[str], directory: Path, name: str, env: dict[str, str]) -> tuple[float, int, str]:
    """Wall time, peak RSS and the summary's first line of `gpu-burnin report SOURCES` in a child process."""
    out = directory / "report"
    out.mkdir(exist_ok=True)
    command = [
        sys.executable, "-m", "harness.cli", "report", *sources, "-o", str(out / f"{name}.html"),
        "--json", str(out / f"{name}.json"), "--now", f"{NOW:%Y-%m-%dT%H:%M:%SZ}",
    ]  # fmt: skip
    script = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "d = subprocess.run(sys.argv[1:], capture_output=True, text=True); w = time.perf_counter() - t; "
        "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, d.returncode); "
        "print(d.stdout.splitlines()[0] if d.stdout else d.stderr[-2000:])"
    )  # a child per measurement, so that each peak RSS is its own report's
    done = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, env=env)
    head, line = done.stdout.split("\n", 1)
    wall, peak, code = head.split()
    if code != "0":
        raise SystemExit(f"report over {sources} failed ({code}):\n{line}")
    return float(wall), int(peak), line.strip()


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
