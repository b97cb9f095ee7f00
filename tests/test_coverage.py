"""bench/coverage.py: the periodic CronJob's coverage of a fleet, simulated. With the shipped
CronJob (deploy/cronjob.yaml, read by the bench) a 7,500-node fleet with 10% of its nodes idle at
any time is 95% re-tested within 7 days, for under 1% of its GPU-hours; and the simulation
answers the questions it is asked (fewer pods, no freshness, no idle nodes) the way the design
says it should."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import coverage
from tests.helpers import REPO

SMALL = coverage.Fleet(nodes=300, days=10)
SMALL_SHAPE = coverage.Shape(schedule="0 */2 * * *", parallelism=6, job_deadline_s=6900, run_deadline_s=2700)


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.coverage", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def test_the_shipped_cronjob_covers_95_percent_of_7500_nodes_within_a_week_for_under_1_percent():
    done = run_bench("--json", "--seed", "1")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["fleet"]["nodes"] == 7500 and found["fleet"]["idle_share"] == 0.10
    assert found["cronjob"] == vars(coverage.shipped())
    assert found["days_to_95"] is not None and found["days_to_95"] <= 7.0, found
    assert 0 < found["gpu_hours_share"] < 0.01, found


def test_the_seed_before_this_one_pod_every_6_hours_covers_almost_nothing():
    """The shape this replaces: 4 nodes a day, each node once in about five years."""
    outcome = coverage.simulate(coverage.Fleet(days=7), coverage.Shape("0 */6 * * *", 1, 3600, 3600), seed=1)
    assert outcome.days_to_95 is None
    assert outcome.covered_share < 0.01


def test_a_small_fleet_is_covered_and_the_same_seed_gives_the_same_figures():
    first = coverage.simulate(SMALL, SMALL_SHAPE, seed=7)
    assert first == coverage.simulate(SMALL, SMALL_SHAPE, seed=7)
    assert first.days_to_95 is not None and first.days_to_95 < 7.0
    assert first.covered_share >= 0.95
    assert first.runs_complete >= 0.95 * SMALL.nodes


def test_without_freshness_the_runs_land_on_nodes_already_tested():
    """The gpu-burnin/fresh label is what spreads the runs: without it (retest after a minute) the
    same idle nodes are tested again and again, and coverage takes longer."""
    with_label = coverage.simulate(SMALL, SMALL_SHAPE, seed=3)
    without = coverage.simulate(coverage.Fleet(nodes=300, days=10, retest_days=1 / 1440), SMALL_SHAPE, seed=3)
    assert with_label.days_to_95 is not None
    assert without.days_to_95 is None or without.days_to_95 > with_label.days_to_95


def test_a_run_longer_than_the_pods_deadline_never_covers_a_node():
    outcome = coverage.simulate(SMALL, coverage.Shape("0 */2 * * *", 6, 6900, 600), seed=1)
    assert outcome.runs_complete == 0 and outcome.covered_share == 0.0
    assert outcome.runs_cut > 0


def test_a_job_still_running_at_the_next_tick_makes_it_skip():
    outcome = coverage.simulate(SMALL, coverage.Shape("0 * * * *", 6, 7200, 2700), seed=1)
    assert outcome.ticks_skipped > 0


@pytest.mark.parametrize(
    ("schedule", "minutes"),
    [
        ("0 */2 * * *", [h * 60 for h in range(0, 24, 2)]),
        ("0 * * * *", [h * 60 for h in range(24)]),
        ("*/30 1-2 * * *", [60, 90, 120, 150]),
        ("15 3,9 * * *", [195, 555]),
    ],
)
def test_the_schedule_is_read_as_cron_reads_it(schedule, minutes):
    assert coverage.ticks_of_day(schedule) == minutes


@pytest.mark.parametrize("schedule", ["0 0 * * 1", "61 * * * *", "0 */2 * *", "0 24 * * *"])
def test_a_schedule_it_cannot_simulate_is_refused_with_exit_4(schedule):
    done = run_bench("--schedule", schedule, "--nodes", "10", "--days", "0.1")
    assert done.returncode == 4, done
    assert done.stderr.startswith("python -m bench.coverage: --schedule:"), done.stderr
    assert done.stdout == ""


def test_the_plain_output_says_both_figures():
    done = run_bench("--nodes", "200", "--parallelism", "4", "--days", "8", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert "95% of the fleet re-tested:" in done.stdout
    assert "GPU-hours spent testing over 8 days:" in done.stdout
