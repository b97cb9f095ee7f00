"""New floors and node tolerances from the fleet's own figures, by a rule a reviewer can check.

The rule (docs/report.md):
- Sample: the latest figure of each GPU the baseline covers, from runs that passed and finished.
- Limit: median - k x sigma for a floor (median + k x sigma for a ceiling), sigma = 1.4826 x MAD,
  k = 6 by default, rounded to four significant figures toward the lenient side. Median and MAD
  move little when a minority of GPUs is bad (a slow batch that passes its runs), so the floor
  is not pulled down to admit them. At least `min_gpus` GPUs, else the limit is kept.
- node_tolerance: the smallest 0.5% step that flags at most 0.1% of healthy GPUs in a Monte
  Carlo of nodes with the fleet's within-node spread (reports.sensitivity), taken two standard
  errors high; only for metrics that have one, from at least `min_nodes` nodes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd

from harness.baselines import Baseline, MetricSpec, Provenance
from harness.records import Direction
from harness.verdict import Status
from reports import sensitivity, stats, tomlfile
from reports.settings import Rule

MAD_ERROR = 1.166
"""The standard error of a MAD-based sigma from n normal figures is about 1.166 sigma / sqrt(n)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Change:
    metric: str
    unit: str
    direction: str
    old_limit: float
    new_limit: float
    old_tolerance: float | None
    new_tolerance: float | None
    gpus: int
    """Healthy GPUs in the sample."""
    nodes: int
    median: float | None
    sigma: float | None
    within_sigma: float | None
    fail_old: int
    """GPUs of the fleet (latest figure, any verdict) beyond the current limit."""
    fail_new: int
    flag_old: int
    """GPUs of the fleet the current node tolerance flags (latest run of each node)."""
    flag_new: int
    per_node: int = 0
    """Figures per node the tolerance compares (GPUs, or pairs for a pair's figure)."""
    pair: bool = False
    """A pair's figure: compared with the node's median pair, not its best."""
    note: str = ""
    """Why a value was kept, when it was."""

    @property
    def changed(self) -> bool:
        return self.old_limit != self.new_limit or self.old_tolerance != self.new_tolerance


@dataclasses.dataclass(frozen=True, kw_only=True)
class Proposal:
    current: Baseline
    proposed: Baseline
    changes: list[Change]
    rule: Rule
    gpus: int
    """GPUs in the fleet that the baseline covers."""
    healthy_runs: int
    first: dt.datetime | None
    last: dt.datetime | None
    unjudged: list[str]
    """Metrics measured on these GPUs that the baseline has no limit for (not proposed)."""

    def text(self) -> str:
        """The proposed baseline file."""
        span = f"{self.first:%Y-%m-%d} to {self.last:%Y-%m-%d}" if self.first and self.last else "no passing runs"
        header = (
            f"Proposed by `gpu-burnin baseline propose` from {self.healthy_runs} passing runs ({span}),\n"
            f"replacing {self.current.path}. Review the diff before use. Rule: {self.rule.describe()}."
        )
        return tomlfile.dumps(self.proposed, header)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([dataclasses.asdict(c) for c in self.changes])

    def diff(self) -> str:
        """Per metric: old and new limit and tolerance, and how many of the fleet's GPUs each fails."""
        span = f"{self.first:%Y-%m-%d} to {self.last:%Y-%m-%d}" if self.first and self.last else "none"
        lines = [
            f"{self.current.model} ({self.current.path}): {self.gpus} GPUs in the fleet, "
            f"{self.healthy_runs} passing runs ({span})",
            f"rule: {self.rule.describe()}",
        ]
        rows = []
        for c in self.changes:
            rows.append(
                {
                    "": "*" if c.changed else "",
                    "metric": c.metric,
                    "limit old -> new": f"{c.old_limit:g} -> {c.new_limit:g} {c.unit}",
                    "GPUs failing old -> new": f"{c.fail_old} -> {c.fail_new}",
                    "node_tolerance old -> new": f"{_share(c.old_tolerance)} -> {_share(c.new_tolerance)}",
                    "GPUs flagged old -> new": f"{c.flag_old} -> {c.flag_new}",
                    "healthy GPUs": c.gpus,
                    "median": "" if c.median is None else f"{c.median:.4g}",
                    "note": c.note,
                }
            )
        lines.append(pd.DataFrame(rows).to_string(index=False) if rows else "(no metrics)")
        if self.unjudged:
            lines.append(f"measured but not in this baseline (not proposed): {', '.join(self.unjudged)}")
        changed = sum(c.changed for c in self.changes)
        lines.append(f"{changed} of {len(self.changes)} metrics would change (*).")
        return "\n".join(lines)


def covered(measurements: pd.DataFrame, baseline: Baseline) -> pd.DataFrame:
    """The measurements of the GPUs this baseline covers."""
    names = [str(n) for n in measurements["gpu_name"].unique() if baseline.covers(baseline.device, str(n))]
    mask = stats.among(measurements["gpu_name"], names) & (measurements["device_kind"] == baseline.device).to_numpy()
    if baseline.gpus is not None:  # a file for nodes of one size: the figures of nodes of that size only
        mask &= (measurements["node_gpus"] == baseline.gpus).to_numpy()
    return measurements[mask]


def propose(measurements: pd.DataFrame, baseline: Baseline, rule: Rule, now: dt.datetime) -> Proposal:
    mine = covered(measurements, baseline)
    healthy = mine[(mine["verdict"] == Status.PASS) & (mine["state"] == "finished")]
    figures = stats.latest(healthy)
    fleet = stats.latest(mine)
    by_metric = dict(tuple(figures.groupby("metric", observed=True)))
    fleet_by_metric = dict(tuple(fleet.groupby("metric", observed=True)))
    empty = figures.iloc[:0]
    spreads = sensitivity.within_spread(figures)
    cards = ", ".join(sorted(str(n) for n in figures["gpu_name"].unique())) or ", ".join(baseline.names)
    drivers = ", ".join(sorted(str(d) for d in figures["driver"].unique() if d)) or "unknown"
    changes, specs = [], {}
    for name, spec in baseline.metrics.items():
        change, new = _metric(spec, by_metric.get(name, empty), fleet_by_metric.get(name, empty), spreads, rule)
        if change.changed:
            source = _source(change, rule, spec.provenance)
            reference, margin = _reference(change, new)
            provenance = Provenance(
                kind="measured",
                source=source,
                date=f"{now:%Y-%m-%d}",
                card=cards,
                driver=drivers,
                reference=reference,
                margin=margin,
            )
            new = dataclasses.replace(new, provenance=provenance)
        changes.append(change)
        specs[name] = new
    measured = {str(m) for m in mine["metric"].unique()}
    started = healthy["started_at"]
    return Proposal(
        current=baseline,
        proposed=dataclasses.replace(baseline, metrics=specs),
        changes=changes,
        rule=rule,
        gpus=int(mine[["node", "gpu"]].drop_duplicates().shape[0]),
        healthy_runs=int(healthy["run_id"].nunique()),
        first=started.min().to_pydatetime() if not started.empty else None,
        last=started.max().to_pydatetime() if not started.empty else None,
        unjudged=sorted(measured - set(baseline.metrics)),
    )


def _metric(
    spec: MetricSpec, figures: pd.DataFrame, fleet: pd.DataFrame, spreads: pd.DataFrame, rule: Rule
) -> tuple[Change, MetricSpec]:
    lower = spec.direction is Direction.LOWER
    values = figures["value"].to_numpy()
    nodes = int(figures["node"].nunique())
    notes = []
    limit, median, sigma = spec.limit, None, None
    if values.size >= rule.min_gpus:
        median = float(np.median(values))
        sigma = stats.MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
        limit = _lenient(median + rule.k * sigma if lower else median - rule.k * sigma, lower)
    else:
        notes.append(f"limit kept: {values.size} healthy GPUs, fewer than {rule.min_gpus}")
    tolerance, within, per_node, pair = spec.node_tolerance, None, 0, False
    spread = spreads[spreads["metric"] == spec.name].sort_values("nodes")
    if spec.node_tolerance is not None and not spread.empty and int(spread.iloc[-1]["nodes"]) >= rule.min_nodes:
        row = spread.iloc[-1]
        within, per_node, pair = float(row["sigma"]), int(row["gpus"]), bool(row["pair"])
        # The spread is an estimate: size the tolerance for its upper end (two standard errors; a MAD's is
        # about 1.166 sigma / sqrt(n)), so that sampling luck cannot push the false flags past the goal.
        upper = within * (1 + 2 * MAD_ERROR / math.sqrt(int(row["nodes"]) * per_node))
        tolerance = sensitivity.tolerance_for(upper, per_node, lower=lower, pair=pair)
    elif spec.node_tolerance is not None:
        notes.append(f"tolerance kept: fewer than {rule.min_nodes} healthy nodes")
    new = dataclasses.replace(spec, limit=limit, node_tolerance=tolerance)
    mine = fleet
    change = Change(
        metric=spec.name,
        unit=spec.unit,
        direction=str(spec.direction),
        old_limit=spec.limit,
        new_limit=limit,
        old_tolerance=spec.node_tolerance,
        new_tolerance=tolerance,
        gpus=int(values.size),
        nodes=nodes,
        median=median,
        sigma=sigma,
        within_sigma=within,
        fail_old=_beyond(mine, spec),
        fail_new=_beyond(mine, new),
        flag_old=_flagged(mine, spec),
        flag_new=_flagged(mine, new),
        per_node=per_node,
        pair=pair,
        note="; ".join(notes),
    )
    return change, new


def _beyond(figures: pd.DataFrame, spec: MetricSpec) -> int:
    values = figures["value"]
    bad = values > spec.limit if spec.direction is Direction.LOWER else values < spec.limit
    return int(figures.loc[bad, ["node", "gpu"]].drop_duplicates().shape[0])


def _flagged(figures: pd.DataFrame, spec: MetricSpec) -> int:
    """GPUs more than the tolerance behind their node's reference in the same run, as harness.compare judges."""
    if spec.node_tolerance is None or figures.empty:
        return 0
    table = figures.assign(pair=(figures["peer"] != "").to_numpy())
    table = table[table["gpu_index"].notna()]
    group = table.groupby(["run_id", "gpu_name", "pair"], observed=True)["value"]
    best = group.transform("min") if spec.direction is Direction.LOWER else group.transform("max")
    reference = group.transform("median").where(table["pair"], best)
    if spec.direction is Direction.LOWER:
        bad = table["value"] > reference * (1 + spec.node_tolerance)
    else:
        bad = table["value"] < reference * (1 - spec.node_tolerance)
    return int(table.loc[bad, ["node", "gpu"]].drop_duplicates().shape[0])


def _source(change: Change, rule: Rule, before: Provenance) -> str:
    parts = []
    if change.old_limit != change.new_limit and change.median is not None and change.sigma is not None:
        sign = "+" if change.direction == "lower" else "-"
        parts.append(
            f"median {change.median:.6g} {sign} {rule.k:g} x sigma {change.sigma:.4g} (1.4826 x MAD) of the latest "
            f"passing figure of {change.gpus} GPUs on {change.nodes} nodes"
        )
    if change.old_tolerance != change.new_tolerance and change.within_sigma is not None:
        parts.append(
            f"node_tolerance: smallest {sensitivity.TOLERANCE_STEP:.1%} step flagging at most "
            f"{sensitivity.GOAL_FALSE_FLAG:.1%} of healthy GPUs, Monte Carlo of {sensitivity.NODES} nodes "
            f"(seed {sensitivity.SEED}) with the fleet's within-node spread {change.within_sigma:.3%} "
            "taken two standard errors high"
        )
    if change.old_limit == change.new_limit or change.old_tolerance == change.new_tolerance:
        kept = "limit" if change.old_limit == change.new_limit else "node_tolerance"
        parts.append(f"{kept} as before ({before.kind}: {before.source})")
    return "gpu-burnin baseline propose: " + "; ".join(parts)


def _lenient(value: float, lower: bool) -> float:
    """Four significant figures, rounded away from the median (down for a floor, up for a ceiling)."""
    if value <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(value)) - 3)
    steps = math.ceil(round(value / step, 9)) if lower else math.floor(round(value / step, 9))
    decimals = max(0, -int(math.floor(math.log10(step))))
    return float(f"{steps * step:.{decimals}f}")


def _share(value: float | None) -> str:
    return "none" if value is None else f"{value:.1%}"


def _reference(change: Change, spec: MetricSpec) -> tuple[float | None, float | None]:
    """The fleet median a proposed floor derives from, and the margin it leaves below it."""
    if change.median is None or change.median <= 0 or spec.direction is not Direction.HIGHER:
        return None, None
    return round(change.median, 4), round(max(0.0, 1.0 - spec.limit / change.median), 4)
