"""What the watch is told: its options as one checked, typed object (docs/watch.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness import options
from harness.errors import ConfigError

JOURNAL = Path("/var/lib/gpu-burnin/watch/journal.jsonl")
RESULTS_DIR = Path("/var/lib/gpu-burnin/results")
LAST_POLL = "last-poll"
"""In the watch's state directory (the journal's): the wall time of the last poll."""


class Action(StrEnum):
    """What a finding may lead to, from least to most: each includes the ones before it (a request is
    recorded too). The values are what the journal holds and the flags take."""

    IGNORE = "ignore"
    RECORD = "record"
    REQUEST = "request"


class Legacy(StrEnum):
    """What earlier watches cordoned or evicted by themselves, found in a journal of this boot: now requests."""

    CORDON = "cordon"
    EVICT = "evict"


@dataclasses.dataclass(frozen=True)
class Flag:
    """How an option of `gpu-burnin watch` is given on the command line: the one declaration the
    parser, the help and the mapping back to the config are made from (harness/watch/command.py)."""

    flag: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = "N"
    choices: tuple[str, ...] | None = None


def option(default: Any, flag: str, parse: Callable[[str], Any], help: str, **more: Any) -> Any:
    """A config field that is also a flag: its default is the command line's."""
    return dataclasses.field(default=default, metadata={"flag": Flag(flag, parse, help, **more)})


def flags(kind: type) -> list[tuple[dataclasses.Field[Any], Flag]]:
    """The fields of a config class that are flags, with their declarations, in order."""
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(kind) if "flag" in f.metadata]


ALLOWED: dict[str, tuple[Action, ...]] = {
    "warning": (Action.IGNORE, Action.RECORD),
    "fail": (Action.RECORD, Action.REQUEST),
    "critical": (Action.RECORD, Action.REQUEST),
}
"""What each severity's finding may lead to."""


def _policy(severity: str, default: Action, help: str) -> Any:
    allowed = ALLOWED[severity]
    return option(
        default,
        f"--on-{severity}",
        str,
        help,
        metavar=None,
        choices=tuple(str(a) for a in allowed),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    """What a finding leads to, by how bad it is."""

    warning: Action = _policy("warning", Action.RECORD, "what a warning finding does")
    """A warning (ECC disabled, an Xid NVIDIA says to restart the application for): `ignore` or `record`."""
    fail: Action = _policy("fail", Action.REQUEST, "what a fail finding does")
    """A failing finding (a pending remap, sustained slowdown, links down): `record`, or `request` that the
    remediator take the node out (severity fail)."""
    critical: Action = _policy("critical", Action.REQUEST, "what a critical finding does")
    """A critical one (harness/severity.py: uncorrectable ECC, a row remap failure, a GPU lost, an Xid to
    reset or reboot for): `record`, or `request` (severity critical: the remediator drains the node)."""

    def __post_init__(self) -> None:
        for name, allowed in ALLOWED.items():
            value = getattr(self, name)
            if value not in allowed:
                shown = ", ".join(allowed)
                raise ConfigError(f"is {value!r}; expected one of {shown}", option=f"--on-{name}")
            object.__setattr__(self, name, Action(value))


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatchConfig:
    """Every option of `gpu-burnin watch`, declared once: a field with a `Flag` is a flag of the command
    line, its default the command line's (the node and the API options are the CLI's shared ones)."""

    node: str
    """The node this watch runs on and reports on (the only node it writes)."""
    journal: Path = option(JOURNAL, "--journal", options.given_path, "the action journal", metavar="FILE")
    """The JSON Lines journal of actions, on the node's disk (it must outlive the pod)."""
    nvml: str = option(
        "real",
        "--nvml",
        options.nvml_spec,
        "the driver's NVML, or a simulated one driven through a scenario's timeline (only with --kubeconfig)",
        metavar="real|sim:FILE",
    )
    """`real`, or `sim:FILE` for a simulated NVML driven through a timeline (docs/health.md)."""
    interval_s: float = option(30.0, "--interval", options.seconds, "seconds between polls")
    """Seconds between snapshots; Xid events are read at the same pace."""
    hold: int = option(3, "--hold", options.count, "polls in a row a finding must be seen before it is acted on")
    """Polls in a row a finding must be seen before it is acted on (and absent before it clears)."""
    xid_hold: int = option(1, "--xid-hold", options.count, "Xid events of one code on one GPU before acting")
    """Xid events of one code on one GPU before they are acted on."""
    xid_clear_s: float = option(3600.0, "--xid-clear-after", options.seconds, "an Xid finding clears after this quiet")
    """An Xid finding clears once its Xid has not come again for this long."""
    window_s: float = option(600.0, "--window", options.seconds, "seconds of busy polls the telemetry rules judge")
    """The window of the telemetry rules: share of time slowed down, temperatures, PCIe under load."""
    load_samples: int = option(10, "--load-samples", options.count, "busy polls in the window before judging them")
    """Polls under load a GPU needs in the window before the telemetry rules judge it ("sustained")."""
    delta_window_s: float = option(
        3600.0, "--delta-window", options.seconds, "seconds over which counter rises are judged"
    )
    """Rises (corrected ECC, NVLink errors) are counted over this window against the baseline's limits."""
    nvml_timeout_s: float = option(60.0, "--nvml-timeout", options.seconds, "an NVML poll longer than this: wedged")
    """A snapshot that takes longer means a wedged driver: the condition says so and the watch exits."""
    policy: Policy = Policy()
    metrics_textfile: Path | None = option(
        None, "--metrics-textfile", options.given_path, "the node-exporter textfile to keep", metavar="FILE"
    )
    baseline_dir: Path | None = option(
        None, "--baseline-dir", options.given_path, "the baselines (default: the packaged ones)", metavar="DIR"
    )
    baseline: Path | None = option(
        None, "--baseline", options.given_path, "one baseline file, for every GPU", metavar="FILE"
    )
    xid_table: Path | None = option(
        None, "--xid-table", options.given_path, "an Xid table merged over the packaged one", metavar="FILE"
    )
    results_dir: Path | None = option(
        RESULTS_DIR,
        "--results-dir",
        options.given_path,
        "this node's results (preflight's and periodic's), for the freshness label",
        metavar="DIR",
    )
    """Where preflight and periodic write this node's results (the shared hostPath): the freshness label
    follows the newest finished pass or fail. None: no freshness label is kept."""
    retest_after_s: float = option(
        604800.0,
        "--retest-after",
        options.seconds,
        "label the node fresh while its newest finished pass or fail is younger than this",
    )
    """A node whose newest finished pass or fail is younger than this is fresh (labelled): the periodic runs skip it."""
    boot_id: str = ""
    """This boot's id (/proc/sys/kernel/random/boot_id): a journal from another boot starts afresh."""
    timeline_origin: float | None = None
    """For a simulated NVML: the clock reading at the timeline's 0 (default: when the watch starts)."""

    @property
    def last_poll(self) -> Path:
        """The file each poll's time is written to, beside the journal: the readiness probe's
        (`gpu-burnin watch-ready --state-dir` the journal's directory)."""
        return self.journal.parent / LAST_POLL

    def __post_init__(self) -> None:
        if not self.node:
            raise ConfigError("name the node: --node NAME, or NODE_NAME from the downward API", option="--node")
        for name, value in (
            ("--hold", self.hold),
            ("--xid-hold", self.xid_hold),
            ("--load-samples", self.load_samples),
        ):
            if value < 1:
                raise ConfigError(f"is {value}; expected 1 or more", option=name)
        for name, seconds in (
            ("--interval", self.interval_s),
            ("--xid-clear-after", self.xid_clear_s),
            ("--window", self.window_s),
            ("--delta-window", self.delta_window_s),
            ("--nvml-timeout", self.nvml_timeout_s),
            ("--retest-after", self.retest_after_s),
        ):
            if not seconds > 0:
                raise ConfigError(f"is {seconds}; expected a positive number of seconds", option=name)
        if self.window_s < self.interval_s * self.load_samples:
            raise ConfigError(
                f"{self.window_s:g} s holds fewer than --load-samples ({self.load_samples}) polls of "
                f"{self.interval_s:g} s; lengthen the window or poll more often",
                option="--window",
            )
