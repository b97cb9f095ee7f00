"""What a node tolerance costs: how small a slow-down it catches, how often it flags a healthy GPU.

The node comparison (harness.compare) flags a GPU more than `node_tolerance` behind the best
GPU of its model in the node (a pair's figure: behind the median pair). How well that works
depends only on the spread between healthy GPUs of one node, the number of GPUs and the
tolerance. The spread is fitted from the fleet (`within_spread`: the robust sigma of each
figure's log-ratio to its node's mean, healthy runs only); then a Monte Carlo with a fixed seed
simulates NODES nodes of lognormal GPUs, judges them as compare does, and counts: the share of
healthy GPUs flagged, and for each slow-down of one GPU the share of nodes where it is caught.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pandas as pd

from reports.stats import MAD_TO_SIGMA

NODES = 20_000
SEED = 20261128
SLOWDOWNS = tuple(round(0.005 * i, 3) for i in range(1, 61))
"""0.5% to 30% in steps of 0.5%."""
GOAL_SLOWDOWN = 0.05
GOAL_DETECTION = 0.99
GOAL_FALSE_FLAG = 0.001
TOLERANCE_STEP = 0.005
SPREAD_COLUMNS = ["gpu_name", "metric", "direction", "pair", "sigma", "gpus", "nodes"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sensitivity:
    sigma: float
    """The within-node spread simulated (lognormal sigma, about a fraction)."""
    gpus: int
    tolerance: float
    pair: bool
    false_flag: float
    """Share of healthy GPUs the tolerance flags."""
    detection: float
    """Share of nodes where one GPU GOAL_SLOWDOWN slower than it would be is flagged."""
    caught99: float | None
    """The smallest slow-down (0.5% steps, up to 30%) caught in at least 99% of nodes; None: none is."""

    @property
    def meets_goal(self) -> bool:
        return self.detection >= GOAL_DETECTION and self.false_flag <= GOAL_FALSE_FLAG


def within_spread(figures: pd.DataFrame) -> pd.DataFrame:
    """Per model and metric, the spread between GPUs of one node: the robust sigma of log(value /
    node's geometric mean), corrected for the mean's own share (x sqrt(n / (n - 1)))."""
    table = figures[(figures["value"] > 0) & figures["gpu_index"].notna()].copy()
    if table.empty:
        return pd.DataFrame(columns=SPREAD_COLUMNS)
    table["pair"] = (table["peer"] != "").to_numpy()
    # A pair's both-ways figure is recorded for both GPUs of the pair: count it once.
    pair = table["pair"].to_numpy()
    repeated = np.zeros(len(table), dtype=bool)
    repeated[pair] = table[pair].duplicated(["run_id", "metric", "value"]).to_numpy()
    table = table[~repeated]
    table["log"] = np.log(table["value"])
    group = ["run_id", "gpu_name", "metric", "pair"]
    grouped = table.groupby(group, observed=True)
    table["n"] = grouped["log"].transform("size")
    table["residual"] = table["log"] - grouped["log"].transform("mean")
    table = table[table["n"] >= 2]
    table["abs"] = table["residual"].abs()
    keys = ["gpu_name", "metric", "pair"]
    by = table.groupby(keys, observed=True)
    found = by.agg(mad=("abs", "median"), gpus=("n", "median"), nodes=("run_id", "nunique"))
    found["direction"] = by["direction"].first().astype(str)
    found["sigma"] = MAD_TO_SIGMA * found["mad"] * np.sqrt(found["gpus"] / (found["gpus"] - 1))
    found["gpus"] = found["gpus"].round().astype(int)
    return found.reset_index()[SPREAD_COLUMNS]


def evaluate(sigma: float, gpus: int, tolerance: float, *, lower: bool = False, pair: bool = False) -> Sensitivity:
    """The Monte Carlo for one spread, node size and tolerance."""
    return _evaluate(round(sigma, 6), gpus, round(tolerance, 6), lower, pair)


def tolerance_for(sigma: float, gpus: int, *, lower: bool = False, pair: bool = False) -> float:
    """The smallest tolerance (in TOLERANCE_STEP steps) that flags at most GOAL_FALSE_FLAG of healthy GPUs."""
    behind = np.sort(_behind(_healthy(round(sigma, 6), gpus), lower, pair).ravel())
    allowed = int(math.floor(GOAL_FALSE_FLAG * behind.size))
    worst_kept: float = behind[behind.size - 1 - allowed]  # at most `allowed` GPUs lie strictly beyond it
    steps = math.ceil(round(max(worst_kept, 0.0) / TOLERANCE_STEP, 9))
    return round(max(steps, 1) * TOLERANCE_STEP, 4)


@functools.lru_cache(maxsize=512)
def _evaluate(sigma: float, gpus: int, tolerance: float, lower: bool, pair: bool) -> Sensitivity:
    values = _healthy(sigma, gpus)
    false_flag = float((_behind(values, lower, pair) > tolerance).mean())
    caught = _caught_pairs(values, tolerance, lower) if pair else _caught_single(values, tolerance, lower)
    at_goal = caught[SLOWDOWNS.index(GOAL_SLOWDOWN)]
    first = next((s for s, rate in zip(SLOWDOWNS, caught, strict=True) if rate >= GOAL_DETECTION), None)
    return Sensitivity(
        sigma=sigma,
        gpus=gpus,
        tolerance=tolerance,
        pair=pair,
        false_flag=false_flag,
        detection=at_goal,
        caught99=first,
    )


@functools.lru_cache(maxsize=64)
def _healthy(sigma: float, gpus: int) -> np.ndarray:
    """NODES x gpus healthy figures around 1 (the same draws for every call: common random numbers)."""
    z = np.random.default_rng(SEED).standard_normal((NODES, gpus))
    values = np.exp(sigma * z)
    values.flags.writeable = False
    return values


def _behind(values: np.ndarray, lower: bool, pair: bool) -> np.ndarray:
    """How far each GPU trails its node's reference, as compare measures it (0 for the best)."""
    if pair:
        reference = np.median(values, axis=1, keepdims=True)
    else:
        reference = values.min(axis=1, keepdims=True) if lower else values.max(axis=1, keepdims=True)
    behind: np.ndarray = values / reference - 1 if lower else 1 - values / reference
    return behind


def _caught_single(values: np.ndarray, tolerance: float, lower: bool) -> list[float]:
    """Per slow-down, the share of nodes where GPU 0, that much slower than drawn, trails the best of
    the node by more than the tolerance. The best is GPU 0 itself or the best of the others (B), so
    it is caught when v0 (1 - s) < (1 - tol) B, that is B / v0 > (1 - s) / (1 - tol); for lower is
    better, v0 (1 + s) > (1 + tol) B: B / v0 < (1 + s) / (1 + tol)."""
    others = values[:, 1:]
    best = others.min(axis=1) if lower else others.max(axis=1)
    ratio = np.sort(best / values[:, 0])
    rates = []
    for s in SLOWDOWNS:
        if lower:
            rates.append(np.searchsorted(ratio, (1 + s) / (1 + tolerance), side="left") / ratio.size)
        else:
            rates.append(1 - np.searchsorted(ratio, (1 - s) / (1 - tolerance), side="right") / ratio.size)
    return [float(r) for r in rates]


def _caught_pairs(values: np.ndarray, tolerance: float, lower: bool) -> list[float]:
    """As `_caught_single` for a pair's figure, whose reference is the node's median pair. The others
    are sorted once; the median with GPU 0 at its slowed value x is read from them and x."""
    others = np.sort(values[:, 1:], axis=1)
    n = values.shape[1]
    middle = [(n - 1) // 2, n // 2]  # the one or two middle places of n sorted figures
    rates = []
    for s in SLOWDOWNS:
        x = values[:, 0] * (1 + s) if lower else values[:, 0] * (1 - s)
        rank = (others < x[:, None]).sum(axis=1)
        at = [
            np.where(i < rank, others[:, min(i, n - 2)], np.where(i == rank, x, others[:, max(i - 1, 0)]))
            for i in middle
        ]
        median = (at[0] + at[1]) / 2
        caught = x / median - 1 > tolerance if lower else 1 - x / median > tolerance
        rates.append(float(caught.mean()))
    return rates
