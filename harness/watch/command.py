"""`gpu-burnin watch`: its arguments, and the run from them to an exit code.

Exit 0 when stopped (SIGTERM, SIGINT); 2 when the API server refuses the node's first
read (the kubelet restarts the pod); 4 for bad options or files, before anything is read
or written. NVML missing, failing or wedged never ends the watch: the condition says
`Unknown`, and NVML is tried again with back-off.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from harness import baselines as baseline_files
from harness import options
from harness.errors import ConfigError
from harness.kube.api import KubeError, Patience, connect
from harness.kube.node import Marks
from harness.nvml import binding, xid_table
from harness.verdict import ExitCode
from harness.watch import act, loop
from harness.watch import config as cfg
from harness.watch import metrics as watch_metrics
from harness.watch.config import Policy, WatchConfig
from harness.watch.journal import read_boot_id

RESULTS_DIR = Path("/var/lib/gpu-burnin/results")
DEFAULTS = WatchConfig(node="-", journal=Path("/var/lib/gpu-burnin/watch/journal.jsonl"))
POLICY = Policy()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The watch's own options (the node and API options are the CLI's shared ones)."""
    parser.add_argument(
        "--nvml",
        type=options.nvml_spec,
        default="real",
        metavar="real|sim:FILE",
        help="the driver's NVML, or a simulated one driven through a scenario's timeline (only with --kubeconfig)",
    )
    parser.add_argument("--baseline-dir", type=Path, metavar="DIR", help="the baselines (default: the packaged ones)")
    parser.add_argument("--baseline", type=Path, metavar="FILE", help="one baseline file, for every GPU")
    parser.add_argument("--xid-table", type=Path, metavar="FILE", help="an Xid table merged over the packaged one")
    parser.add_argument("--journal", type=Path, default=DEFAULTS.journal, metavar="FILE", help="the action journal")
    parser.add_argument("--metrics-textfile", type=Path, metavar="FILE", help="the node-exporter textfile to keep")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        metavar="DIR",
        help=f"this node's results (preflight's and periodic's), for the freshness label (default {RESULTS_DIR})",
    )
    for flag, kind, default, what in (
        ("--interval", options.seconds, DEFAULTS.interval_s, "seconds between polls"),
        ("--hold", options.count, DEFAULTS.hold, "polls in a row a finding must be seen before it is acted on"),
        ("--xid-hold", options.count, DEFAULTS.xid_hold, "Xid events of one code on one GPU before acting"),
        ("--xid-clear-after", options.seconds, DEFAULTS.xid_clear_s, "an Xid finding clears after this quiet"),
        ("--window", options.seconds, DEFAULTS.window_s, "seconds of busy polls the telemetry rules judge"),
        ("--load-samples", options.count, DEFAULTS.load_samples, "busy polls in the window before judging them"),
        ("--delta-window", options.seconds, DEFAULTS.delta_window_s, "seconds over which counter rises are judged"),
        ("--nvml-timeout", options.seconds, DEFAULTS.nvml_timeout_s, "an NVML poll longer than this: wedged"),
        (
            "--retest-after",
            options.seconds,
            DEFAULTS.retest_after_s,
            "label the node fresh while its newest result is younger than this",
        ),
    ):
        parser.add_argument(flag, type=kind, default=default, metavar="N", help=f"{what} (default {default:g})")
    for severity, allowed in (
        ("warning", (cfg.IGNORE, cfg.RECORD)),
        ("fail", (cfg.RECORD, cfg.REQUEST)),
        ("critical", (cfg.RECORD, cfg.REQUEST)),
    ):
        default = getattr(POLICY, severity)
        parser.add_argument(
            f"--on-{severity}",
            choices=allowed,
            default=default,
            help=f"what a {severity} finding does (default {default})",
        )


def config_from(args: argparse.Namespace, node: str) -> WatchConfig:
    return WatchConfig(
        node=node,
        journal=args.journal,
        nvml=args.nvml,
        interval_s=args.interval,
        hold=args.hold,
        xid_hold=args.xid_hold,
        xid_clear_s=args.xid_clear_after,
        window_s=args.window,
        load_samples=args.load_samples,
        delta_window_s=args.delta_window,
        nvml_timeout_s=args.nvml_timeout,
        policy=Policy(warning=args.on_warning, fail=args.on_fail, critical=args.on_critical),
        metrics_textfile=args.metrics_textfile,
        results_dir=args.results_dir,
        retest_after_s=args.retest_after,
        boot_id=read_boot_id(),
    )


def main(args: argparse.Namespace, node: str, marks: Marks) -> int:
    """Everything checked first (exit 4 on ConfigError, raised to the CLI), then watch until stopped."""
    config = config_from(args, node)
    if config.metrics_textfile is not None:
        watch_metrics.check(config.metrics_textfile)
    if config.nvml != binding.REAL and args.kubeconfig is None:
        raise ConfigError(
            "a simulated NVML must not act on a real node: give --kubeconfig (a test cluster) with it", option="nvml"
        )
    if args.baseline is not None and args.baseline_dir is not None:
        raise ConfigError("give --baseline or --baseline-dir, not both", option="--baseline")
    found = (
        baseline_files.load_one(args.baseline)
        if args.baseline is not None
        else baseline_files.load_dir(args.baseline_dir or baseline_files.default_dir())
    )
    table = xid_table.load_table(args.xid_table)
    nv = binding.load(config.nvml) if config.nvml != binding.REAL else _real_nvml()
    api = connect(args.kubeconfig, patience=Patience(total_s=args.api_timeout))
    writer = act.NodeWriter(api, config.node, marks, boot=config.boot_id)
    watch = loop.Watch(config, nv=nv, writer=writer, baselines=found, table=table)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        watch.start()
    except KubeError as err:
        print(f"gpu-burnin watch: error: node {config.node} cannot be read or updated: {err}", file=sys.stderr)
        return int(ExitCode.INCOMPLETE)
    if watch.unreadable is None:
        print(f"gpu-burnin watch: watching {len(watch.judge.devices)} GPUs of node {config.node}", flush=True)
    else:
        print(f"gpu-burnin watch: node {config.node}: NVML cannot be read yet; trying again", flush=True)
    return loop.run(watch, stop)


def _real_nvml() -> Any:
    try:
        return binding.load(binding.REAL)
    except binding.Unavailable as err:
        raise ConfigError(f"{err}: the watch reads the GPUs through NVML", option="nvml") from err
