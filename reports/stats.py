"""Fleet statistics from the tidy measurement table: per model and metric, outliers, falls, failures.

Each GPU counts once: its latest figure per metric (and per peer, for a pair's figure).
An outlier is a figure far on the worse side of its model's fleet by the robust z-score
(value - median) / (1.4826 x MAD), which a few broken GPUs cannot move: a GPU can pass
its floor and its node's comparison (a whole node slow) and still be far below its peers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.records import NODE, Severity
from harness.verdict import Status
from reports.settings import Limits

VERDICTS = [str(status) for status in Status]
"""The verdicts, as the runs' table spells them, in the order the report shows them."""

MAD_TO_SIGMA = 1.4826
"""For a normal distribution, sigma = 1.4826 x MAD."""
GPU_KEY = ["node", "gpu", "metric", "peer"]
"""A GPU's figure; the node too, for node-wide figures (their `gpu` is `node` everywhere)."""
STAT_COLUMNS = ["gpu_name", "metric", "unit", "direction", "count", "median", "p1", "p5", "p95", "mad", "sigma"]
LOCATE = ["node", "gpu_index", "serial", "gpu_name", "gpu", "peer"]
"""Where a technician finds a GPU: node, index (as nvidia-smi shows it) and serial."""


def among(column: pd.Series, values: list[str]) -> np.ndarray:
    """`column.isin(values)` as a boolean array, through the codes when the column is categorical."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        wanted = [i for i, c in enumerate(column.cat.categories) if c in set(values)]
        return np.isin(column.cat.codes.to_numpy(), wanted)
    found: np.ndarray = column.isin(values).to_numpy()
    return found


def latest(measurements: pd.DataFrame) -> pd.DataFrame:
    """Each GPU's latest figure per metric (and peer)."""
    ordered = measurements.sort_values("started_at", kind="stable")
    return ordered.drop_duplicates(GPU_KEY, keep="last").reset_index(drop=True)


def sign(direction: pd.Series) -> np.ndarray:
    """+1 where higher is better, -1 where lower is: sign x (value - median) < 0 is worse."""
    return np.where((direction == "lower").to_numpy(), -1.0, 1.0)


def fleet(figures: pd.DataFrame) -> pd.DataFrame:
    """Per GPU model and metric: count, median, p1, p5, p95, MAD and the robust sigma (1.4826 x MAD)."""
    if figures.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    keys = ["gpu_name", "metric"]
    groups = figures.groupby(keys, observed=True, sort=True)
    stats = groups["value"].agg(["count", "median"])
    quantiles = groups["value"].quantile([0.01, 0.05, 0.95]).unstack()
    stats[["p1", "p5", "p95"]] = quantiles.to_numpy()
    centre = groups["value"].transform("median")
    stats["mad"] = (figures["value"] - centre).abs().groupby([figures[k] for k in keys], observed=True).median()
    stats["sigma"] = MAD_TO_SIGMA * stats["mad"]
    stats[["unit", "direction"]] = groups[["unit", "direction"]].first().astype(str)
    return stats.reset_index()[STAT_COLUMNS]


def outliers(figures: pd.DataFrame, stats: pd.DataFrame, limits: Limits) -> pd.DataFrame:
    """Figures at least `outlier_z` robust sigmas worse than their model's median, worst first.
    A metric without spread (every GPU equal, such as zero bad words) has no sigma and no outliers:
    its limit judges it."""
    scored = score(figures, stats)
    found = scored[scored["z"] <= -limits.outlier_z].sort_values("z")
    return found[[*LOCATE, "metric", "value", "unit", "median", "z", "share", "run_id", "started_at"]].reset_index(
        drop=True
    )


def score(figures: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """`figures` with their model's median, the robust z (negative = worse) and the share off the median."""
    keys = pd.MultiIndex.from_arrays([figures["gpu_name"].astype(object), figures["metric"].astype(object)])
    centre = stats.set_index(["gpu_name", "metric"])[["median", "sigma"]]
    centre.index = pd.MultiIndex.from_arrays([centre.index.get_level_values(i).astype(object) for i in (0, 1)])
    found = centre.reindex(keys)
    scored = figures.reset_index(drop=True).assign(median=found["median"].to_numpy(), sigma=found["sigma"].to_numpy())
    sigma = scored["sigma"].where(scored["sigma"] > 0)
    direction = sign(scored["direction"])
    scored["z"] = direction * (scored["value"] - scored["median"]) / sigma
    scored["share"] = direction * (scored["value"] / scored["median"].where(scored["median"] != 0) - 1)
    return scored


def fell(measurements: pd.DataFrame, limits: Limits) -> pd.DataFrame:
    """The same GPU (by serial, else UUID), worse in its latest run than in the one before by more
    than `fell_share`."""
    # A node-wide figure (its gpu is `node` on every node) is its node's own.
    node_wide = (measurements["gpu"] == NODE).to_numpy()
    table = measurements.assign(scope=np.where(node_wide, pd.factorize(measurements["node"])[0], -1))
    key = ["gpu", "serial", "scope", "metric", "peer"]
    ordered = table.sort_values("started_at", kind="stable")
    grouped = ordered.groupby(key, observed=True, sort=False)
    last = grouped.nth(-1).set_index(key)
    previous = grouped.nth(-2).set_index(key)
    if previous.empty:
        return pd.DataFrame(columns=[*LOCATE, "metric", "value", "previous", "unit", "change", "run_id", "started_at"])
    both = last.merge(
        previous[["value", "run_id", "started_at"]], left_index=True, right_index=True, suffixes=("", "_previous")
    )
    both = both[both["run_id"] != both["run_id_previous"]]
    direction = sign(both["direction"])
    base = both["value_previous"].where(both["value_previous"] != 0)
    both["change"] = direction * (both["value"] / base - 1)
    found = both[both["change"] < -limits.fell_share].reset_index()
    found = found.rename(columns={"value_previous": "previous"})
    columns = [*LOCATE, "metric", "value", "previous", "unit", "change", "run_id", "started_at"]
    return found.sort_values("change")[columns].reset_index(drop=True)


def outlying_gpus(outliers: pd.DataFrame) -> pd.DataFrame:
    """The outliers per GPU, worst first: how many figures, the worst z and share, and which metrics."""
    columns = ["node", "gpu_index", "serial", "gpu_name", "figures", "worst_z", "worst_share", "metrics"]
    if outliers.empty:
        return pd.DataFrame(columns=columns)
    keys = ["node", "gpu_index", "serial", "gpu_name"]
    grouped = outliers.astype({k: object for k in keys}).groupby(keys, dropna=False, sort=False)
    found = grouped.agg(
        figures=("metric", "size"),
        worst_z=("z", "min"),
        worst_share=("share", "min"),
        metrics=("metric", lambda m: ", ".join(sorted({str(x) for x in m}))),
    )
    return found.reset_index().sort_values("worst_z")[columns].reset_index(drop=True)


def failing_gpus(failures: pd.DataFrame) -> pd.DataFrame:
    """The failing findings per node, GPU and code: how many, their remediation and the first message."""
    columns = ["node", "gpu_index", "serial", "code", "remediation", "findings", "started_at", "message"]
    if failures.empty:
        return pd.DataFrame(columns=columns)
    keys = ["node", "gpu_index", "serial", "code", "remediation"]
    grouped = failures.astype({"gpu_index": object}).groupby(keys, dropna=False, sort=True)
    found = grouped.agg(findings=("message", "size"), started_at=("started_at", "first"), message=("message", "first"))
    return found.reset_index()[columns]


def failing_codes(failures: pd.DataFrame) -> dict[str, int]:
    """How many failing nodes show each code (a node with HANG on three GPUs counts once), most first.
    The page and the terminal both count this way."""
    codes = failures.drop_duplicates(["node", "code"])["code"].astype(str).value_counts()
    return {str(code): int(n) for code, n in codes.items()}


def latest_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Each node's latest run."""
    return runs.sort_values("started_at", kind="stable").drop_duplicates("node", keep="last").reset_index(drop=True)


def failures(runs: pd.DataFrame, findings: pd.DataFrame) -> pd.DataFrame:
    """The failing findings of every node whose latest run failed, with their GPU and remediation."""
    failed = latest_runs(runs)
    failed = failed[failed["verdict"] == Status.FAIL][["run_id", "node"]]
    rows = findings.merge(failed, on=["run_id", "node"])
    rows = rows[rows["severity"] == Severity.FAIL]
    columns = ["node", "gpu_index", "serial", "gpu", "code", "remediation", "message", "run_id", "started_at"]
    return rows.sort_values(["node", "gpu_index"], na_position="first")[columns].reset_index(drop=True)


def verdicts_by_day(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per UTC day and verdict."""
    if runs.empty:
        return pd.DataFrame(columns=["day", *VERDICTS])
    day = runs["started_at"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    table = pd.crosstab(day, runs["verdict"]).reindex(columns=VERDICTS, fill_value=0)
    return table.rename_axis(index="day", columns=None).reset_index()
