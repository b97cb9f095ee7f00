"""The node tolerance's price: the Monte Carlo judges as harness.compare does, and the fit finds the spread."""

import numpy as np
import pytest

from bench.fleet import MODELS, NOISE, FleetSpec, write_fleet
from harness.baselines import MetricSpec, Provenance
from harness.compare import Standing, assess
from harness.devices import Device
from harness.records import Direction, Measurement
from reports import load_results, sensitivity, stats


def _brute(values, slowdown, tolerance, lower, pair):
    """Through harness.compare itself: node by node, the first GPU slowed."""
    spec = MetricSpec(
        name="m.x",
        unit="u",
        direction=Direction.LOWER if lower else Direction.HIGHER,
        limit=1e9 if lower else 0.0,
        node_tolerance=tolerance,
        required=True,
        provenance=Provenance(kind="estimate", source="test"),
    )
    baseline = type("B", (), {"metrics": {"m.x": spec}, "path": None})()
    devices = [Device(index=i, kind="cuda", name="G", uuid=f"G{i}") for i in range(values.shape[1])]
    caught = 0
    for row in values:
        row = row.copy()
        row[0] = row[0] * (1 + slowdown) if lower else row[0] * (1 - slowdown)
        ms = [
            Measurement(
                metric="m.x", gpu=f"G{i}", value=float(v), unit="u", direction=spec.direction, peer=f"G{i + 1}" * pair
            )
            for i, v in enumerate(row)
        ]
        found = assess(ms, devices, {d.uuid: baseline for d in devices})
        caught += found[0].status is Standing.BEHIND_NODE
    return caught / len(values)


@pytest.mark.parametrize(("lower", "pair"), [(False, False), (True, False), (False, True)])
def test_the_simulation_agrees_with_harness_compare(lower, pair):
    values = sensitivity._healthy(0.01, 8)[:400]
    fast = (sensitivity._caught_pairs if pair else sensitivity._caught_single)(values, 0.03, lower)
    for slowdown in (0.01, 0.03, 0.05, 0.08):
        at = sensitivity.SLOWDOWNS.index(slowdown)
        assert fast[at] == pytest.approx(_brute(values, slowdown, 0.03, lower, pair), abs=1e-12), slowdown


def test_the_proposed_tolerance_is_the_smallest_step_within_the_false_flag_goal():
    for sigma in (0.004, 0.006, 0.01, 0.02):
        tolerance = sensitivity.tolerance_for(sigma, 8)
        assert sensitivity.evaluate(sigma, 8, tolerance).false_flag <= sensitivity.GOAL_FALSE_FLAG
        tighter = tolerance - sensitivity.TOLERANCE_STEP
        assert tighter <= 0 or sensitivity.evaluate(sigma, 8, tighter).false_flag > sensitivity.GOAL_FALSE_FLAG


def test_detection_grows_with_the_slow_down_and_a_tight_spread_meets_the_goal():
    tight = sensitivity.evaluate(0.006, 8, sensitivity.tolerance_for(0.006, 8))
    assert tight.meets_goal and tight.caught99 is not None and tight.caught99 <= 0.05
    loose = sensitivity.evaluate(0.006, 8, 0.10)
    assert loose.detection == 0 and loose.false_flag == 0 and loose.caught99 > 0.10
    rates = sensitivity._caught_single(sensitivity._healthy(0.01, 8), 0.05, False)
    assert rates == sorted(rates) and rates[-1] == 1.0


def test_the_fitted_within_node_spread_is_the_generators(tmp_path):
    model = "NVIDIA H100 80GB HBM3"
    write_fleet(tmp_path, FleetSpec(nodes=40, models=(model,), seed=3))
    figures = stats.latest(load_results(tmp_path).measurements)
    spreads = sensitivity.within_spread(figures).set_index("metric")
    # The node-to-node spread cancels within a node; what is left is GPU to GPU and run noise.
    ratios = [
        spreads.loc[t.metric, "sigma"] / np.hypot(t.spread, NOISE) for t in MODELS[model] if t.median != 0
    ]  # each from 320 GPUs (a MAD's own error is about 9% there), their mean from 17 metrics
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.05) and 0.7 < min(ratios) and max(ratios) < 1.3
    assert spreads.loc["nvlink.p2p.gbps", "pair"] and spreads.loc["nvlink.p2p.gbps", "gpus"] == 16
    assert spreads.loc["nvlink.p2p.bidir.gbps", "gpus"] == 8  # a pair's both-ways figure counted once
    assert not spreads.loc["matmul.bf16.tflops", "pair"] and spreads.loc["matmul.bf16.tflops", "gpus"] == 8
