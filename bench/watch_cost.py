"""What `gpu-burnin watch` costs a node: CPU time and peak memory of the watch process itself.

    python bench/watch_cost.py [--duration 600] [--interval 30] [--gpus 8] [--out FILE]

Runs the real command (`python -m harness.cli watch`) as a child process for `--duration`
seconds of wall time, with a simulated NVML of `--gpus` busy H100s (an Xid burst on one
of them halfway, so an action path runs too) against the fake API server of tests/ in
this process. The child's own CPU time (user + system, every thread) and peak RSS come
from the kernel when it exits (os.wait4's rusage); its CPU after start-up (imports, first
snapshot) is read from /proc/PID/stat once it says it is watching. The fake API server's
work is this process's, not the child's. The issue's bar: under 1% of one core and under
100 MB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.kube_fake import FakeApiServer  # noqa: E402 - after the path above

CPU_BAR = 0.01
RSS_BAR_MB = 100.0


def scenario(gpus: int, duration_s: float) -> str:
    text = f'description = "bench: {gpus} busy H100s; an Xid 48 burst on GPU 0 halfway"\n'
    for _ in range(gpus):
        text += '[[gpus]]\nclock_events = ["sw_power_cap"]\ntemperature_c = 72\npower_w = 690.0\n'
    text += f"[[xids]]\ngpu = 0\nxid = 48\nat = {duration_s / 2:.0f}\ncount = 20\n"
    return text


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of wall time (default 600)")
    parser.add_argument("--interval", type=float, default=30.0, help="the watch's --interval (default 30)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--out", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeApiServer() as server:
        work = Path(tmp)
        server.add_node("bench-node", labels={"nvidia.com/gpu.present": "true"})
        for n in range(19):
            server.add_node(f"other-{n}", labels={"nvidia.com/gpu.present": "true"})
        (work / "scenario.toml").write_text(scenario(args.gpus, args.duration))
        command = [
            sys.executable,
            "-m",
            "harness.cli",
            "watch",
            "--node",
            "bench-node",
            "--kubeconfig",
            str(server.kubeconfig(work)),
            "--nvml",
            f"sim:{work / 'scenario.toml'}",
            "--journal",
            str(work / "journal.jsonl"),
            "--metrics-textfile",
            str(work / "watch.prom"),
            "--interval",
            str(args.interval),
        ]
        load_before = os.getloadavg()
        began = time.monotonic()
        child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None
        line = child.stdout.readline()  # "watching N GPUs of node ...": start-up is over
        started = time.monotonic()
        startup_cpu = cpu_seconds(child.pid)
        time.sleep(max(0.0, args.duration - (started - began)))
        steady_cpu = cpu_seconds(child.pid) - startup_cpu
        steady_s = time.monotonic() - started
        child.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        err = child.stderr.read() if child.stderr else ""
        load_after = os.getloadavg()
        writes = [r for r in server.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]
    total_cpu = usage.ru_utime + usage.ru_stime
    figures = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "gpus_simulated": args.gpus,
        "interval_s": args.interval,
        "wall_s": round(wall, 1),
        "startup_line": line.strip(),
        "startup_s": round(started - began, 2),
        "startup_cpu_s": round(startup_cpu, 2),
        "cpu_s": round(total_cpu, 2),
        "cpu_share_of_one_core": round(total_cpu / wall, 5),
        "steady_cpu_s": round(steady_cpu, 2),
        "steady_cpu_share_of_one_core": round(steady_cpu / steady_s, 5),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit_code": child.returncode,
        "api_writes": len(writes),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "stderr_tail": err[-500:],
    }
    figures["under_bars"] = figures["cpu_share_of_one_core"] < CPU_BAR and figures["peak_rss_mb"] < RSS_BAR_MB
    text = json.dumps(figures, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if figures["under_bars"] and child.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
