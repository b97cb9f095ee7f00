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

DEFAULTS = WatchConfig(node="-")
"""The command line's defaults, for the help."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The watch's own options, from their one declaration in harness/watch/config.py (the node and
    API options are the CLI's shared ones)."""
    for kind, prefix in ((WatchConfig, "watch_"), (Policy, "watch_on_")):
        for field, flag in cfg.flags(kind):
            default = field.default
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            parser.add_argument(
                flag.flag,
                dest=prefix + field.name,
                type=options.guarded(flag.parse),
                default=default,
                metavar=flag.metavar,
                choices=flag.choices,
                help=flag.help if default is None else f"{flag.help} (default {shown})",
            )


def config_from(args: argparse.Namespace, node: str) -> WatchConfig:
    """The parsed flags back into the config, field by field as declared."""
    given = vars(args)
    policy = Policy(**{field.name: given[f"watch_on_{field.name}"] for field, _ in cfg.flags(Policy)})
    return WatchConfig(
        node=node,
        policy=policy,
        boot_id=read_boot_id(),
        **{field.name: given[f"watch_{field.name}"] for field, _ in cfg.flags(WatchConfig)},
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
    if config.baseline is not None and config.baseline_dir is not None:
        raise ConfigError("give --baseline or --baseline-dir, not both", option="--baseline")
    found = (
        baseline_files.load_one(config.baseline)
        if config.baseline is not None
        else baseline_files.load_dir(config.baseline_dir or baseline_files.default_dir())
    )
    table = xid_table.load_table(config.xid_table)
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
