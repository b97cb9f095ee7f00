"""The fleet review: everything the report shows, computed once from the loaded tables.

The HTML page, the `--json` findings and the terminal summary are three views of one `Review`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd

from harness.baselines import Baseline, BaselineSet
from reports import coverage, propose, sensitivity, stats
from reports.load import Loaded
from reports.settings import STALE_DAYS, Limits, Rule


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    now: dt.datetime
    """What "lately" is measured from."""
    window: dt.timedelta = dt.timedelta(days=STALE_DAYS)
    """A node whose last run started longer ago than this is stale."""
    limits: Limits = Limits()
    rule: Rule = Rule()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Review:
    loaded: Loaded
    settings: Settings
    figures: pd.DataFrame
    """Each GPU's latest figure per metric."""
    fleet: pd.DataFrame
    outliers: pd.DataFrame
    fell: pd.DataFrame
    failures: pd.DataFrame
    verdicts: pd.DataFrame
    coverage: coverage.Coverage
    proposals: list[propose.Proposal]
    sensitivity: pd.DataFrame
    uncovered: list[str]
    """GPU models of the fleet that no baseline covers."""

    def summary(self) -> dict[str, Any]:
        loaded, runs = self.loaded, self.loaded.runs
        latest = stats.latest_runs(runs)
        started = runs["started_at"]
        return {
            "files": loaded.files,
            "broken_files": len(loaded.errors),
            "duplicate_files": len(loaded.duplicates),
            "runs": len(runs),
            "nodes": int(runs["node"].nunique()),
            "gpus": int(self.figures[["node", "gpu"]].drop_duplicates().shape[0]),
            "measurements": len(loaded.measurements),
            "first": _iso(started.min()) if not runs.empty else None,
            "last": _iso(started.max()) if not runs.empty else None,
            "now": _iso(self.settings.now),
            "latest_verdicts": {v: int((latest["verdict"] == v).sum()) for v in stats.VERDICTS},
            "failing_nodes": int(self.failures["node"].nunique()),
            "failing_codes": stats.failing_codes(self.failures),
            "outlier_figures": len(self.outliers),
            "outlier_gpus": int(self.outliers[["node", "gpu"]].drop_duplicates().shape[0]),
            "fell_figures": len(self.fell),
            "stale_nodes": len(self.coverage.stale),
            "unfinished_preflights": len(self.coverage.unfinished),
            "proposed_changes": sum(c.changed for p in self.proposals for c in p.changes),
        }


def review(loaded: Loaded, settings: Settings, baselines: BaselineSet) -> Review:
    measurements = loaded.measurements.drop(columns=["profile", "test", "samples", "low", "high"])  # unused here
    figures = stats.latest(measurements)
    fleet = stats.fleet(figures)
    proposals: list[propose.Proposal] = []
    uncovered: list[str] = []
    for baseline in _baselines(measurements, baselines, uncovered):
        proposals.append(propose.propose(measurements, baseline, settings.rule, settings.now))
    return Review(
        loaded=loaded,
        settings=settings,
        figures=figures,
        fleet=fleet,
        outliers=stats.outliers(figures, fleet, settings.limits),
        fell=stats.fell(measurements, settings.limits),
        failures=stats.failures(loaded.runs, loaded.findings),
        verdicts=stats.verdicts_by_day(loaded.runs),
        coverage=coverage.coverage(loaded.runs, settings.now, settings.window),
        proposals=proposals,
        sensitivity=sensitivity_table(proposals),
        uncovered=uncovered,
    )


def sensitivity_table(proposals: list[propose.Proposal]) -> pd.DataFrame:
    """Per model and metric with a node tolerance: what the current and the proposed tolerance cost."""
    rows = []
    for proposal in proposals:
        for c in proposal.changes:
            if c.old_tolerance is None or c.within_sigma is None or c.new_tolerance is None:
                continue
            spec = proposal.current.metrics[c.metric]
            pair, gpus = c.pair, c.per_node
            lower = c.direction == "lower"
            now = sensitivity.evaluate(c.within_sigma, gpus, c.old_tolerance, lower=lower, pair=pair)
            new = sensitivity.evaluate(c.within_sigma, gpus, c.new_tolerance, lower=lower, pair=pair)
            rows.append(
                {
                    "model": proposal.current.model,
                    "metric": spec.name,
                    "within_node_sigma": c.within_sigma,
                    "figures_per_node": gpus,
                    "tolerance": c.old_tolerance,
                    "false_flag": now.false_flag,
                    "caught_at_5pct": now.detection,
                    "smallest_caught_99pct": now.caught99,
                    "meets_goal": now.meets_goal,
                    "proposed_tolerance": c.new_tolerance,
                    "proposed_false_flag": new.false_flag,
                    "proposed_caught_at_5pct": new.detection,
                    "proposed_smallest_caught_99pct": new.caught99,
                    "proposed_meets_goal": new.meets_goal,
                }
            )
    return pd.DataFrame(rows)


def _baselines(measurements: pd.DataFrame, baselines: BaselineSet, uncovered: list[str]) -> list[Baseline]:
    """Each GPU baseline that covers some of the fleet's models; the models none covers go to `uncovered`.
    The CPU self-test's floors check the pipeline, not the CPU: they are not proposed from figures."""
    found: dict[str, Baseline] = {}
    keys = measurements.groupby(["device_kind", "gpu_name", "node_gpus"], observed=True).size().index
    for kind, name, count in ((str(k), str(n), int(c)) for k, n, c in keys):
        if not name:
            continue
        baseline = baselines.for_device(kind, name, count)
        if baseline is None:
            uncovered.append(name)
            continue
        if baseline.device != "cuda":
            continue
        found.setdefault(str(baseline.path), baseline)
    return list(found.values())


def _iso(moment: Any) -> str:
    stamp: str = pd.Timestamp(moment).tz_convert("UTC").isoformat()
    return stamp.replace("+00:00", "Z")
