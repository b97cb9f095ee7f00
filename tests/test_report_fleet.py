"""The fleet review finds exactly what bench/fleet.py planted: outliers, falls, failures, stale nodes,
unfinished preflights and broken files, no more and no fewer."""

import dataclasses
import datetime as dt

import pandas as pd
import pytest

from bench.fleet import NOW, FleetSpec, write_fleet
from harness import baselines
from harness.records import NODE
from reports import load_results, review, stats

SPEC = FleetSpec(
    nodes=48,
    history=3,
    slow_gpus=2,
    slow_nodes=1,
    fell_gpus=2,
    failing_nodes=3,
    stale_nodes=2,
    unfinished_preflights=2,
    broken_files=6,
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet")
    planted = write_fleet(directory, SPEC)
    loaded = load_results(directory)
    done = review.review(loaded, review.Settings(now=NOW), baselines.load_dir(baselines.default_dir()))
    return planted, done


def test_the_outliers_are_exactly_the_planted_slow_gpus_nodes_and_falls(fleet):
    planted, done = fleet
    found = {(r.node, int(r.gpu_index), r.metric) for r in done.outliers.itertuples()}
    assert found == planted.outliers
    assert len({(node, gpu) for node, gpu, _ in found}) == SPEC.slow_gpus + SPEC.slow_nodes * SPEC.gpus + SPEC.fell_gpus
    assert (done.outliers["z"] <= -done.settings.limits.outlier_z).all()
    assert done.outliers["serial"].str.len().gt(0).all(), "a technician finds a GPU by its serial"


def test_a_slow_node_passes_its_runs_and_is_still_an_outlier(fleet):
    """Every GPU of a slow node is 8% slow: the node comparison sees nothing, the floor lets it pass."""
    planted, done = fleet
    runs = stats.latest_runs(done.loaded.runs).set_index("node")
    assert len(planted.slow_nodes) == SPEC.slow_nodes
    for node in planted.slow_nodes:
        assert runs.loc[node, "verdict"] == "pass"
        assert {gpu for n, gpu, _ in planted.outliers if n == node} == set(range(SPEC.gpus))
        assert set(done.outliers.loc[done.outliers["node"] == node, "gpu_index"]) == set(range(SPEC.gpus))


def test_the_gpus_that_fell_between_runs_are_found_by_serial(fleet):
    planted, done = fleet
    assert {(r.node, int(r.gpu_index), r.metric) for r in done.fell.itertuples()} == planted.fell
    assert (done.fell["change"] < -0.05).all() and (done.fell["value"] < done.fell["previous"]).all()


def test_the_failing_nodes_and_their_codes_are_exactly_the_planted_ones(fleet):
    planted, done = fleet
    found = done.failures.groupby("node")["code"].agg(set).to_dict()
    assert found == planted.failing
    assert {"DATA_MISMATCH", "ECC_UNCORRECTABLE", "HANG"} <= set().union(*found.values())
    assert done.failures["remediation"].isin(["replace-gpu", "reset-gpu", "reboot-node"]).all()
    assert done.failures["gpu_index"].notna().all()


def test_stale_nodes_unfinished_preflights_and_broken_files_are_exactly_the_planted_ones(fleet):
    planted, done = fleet
    assert set(done.coverage.stale["node"]) == planted.stale
    assert (done.coverage.stale["age_days"] > 7).all()
    assert set(done.coverage.unfinished["node"]) == planted.unfinished
    assert {e.file for e in done.loaded.errors} == planted.broken
    assert len(done.coverage.nodes) == SPEC.nodes
    assert done.coverage.periodic_nodes == SPEC.nodes - SPEC.unfinished_preflights
    assert done.coverage.interval_days == pytest.approx(3.0)  # the generator's cadence


def test_a_shorter_window_finds_more_stale_nodes(fleet):
    _, done = fleet
    narrow = review.coverage.coverage(done.loaded.runs, NOW, dt.timedelta(days=1))
    assert set(done.coverage.stale["node"]) < set(narrow.stale["node"])


def test_the_summary_counts_what_the_tables_hold(fleet):
    planted, done = fleet
    summary = done.summary()
    assert summary["broken_files"] == SPEC.broken_files and summary["runs"] == planted.runs
    assert summary["measurements"] == planted.measurements and summary["nodes"] == SPEC.nodes
    assert summary["failing_nodes"] == len(planted.failing) == summary["latest_verdicts"]["fail"]
    assert summary["latest_verdicts"]["incomplete"] == SPEC.unfinished_preflights
    assert summary["outlier_figures"] == len(planted.outliers)


def test_fleet_statistics_count_each_gpu_once(fleet):
    planted, done = fleet
    row = done.fleet.set_index(["gpu_name", "metric"]).loc[("NVIDIA H100 80GB HBM3", "matmul.bf16.tflops")]
    h100_gpus = SPEC.nodes // 2 * SPEC.gpus  # nodes take the two models in turn
    assert h100_gpus - SPEC.failing_nodes <= row["count"] <= h100_gpus  # a hung GPU measured nothing
    assert row["p1"] <= row["p5"] <= row["median"] <= row["p95"]
    assert row["sigma"] == pytest.approx(1.4826 * row["mad"])


def test_lower_is_better_outliers_are_the_high_ones():
    rows = [("n", f"g{i}", i, "lat", 10.0 + 0.1 * (i % 3), "lower") for i in range(30)]
    rows.append(("n", "gX", 99, "lat", 20.0, "lower"))  # much slower
    rows.append(("n", "gY", 98, "lat", 5.0, "lower"))  # much faster: not an outlier
    frame = _frame(rows)
    found = stats.outliers(frame, stats.fleet(frame), stats.Limits())
    assert list(found["gpu"]) == ["gX"] and found["z"].iloc[0] < 0 and found["share"].iloc[0] < 0


def test_node_wide_figures_are_kept_apart_per_node():
    rows = [(f"n{i}", NODE, None, "nccl.x", 100.0 + i, "higher") for i in range(5)]
    frame = _frame(rows)
    assert len(stats.latest(frame)) == 5
    later = frame.assign(started_at=frame["started_at"] + pd.Timedelta(days=1), value=frame["value"] * 0.5)
    later["run_id"] = "r2"
    fell = stats.fell(pd.concat([frame, later], ignore_index=True), stats.Limits())
    assert sorted(fell["node"]) == [f"n{i}" for i in range(5)]


def _frame(rows):
    return pd.DataFrame(
        [
            {
                "run_id": "r1",
                "node": node,
                "started_at": pd.Timestamp("2026-11-27", tz="UTC"),
                "gpu": gpu,
                "gpu_index": index,
                "gpu_name": "G",
                "serial": "" if gpu == NODE else f"s{gpu}",
                "metric": metric,
                "value": value,
                "unit": "x",
                "direction": direction,
                "peer": "",
            }
            for node, gpu, index, metric, value, direction in rows
        ]
    )


def test_the_generator_refuses_more_planted_nodes_than_the_fleet_has():
    with pytest.raises(ValueError, match="do not fit"):
        dataclasses.replace(SPEC, nodes=5)
