"""What the watch is told: its options as one checked, typed object (docs/watch.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.errors import ConfigError

LAST_POLL = "last-poll"
"""In the watch's state directory (the journal's): the wall time of the last poll."""
IGNORE, RECORD, REQUEST = "ignore", "record", "request"
ACTIONS = (IGNORE, RECORD, REQUEST)
"""From least to most: each includes the ones before it (a request is recorded too)."""
CORDON, EVICT = "cordon", "evict"
LEGACY = (CORDON, EVICT)
"""What earlier watches cordoned or evicted by themselves, found in a journal of this boot: now requests."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    """What a finding leads to, by how bad it is."""

    warning: str = RECORD
    """A warning (ECC disabled, an Xid NVIDIA says to restart the application for): `ignore` or `record`."""
    fail: str = REQUEST
    """A failing finding (a pending remap, sustained slowdown, links down): `record`, or `request` that the
    remediator take the node out (severity fail)."""
    critical: str = REQUEST
    """A critical one (harness/severity.py: uncorrectable ECC, a row remap failure, a GPU lost, an Xid to
    reset or reboot for): `record`, or `request` (severity critical: the remediator drains the node)."""

    def __post_init__(self) -> None:
        for name, allowed in (
            ("warning", (IGNORE, RECORD)),
            ("fail", (RECORD, REQUEST)),
            ("critical", (RECORD, REQUEST)),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"is {value!r}; expected one of {', '.join(allowed)}", option=f"--on-{name}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatchConfig:
    """Every option of `gpu-burnin watch`; the defaults are the command line's."""

    node: str
    """The node this watch runs on and reports on (the only node it writes)."""
    journal: Path
    """The JSON Lines journal of actions, on the node's disk (it must outlive the pod)."""
    nvml: str = "real"
    """`real`, or `sim:FILE` for a simulated NVML driven through a timeline (docs/health.md)."""
    interval_s: float = 30.0
    """Seconds between snapshots; Xid events are read at the same pace."""
    hold: int = 3
    """Polls in a row a finding must be seen before it is acted on (and absent before it clears)."""
    xid_hold: int = 1
    """Xid events of one code on one GPU before they are acted on."""
    xid_clear_s: float = 3600.0
    """An Xid finding clears once its Xid has not come again for this long."""
    window_s: float = 600.0
    """The window of the telemetry rules: share of time slowed down, temperatures, PCIe under load."""
    load_samples: int = 10
    """Polls under load a GPU needs in the window before the telemetry rules judge it ("sustained")."""
    delta_window_s: float = 3600.0
    """Rises (corrected ECC, NVLink errors) are counted over this window against the baseline's limits."""
    nvml_timeout_s: float = 60.0
    """A snapshot that takes longer means a wedged driver: the condition says so and the watch exits."""
    policy: Policy = Policy()
    metrics_textfile: Path | None = None
    results_dir: Path | None = None
    """Where preflight and periodic write this node's results (the shared hostPath): the freshness label
    follows the newest one. None: no freshness label is kept."""
    retest_after_s: float = 604800.0
    """A node whose newest result is younger than this is fresh (labelled): the periodic runs skip it."""
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
