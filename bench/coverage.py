"""Periodic coverage of a GPU fleet: how many days until 95% of the nodes have been re-tested, and
what share of the fleet's GPU-hours the re-tests take.

    python -m bench.coverage [--nodes 7500] [--idle-share 0.10] [--idle-hours 2] [--test-minutes 30]
                             [--retest-days 7] [--days 14] [--seed 1] [--json]
                             [--schedule CRON] [--parallelism N] [--job-deadline S] [--run-deadline S]

The CronJob's shape comes from deploy/cronjob.yaml (its schedule, the Job's parallelism and
activeDeadlineSeconds, the pod's activeDeadlineSeconds) unless a flag overrides it. A minute-by-minute
simulation, deterministic for a given --seed:

- each node alternates between busy (its GPUs taken by someone's pods) and idle, both periods
  exponential, idle for --idle-hours on average and --idle-share of the time;
- at each tick of the schedule, unless the last Job still runs (concurrencyPolicy: Forbid), a Job
  asks for --parallelism pods; a pending pod lands on a random idle node that is not being tested
  and not fresh (tested completely within --retest-days: the watch's gpu-burnin/fresh label),
  one pod a node;
- a run takes --test-minutes; when the node's idle period ends first, the run is preempted (the
  periodic PriorityClass never preempts, anything else preempts it): its GPU time is spent, the
  node is not covered, and the index gets a new pending pod (podFailurePolicy: Ignore on
  DisruptionTarget); a run longer than the pod's deadline is cut at it;
- at the Job's deadline (counted from its start, Pending time included) the pods still pending
  leave and the runs still going are cut;
- a node is covered by its first complete run; it is fresh for --retest-days after each.

Prints the days until 95% of the nodes were covered (or "not within N days") and the share of the
fleet's GPU-hours spent in runs (complete, preempted or cut) over --days; `--json` prints them as an
object with `days_to_95` (null when not reached) and `gpu_hours_share`, and the counts behind them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
CRONJOB = REPO / "deploy" / "cronjob.yaml"
DAY_MIN = 24 * 60
TARGET = 0.95


@dataclasses.dataclass(frozen=True)
class Shape:
    """What deploy/cronjob.yaml ships: when a Job starts, how many pods, how long they may take."""

    schedule: str
    parallelism: int
    job_deadline_s: int
    run_deadline_s: int


def shipped(path: Path = CRONJOB) -> Shape:
    cronjob = yaml.safe_load(path.read_text())
    job = cronjob["spec"]["jobTemplate"]["spec"]
    return Shape(
        schedule=str(cronjob["spec"]["schedule"]),
        parallelism=int(job["parallelism"]),
        job_deadline_s=int(job["activeDeadlineSeconds"]),
        run_deadline_s=int(job["template"]["spec"]["activeDeadlineSeconds"]),
    )


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, stop = low, high
        elif "-" in base:
            first, last = base.split("-")
            start, stop = int(first), int(last)
        else:
            start = int(base)
            stop = high if step_text else start
        if not low <= start <= stop <= high or step < 1:
            raise ValueError(f"{text!r} is out of range {low}-{high}")
        values.update(range(start, stop + 1, step))
    return values


def ticks_of_day(schedule: str) -> list[int]:
    """The minutes of a day at which a five-field cron schedule fires; day, month and weekday must be '*'."""
    fields = schedule.split()
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"]:
        raise ValueError(f"schedule {schedule!r}: only 'MINUTE HOUR * * *' is simulated")
    minutes, hours = _field(fields[0], 0, 59), _field(fields[1], 0, 23)
    return sorted(h * 60 + m for h in hours for m in minutes)


@dataclasses.dataclass(frozen=True)
class Fleet:
    nodes: int = 7500
    idle_share: float = 0.10
    idle_hours: float = 2.0
    test_minutes: float = 30.0
    retest_days: float = 7.0
    days: float = 14.0


@dataclasses.dataclass
class Outcome:
    days_to_95: float | None
    gpu_hours_share: float
    covered_share: float
    runs_complete: int
    runs_preempted: int
    runs_cut: int
    pods_left_unlanded: int
    jobs: int
    ticks_skipped: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def simulate(fleet: Fleet, shape: Shape, seed: int) -> Outcome:
    rng = np.random.default_rng(seed)
    n = fleet.nodes
    horizon = int(round(fleet.days * DAY_MIN))
    idle_mean = fleet.idle_hours * 60.0
    busy_mean = idle_mean * (1.0 - fleet.idle_share) / fleet.idle_share
    run_minutes = min(fleet.test_minutes, shape.run_deadline_s / 60.0)
    run_completes = fleet.test_minutes <= shape.run_deadline_s / 60.0
    retest = fleet.retest_days * DAY_MIN
    ticks = set(ticks_of_day(shape.schedule))

    # Stationary start: idle with probability idle_share; the time left in a period is exponential.
    idle = rng.random(n) < fleet.idle_share
    change_at = np.where(idle, rng.exponential(idle_mean, n), rng.exponential(busy_mean, n))
    testing = np.zeros(n, dtype=bool)
    started = np.zeros(n)
    ends_at = np.full(n, np.inf)
    fresh_until = np.full(n, -np.inf)
    covered = np.zeros(n, dtype=bool)

    test_minutes_spent = 0.0
    complete = preempted = cut = left = jobs = skipped = 0
    job_end: float | None = None  # the running Job's deadline
    pending = 0
    reached: float | None = None

    for t in range(horizon):
        # Workloads come and go; a run on a node whose idle period ends is preempted.
        flip = change_at <= t
        if flip.any():
            ending_idle = flip & idle
            lost = ending_idle & testing
            if lost.any():
                test_minutes_spent += float(np.sum(t - started[lost]))
                preempted += int(lost.sum())
                testing[lost] = False
                ends_at[lost] = np.inf
                if job_end is not None:
                    pending += int(lost.sum())  # the index's new pod
            idle[flip] = ~idle[flip]
            count = int(flip.sum())
            change_at[flip] = t + np.where(
                idle[flip], rng.exponential(idle_mean, count), rng.exponential(busy_mean, count)
            )

        # Runs that finish now.
        done = testing & (ends_at <= t)
        if done.any():
            test_minutes_spent += float(np.sum(ends_at[done] - started[done]))
            testing[done] = False
            ends_at[done] = np.inf
            if run_completes:
                complete += int(done.sum())
                covered[done] = True
                fresh_until[done] = t + retest
            else:
                cut += int(done.sum())

        # The Job's deadline: pending pods leave, runs still going are cut.
        if job_end is not None and t >= job_end:
            left += pending
            pending = 0
            running = testing.copy()
            if running.any():
                test_minutes_spent += float(np.sum(t - started[running]))
                cut += int(running.sum())
                testing[running] = False
                ends_at[running] = np.inf
            job_end = None
        if job_end is not None and pending == 0 and not testing.any():
            job_end = None  # every index done: the Job is complete

        # A tick: a new Job, unless the last one still runs.
        if t % DAY_MIN in ticks:
            if job_end is None:
                jobs += 1
                pending = shape.parallelism
                job_end = t + shape.job_deadline_s / 60.0
            else:
                skipped += 1

        # Pending pods land on free nodes not tested lately, one a node.
        if pending:
            free = np.flatnonzero(idle & ~testing & (fresh_until <= t))
            if free.size:
                chosen = rng.choice(free, size=min(pending, free.size), replace=False)
                testing[chosen] = True
                started[chosen] = t
                ends_at[chosen] = t + run_minutes
                pending -= chosen.size

        if reached is None and covered.sum() >= TARGET * n:
            reached = (t + 1) / DAY_MIN

    return Outcome(
        days_to_95=None if reached is None else round(reached, 2),
        gpu_hours_share=test_minutes_spent / (n * horizon),
        covered_share=float(covered.mean()),
        runs_complete=complete,
        runs_preempted=preempted,
        runs_cut=cut,
        pods_left_unlanded=left,
        jobs=jobs,
        ticks_skipped=skipped,
    )


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    defaults, cron = Fleet(), shipped()
    parser = argparse.ArgumentParser(prog="python -m bench.coverage", description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=_positive(int), default=defaults.nodes)
    parser.add_argument("--idle-share", type=_share, default=defaults.idle_share, help="share of nodes idle")
    parser.add_argument("--idle-hours", type=_positive(float), default=defaults.idle_hours, help="mean idle period")
    parser.add_argument("--test-minutes", type=_positive(float), default=defaults.test_minutes, help="one run")
    parser.add_argument("--retest-days", type=_positive(float), default=defaults.retest_days, help="--retest-after")
    parser.add_argument("--days", type=_positive(float), default=defaults.days, help="simulated days")
    parser.add_argument("--schedule", default=cron.schedule, help="cron schedule (deploy/cronjob.yaml)")
    parser.add_argument("--parallelism", type=_positive(int), default=cron.parallelism)
    parser.add_argument("--job-deadline", type=_positive(int), default=cron.job_deadline_s, help="seconds")
    parser.add_argument("--run-deadline", type=_positive(int), default=cron.run_deadline_s, help="seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    shape = Shape(args.schedule, args.parallelism, args.job_deadline, args.run_deadline)
    try:
        ticks_of_day(shape.schedule)
    except ValueError as err:
        print(f"python -m bench.coverage: --schedule: {err}", file=sys.stderr)
        return 4
    fleet = Fleet(args.nodes, args.idle_share, args.idle_hours, args.test_minutes, args.retest_days, args.days)
    outcome = simulate(fleet, shape, args.seed)
    if args.json:
        found = {**outcome.as_dict(), "fleet": dataclasses.asdict(fleet), "cronjob": dataclasses.asdict(shape)}
        print(json.dumps(found))
        return 0
    when = f"{outcome.days_to_95:.1f} days" if outcome.days_to_95 is not None else f"not within {fleet.days:g} days"
    print(
        f"{fleet.nodes} nodes, {fleet.idle_share:.0%} idle (periods of {fleet.idle_hours:g} h), runs of "
        f"{fleet.test_minutes:g} min, retest after {fleet.retest_days:g} days; CronJob {shape.schedule!r}, "
        f"parallelism {shape.parallelism}, deadlines {shape.job_deadline_s} s (Job), {shape.run_deadline_s} s (pod)"
    )
    print(f"95% of the fleet re-tested: {when}")
    print(f"GPU-hours spent testing over {fleet.days:g} days: {outcome.gpu_hours_share:.2%}")
    print(
        f"runs: {outcome.runs_complete} complete, {outcome.runs_preempted} preempted, {outcome.runs_cut} cut; "
        f"{outcome.pods_left_unlanded} pods left without landing; {outcome.jobs} Jobs, "
        f"{outcome.ticks_skipped} ticks skipped; {outcome.covered_share:.1%} covered at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
