"""Synthetic fleets: result files for the fleet report's tests and bench/report_scale.py.

    python -m bench.fleet OUT_DIR --nodes 200 --slow-gpus 3 --failing-nodes 2 --stale-nodes 2 --broken-files 3

Every file is a `ResultDocument` written through its own `to_dict()`, judged by the
suite's own comparison (`harness.compare`) against the packaged baselines and its
verdict decided by `harness.verdict.decide`, so the files cannot drift from what a
real run writes. What was planted is returned (and printed) as a `Planted`, for the
tests to check the report finds exactly that.

The value model, per GPU and metric: median x node factor x GPU factor x run noise,
each factor 1 + spread x z with z a normal draw clipped to +-4 (a healthy GPU is never
more than 4 spreads off, so that planted outliers are unambiguous). Planted slow GPUs,
slow nodes, GPUs that fell between runs and bad batches scale the matmul figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

from bench.fleet_models import MODELS, PEER_METRICS, SM_COUNT, Truth
from harness import baselines, compare, verdict
from harness.devices import Device
from harness.profiles import quick
from harness.records import Code, Direction, Finding, Measurement, Remediation, Severity
from harness.results import ResultDocument, RunState, TestRecord, path_for
from harness.verdict import TestOutcome, Verdict

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
DRIVERS = ("580.159.04", "580.126.09")
SLOW_GPU = 0.88
"""A planted slow GPU's matmul figures, as a share of its own: 12% slow (about 15 spreads)."""
SLOW_NODE = 0.92
"""A planted slow node's: every GPU 8% slow, so the node comparison cannot see it; the floor does not either."""
FELL = 0.90
"""A GPU that fell between runs: its latest matmul figures are 10% below its previous run's."""
BAD_BATCH = 0.86
"""A bad batch's matmul figures: above the packaged floors (about 81% of the median), below the fleet."""
CLIP = 4.0
NOISE = 0.001
"""Run to run, the same GPU."""


@dataclasses.dataclass(kw_only=True)
class FleetSpec:
    """What to generate. Planted kinds never overlap: each takes its own nodes."""

    nodes: int
    gpus: int = 8
    models: tuple[str, ...] = tuple(MODELS)
    """Nodes take models in turn."""
    seed: int = 1
    now: dt.datetime = NOW
    history: int = 1
    """Finished runs per healthy node, three days apart, the latest within the last six days."""
    slow_gpus: int = 0
    slow_nodes: int = 0
    fell_gpus: int = 0
    failing_nodes: int = 0
    stale_nodes: int = 0
    unfinished_preflights: int = 0
    broken_files: int = 0
    bad_batch: float = 0.0
    """Share of nodes (the last ones) whose GPUs all run at BAD_BATCH: they pass their runs."""
    indent: int | None = 1
    """As harness.results.write (1); None writes compact JSON."""

    def __post_init__(self) -> None:
        planted = self.slow_gpus + self.slow_nodes + self.fell_gpus + self.failing_nodes
        planted += self.stale_nodes + self.unfinished_preflights + round(self.bad_batch * self.nodes)
        if planted > self.nodes:
            raise ValueError(f"{planted} planted nodes do not fit in {self.nodes}")
        if self.gpus < 2 or self.history < 1:
            raise ValueError("a node needs at least 2 GPUs and one run")


@dataclasses.dataclass(kw_only=True)
class Planted:
    """What the generator put in, for the report to find."""

    outliers: set[tuple[str, int, str]] = dataclasses.field(default_factory=set)
    """(node, GPU index, metric) of every figure planted far below its model's fleet."""
    fell: set[tuple[str, int, str]] = dataclasses.field(default_factory=set)
    failing: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    """Node -> finding codes of its latest, failed run (planted faults, and what the judge found)."""
    stale: set[str] = dataclasses.field(default_factory=set)
    unfinished: set[str] = dataclasses.field(default_factory=set)
    broken: set[str] = dataclasses.field(default_factory=set)
    bad_batch: set[str] = dataclasses.field(default_factory=set)
    slow_nodes: set[str] = dataclasses.field(default_factory=set)
    """Nodes whose every GPU is slow: they pass their runs."""
    nodes: int = 0
    gpus: int = 0
    runs: int = 0
    measurements: int = 0


def write_fleet(directory: Path, spec: FleetSpec) -> Planted:
    directory.mkdir(parents=True, exist_ok=True)
    return _Writer(directory, spec).write()


class _Writer:
    def __init__(self, directory: Path, spec: FleetSpec):
        self.directory, self.spec = directory, spec
        self.rng = np.random.default_rng(spec.seed)
        self.baselines = baselines.load_dir(baselines.default_dir())
        self.planted = Planted()
        self.faults: dict[str, int] = {}
        self._check()

    def _check(self) -> None:
        """The packaged floors may be raised; then the medians here must follow, or healthy nodes would fail."""
        for model in self.spec.models:
            baseline = self.baselines.for_device("cuda", model, self.spec.gpus)
            for truth in MODELS[model]:
                spec = baseline.metrics.get(truth.metric) if baseline else None
                worst = truth.median * (1 - CLIP * truth.spread) * (1 - CLIP * truth.node_spread) * (1 - CLIP * NOISE)
                if spec and spec.direction is Direction.HIGHER and worst < spec.limit:
                    raise ValueError(
                        f"bench/fleet.py: a healthy {model} can measure {truth.metric} = {worst:.4g}, under the floor "
                        f"{spec.limit} in {baseline.path if baseline else ''}: raise the median here"
                    )

    def write(self) -> Planted:
        spec = self.spec
        kinds: list[str] = []
        for kind, count in (
            ("slow_gpu", spec.slow_gpus),
            ("slow_node", spec.slow_nodes),
            ("fell", spec.fell_gpus),
            ("failing", spec.failing_nodes),
            ("stale", spec.stale_nodes),
            ("unfinished", spec.unfinished_preflights),
        ):
            kinds += [kind] * count
        batch = round(spec.bad_batch * spec.nodes)
        kinds += ["healthy"] * (spec.nodes - len(kinds) - batch) + ["bad_batch"] * batch
        # Spread the planted nodes over the fleet (and over the models), the bad batch stays last.
        order = self.rng.permutation(spec.nodes - batch)
        planted_kinds = [kinds[i] for i in np.argsort(order)] + kinds[spec.nodes - batch :]
        for number, kind in enumerate(planted_kinds):
            self.node(number, kind)
        for number in range(spec.broken_files):
            self.broken(number)
        return self.planted

    def node(self, number: int, kind: str) -> None:
        spec = self.spec
        name = f"gpu-node-{number:05d}"
        model = spec.models[number % len(spec.models)]
        sm, cc = SM_COUNT[model]
        devices = [
            Device(
                index=i,
                kind="cuda",
                name=model,
                uuid=f"GPU-{number:05d}-{i:02d}-{spec.seed:04x}",
                serial=f"165{number:06d}{i:02d}",
                pci_bus_id=f"00000000:{0x18 + i * 0x10:02X}:00.0",
                memory_bytes=85520809984,
                sm_count=sm,
                compute_capability=cc,
            )
            for i in range(spec.gpus)
        ]
        truths = MODELS[model]
        node_z = self.clipped(len(truths))
        gpu_z = self.clipped((spec.gpus, len(truths)))
        base = {
            t.metric: t.median * (1 + t.node_spread * node_z[j]) * (1 + t.spread * gpu_z[:, j])
            for j, t in enumerate(truths)
        }
        for j, t in enumerate(truths):
            if t.metric in PEER_METRICS:  # a figure per pair of GPUs: [source, peer]
                base[t.metric] = (
                    t.median * (1 + t.node_spread * node_z[j]) * (1 + t.spread * self.clipped((spec.gpus,) * 2))
                )
        factor = np.ones(spec.gpus)
        victim = int(self.rng.integers(spec.gpus))
        if kind == "slow_gpu":
            factor[victim] = SLOW_GPU
        elif kind == "slow_node":
            factor[:] = SLOW_NODE
            self.planted.slow_nodes.add(name)
        elif kind == "bad_batch":
            factor[:] = BAD_BATCH
            self.planted.bad_batch.add(name)
        if kind in ("slow_gpu", "slow_node", "fell"):
            hit = [victim] if kind != "slow_node" else range(spec.gpus)
            self.planted.outliers |= {
                (name, i, t.metric) for i in hit for t in truths if t.metric.startswith("matmul.")
            }
        if kind == "fell":
            self.planted.fell |= {(name, victim, t.metric) for t in truths if t.metric.startswith("matmul.")}
        runs = spec.history if kind not in ("unfinished",) else 1
        runs = max(runs, 2) if kind == "fell" else runs
        age = dt.timedelta(days=10 + float(self.rng.uniform(0, 20))) if kind == "stale" else self.recent()
        latest = spec.now - age
        for run in range(runs):
            started = latest - dt.timedelta(days=3 * (runs - 1 - run))
            last = run == runs - 1
            run_factor = factor.copy()
            if kind == "fell" and last:
                run_factor[victim] = FELL
            entrypoint = "preflight" if run == 0 else "periodic"
            self.run(name, devices, truths, base, run_factor, started, entrypoint, kind if last else "healthy", victim)
        if kind == "stale":
            self.planted.stale.add(name)
        if kind == "unfinished":
            self.planted.unfinished.add(name)
        self.planted.nodes += 1
        self.planted.gpus += spec.gpus

    def run(
        self,
        node: str,
        devices: list[Device],
        truths: tuple[Truth, ...],
        base: dict[str, np.ndarray],
        factor: np.ndarray,
        started: dt.datetime,
        entrypoint: str,
        kind: str,
        victim: int,
    ) -> None:
        n = len(devices)
        noise = 1 + NOISE * self.clipped((n, len(truths)))
        measurements = []
        for j, t in enumerate(truths):
            if kind == "unfinished" and not t.metric.startswith("matmul."):
                continue  # killed during the memory test
            for i, device in enumerate(devices):
                if (
                    kind == "failing"
                    and i == victim
                    and t.metric.startswith("matmul.")
                    and self.code(node) is Code.HANG
                ):
                    continue  # a hung GPU measured nothing
                figures: list[tuple[float, Device | None]] = []
                if t.metric in PEER_METRICS:  # to the next and the previous GPU; both ways: one figure per pair
                    for k in ((i + 1) % n, (i - 1) % n):
                        a, b = (i, k) if t.metric == PEER_METRICS[0] else (min(i, k), max(i, k))
                        figures.append((base[t.metric][a, b] * noise[a, j], devices[k]))
                else:
                    figures.append((base[t.metric][i] * noise[i, j], None))
                for value, peer in figures:
                    if t.metric.startswith("matmul."):
                        value *= factor[i]
                    measurements.append(
                        Measurement(
                            metric=t.metric,
                            gpu=device.uuid,
                            value=round(value, 3) if t.median else 0.0,
                            unit=t.unit,
                            direction=t.direction,
                            test=t.test,
                            samples=30,
                            low=round(value * 0.98, 3),
                            high=round(value * 1.01, 3),
                            peer=peer.uuid if peer else "",
                        )
                    )
        tests = sorted({t.test for t in truths})
        baseline_for = {d.uuid: self.baselines.for_device("cuda", d.name, n) for d in devices}  # one model a node
        judged = compare.findings(compare.assess(measurements, devices, baseline_for))
        findings = [f for f in judged if f.code is not Code.NOT_IN_BASELINE]  # keeps the files small
        if kind == "failing":
            findings.append(self.fault(node, devices[victim]))
        failed = {f.test for f in findings if f.severity is Severity.FAIL}
        records = [
            TestRecord(
                nodeid=test,
                group=test.split("test_")[-1],
                outcome=TestOutcome.FAILED if test in failed else TestOutcome.PASSED,
                duration_s=70.0,
            )
            for test in tests
        ]
        finished = kind != "unfinished"
        if not finished:
            entrypoint = "preflight"
            records = [dataclasses.replace(r, outcome=TestOutcome.NOT_RUN) for r in records]
        judgement = (
            verdict.decide(findings, {r.nodeid: r.outcome for r in records}) if finished else Verdict.unfinished()
        )
        run_id = f"{started:%Y%m%dT%H%M%SZ}-{int(self.rng.integers(1 << 24)):06x}"
        doc = ResultDocument(
            run_id=run_id,
            node=node,
            started_at=started,
            ended_at=started + dt.timedelta(minutes=12) if finished else None,
            device_kind="cuda",
            entrypoint=entrypoint,
            state=RunState.FINISHED if finished else RunState.RUNNING,
            profile=quick(),
            host={"driver": DRIVERS[int(self.rng.integers(len(DRIVERS)))], "torch": "2.11.0+cu130", "hostname": node},
            devices=devices,
            tests=records,
            measurements=measurements,
            findings=findings,
            verdict=judgement,
        )
        self.save(path_for(self.directory, node, run_id), doc)
        if judgement.status is verdict.Status.FAIL:
            self.planted.failing[node] = {str(f.code) for f in findings if f.severity is Severity.FAIL}
        else:
            self.planted.failing.pop(node, None)
        self.planted.runs += 1
        self.planted.measurements += len(measurements)

    def code(self, node: str) -> Code:
        """The planted fault of a failing node: the three kinds in turn, in the order the nodes come."""
        order = self.faults.setdefault(node, len(self.faults))
        return (Code.DATA_MISMATCH, Code.ECC_UNCORRECTABLE, Code.HANG)[order % 3]

    def fault(self, node: str, device: Device) -> Finding:
        code = self.code(node)
        if code is Code.DATA_MISMATCH:
            return device.finding(
                code,
                Severity.FAIL,
                "a product differs bitwise from its first",
                Remediation.REPLACE_GPU,
                test="gputests/test_matmul.py::test_matmul",
            )
        if code is Code.ECC_UNCORRECTABLE:
            return device.finding(
                code,
                Severity.FAIL,
                "2 uncorrectable ECC errors (volatile, DRAM)",
                Remediation.REPLACE_GPU,
                test="gputests/test_memory.py::test_memory",
            )
        return device.finding(
            code,
            Severity.FAIL,
            "no progress for 60 s; worker killed",
            Remediation.RESET_GPU,
            test="gputests/test_matmul.py::test_matmul",
        )

    def broken(self, number: int) -> None:
        """A torn copy, an empty file, another schema, a newer version, a missing field, a value not a number."""
        path = self.directory / f"broken-{number:03d}.json"
        good = {"schema": "gpu-burnin/result", "schema_version": 1, "state": "finished", "run_id": "x", "node": "n"}
        kind = number % 6
        if kind == 0:
            text = json.dumps(good)[:40]
        elif kind == 1:
            text = ""
        elif kind == 2:
            text = json.dumps({"schema": "something/else", "items": []})
        elif kind == 3:
            text = json.dumps(good | {"schema_version": 99})
        elif kind == 4:
            text = json.dumps(good)  # no started_at, device_kind, verdict
        else:
            device = Device(index=0, kind="cuda", name="NVIDIA H100 80GB HBM3", uuid="GPU-broken")
            doc = ResultDocument(
                run_id="20261127T000000Z-bad000",
                node=f"broken-{number}",
                started_at=self.spec.now,
                device_kind="cuda",
                devices=[device],
            )
            data = doc.to_dict()
            data["measurements"] = [
                {
                    "metric": "matmul.bf16.tflops",
                    "gpu": device.uuid,
                    "value": "fast",
                    "unit": "TFLOP/s",
                    "direction": "higher",
                }
            ]
            text = json.dumps(data)
        path.write_text(text)
        self.planted.broken.add(str(path))

    def save(self, path: Path, doc: ResultDocument) -> None:
        """As harness.results.write, less the fsyncs (a generator, not a run)."""
        path.write_text(json.dumps(doc.to_dict(), indent=self.spec.indent, allow_nan=False) + "\n")

    def clipped(self, shape: int | tuple[int, ...]) -> np.ndarray:
        return np.clip(self.rng.standard_normal(shape), -CLIP, CLIP)

    def recent(self) -> dt.timedelta:
        return dt.timedelta(hours=float(self.rng.uniform(1, 6 * 24)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history", type=int, default=1)
    for flag in (
        "slow-gpus",
        "slow-nodes",
        "fell-gpus",
        "failing-nodes",
        "stale-nodes",
        "unfinished-preflights",
        "broken-files",
    ):
        parser.add_argument(f"--{flag}", type=int, default=0)
    parser.add_argument(
        "--bad-batch", type=float, default=0.0, help="share of nodes in a slow batch that passes its runs"
    )
    args = parser.parse_args(argv)
    spec = FleetSpec(
        nodes=args.nodes,
        gpus=args.gpus,
        seed=args.seed,
        history=args.history,
        slow_gpus=args.slow_gpus,
        slow_nodes=args.slow_nodes,
        fell_gpus=args.fell_gpus,
        failing_nodes=args.failing_nodes,
        stale_nodes=args.stale_nodes,
        unfinished_preflights=args.unfinished_preflights,
        broken_files=args.broken_files,
        bad_batch=args.bad_batch,
    )
    planted = write_fleet(args.directory, spec)
    print(
        f"{planted.runs} result files, {planted.measurements} measurements, {planted.nodes} nodes "
        f"({spec.now:%Y-%m-%d}); planted: {len(planted.outliers)} outlying figures, "
        f"{len(planted.failing)} failing nodes, {len(planted.stale)} stale, "
        f"{len(planted.unfinished)} unfinished preflights, {len(planted.broken)} broken files"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
