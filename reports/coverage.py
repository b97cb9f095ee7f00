"""Coverage: which nodes were tested, when last, which not lately, and how fast periodic runs go round."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd

NODE_COLUMNS = ["node", "last_tested", "age_days", "last_verdict", "last_entrypoint", "last_state", "runs"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Coverage:
    nodes: pd.DataFrame
    """One row per node seen: its last run's time, verdict, entrypoint and state, and its run count."""
    stale: pd.DataFrame
    """Nodes whose last run started before the window: not tested lately. Oldest first."""
    unfinished: pd.DataFrame
    """Nodes whose last preflight never finished (killed, or still running): never released by a pass."""
    window: dt.timedelta
    periodic_nodes: int
    """Nodes with at least one periodic run."""
    cycle_days: float | None
    """How long the periodic runs take to cover the fleet: from the oldest of the nodes' latest
    periodic runs to now (every node periodic reaches was tested within this)."""
    interval_days: float | None
    """The median time between two periodic runs of one node."""


def coverage(runs: pd.DataFrame, now: dt.datetime, window: dt.timedelta) -> Coverage:
    ordered = runs.sort_values("started_at", kind="stable")
    last = ordered.groupby("node", sort=True).tail(1).set_index("node")
    nodes = pd.DataFrame(
        {
            "last_tested": last["started_at"],
            "age_days": (pd.Timestamp(now) - last["started_at"]).dt.total_seconds() / 86400,
            "last_verdict": last["verdict"],
            "last_entrypoint": last["entrypoint"],
            "last_state": last["state"],
            "runs": ordered.groupby("node", sort=True).size(),
        }
    ).rename_axis("node")
    nodes = nodes.reset_index()[NODE_COLUMNS] if not nodes.empty else pd.DataFrame(columns=NODE_COLUMNS)
    stale = nodes[nodes["age_days"] > window.total_seconds() / 86400].sort_values("age_days", ascending=False)

    preflights = ordered[ordered["entrypoint"] == "preflight"].groupby("node", sort=True).tail(1)
    unfinished = preflights[preflights["state"] != "finished"][["node", "started_at", "state", "run_id", "file"]]

    periodic = ordered[ordered["entrypoint"] == "periodic"]
    cycle = interval = None
    if not periodic.empty:
        newest = periodic.groupby("node")["started_at"].max()
        cycle = (pd.Timestamp(now) - newest.min()).total_seconds() / 86400
        gaps = periodic.groupby("node")["started_at"].diff().dropna().dt.total_seconds() / 86400
        interval = float(gaps.median()) if not gaps.empty else None
    return Coverage(
        nodes=nodes,
        stale=stale.reset_index(drop=True),
        unfinished=unfinished.reset_index(drop=True),
        window=window,
        periodic_nodes=int(periodic["node"].nunique()),
        cycle_days=cycle,
        interval_days=interval,
    )
