"""Measurements against baselines: the two comparisons, always.

1. Against the model's floor (or ceiling): catches a slow node even when all its
   GPUs are equally slow.
2. Against the best GPU of the same model in the node: catches one weak GPU among
   good ones. A figure of a pair of GPUs (a copy from one to the other) is compared
   with the median pair instead: a node's best pair may sit on a faster path than
   the rest by design (two GPUs under one PCIe switch), and one slow link must not
   move the reference.
Both are pure functions of the measurements, the devices and their baselines.
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

from harness.baselines import Baseline, MetricSpec
from harness.devices import Device
from harness.records import Code, Direction, Finding, Measurement, Remediation, Severity


class Standing(StrEnum):
    """Where one figure stands against its baseline and its node; the value is what the summary table shows."""

    OK = "ok"
    BELOW_LIMIT = "LOW"
    """It misses the baseline's floor (or is over its ceiling)."""
    BEHIND_NODE = "BEHIND"
    """It meets the limit but trails the node's reference by more than the tolerance."""
    NO_BASELINE = "no baseline"
    """The device has no baseline."""
    UNCHECKED = "unchecked"
    """Measured, but the baseline does not list the metric."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Assessment:
    measurement: Measurement
    device: Device | None
    spec: MetricSpec | None
    baseline: Baseline | None
    node_best: float | None
    """The node's reference for this metric among its devices of the same model: the best value,
    or for a pair's figure the median pair."""
    status: Standing
    peer: Device | None = None
    """The pair's other GPU, for a pair's figure."""

    @property
    def reference(self) -> str:
        """What `node_best` is, in words."""
        return "the median pair" if self.measurement.peer else "the best"

    @property
    def ratio(self) -> float | None:
        """This device against the node's reference, 1.0 being level with it (either direction)."""
        best, value = self.node_best, self.measurement.value
        if best is None or best == 0 or value == 0:
            return None
        return value / best if self.measurement.direction is Direction.HIGHER else best / value


def assess(
    measurements: Iterable[Measurement], devices: Sequence[Device], baseline_for: Mapping[str, Baseline | None]
) -> list[Assessment]:
    by_uuid = {d.uuid: d for d in devices}
    measurements = list(measurements)
    best = _node_best(measurements, by_uuid)
    found = []
    for m in measurements:
        device = by_uuid.get(m.gpu)
        baseline = baseline_for.get(m.gpu)
        spec = baseline.metrics.get(m.metric) if baseline else None
        node_best = best.get((m.metric, device.model_key, bool(m.peer))) if device else None
        found.append(
            Assessment(
                measurement=m,
                device=device,
                spec=spec,
                baseline=baseline,
                node_best=node_best,
                status=_status(m, baseline, spec, node_best),
                peer=by_uuid.get(m.peer) if m.peer else None,
            )
        )
    return found


def findings(assessments: Iterable[Assessment]) -> list[Finding]:
    """A failing finding for every measurement that misses its limit or trails its node,
    and a warning for every figure its baseline does not judge."""
    found = []
    for a in assessments:
        if a.status is Standing.UNCHECKED and a.baseline is not None:
            m = a.measurement
            who = f"{a.device.label} ({m.gpu})" if a.device else m.gpu
            found.append(
                Finding(
                    code=Code.NOT_IN_BASELINE,
                    severity=Severity.WARNING,
                    gpu=m.gpu,
                    message=f"{who}: {m.metric} = {m.value:.4g} {m.unit} is not judged: "
                    f"{a.baseline.path.name} has no limit for it",
                    remediation=Remediation.CHECK_CONFIG,
                    test=m.test,
                    metric=m.metric,
                )
            )
            continue
        if a.status not in (Standing.BELOW_LIMIT, Standing.BEHIND_NODE) or a.spec is None or a.baseline is None:
            continue
        m, spec = a.measurement, a.spec
        who = f"{a.device.label} ({m.gpu})" if a.device else m.gpu
        figure = f"{m.metric} = {m.value:.4g} {m.unit}"
        if m.peer:
            who += f" to {a.peer.label if a.peer else m.peer}"
        if a.status is Standing.BELOW_LIMIT:
            side = "below the floor" if spec.direction is Direction.HIGHER else "above the ceiling"
            text = f"{who}: {figure}, {side} of {spec.limit:g} in {a.baseline.path.name}"
            remediation = Remediation.REBOOT_NODE
        else:
            text = (
                f"{who}: {figure}, {1 - (a.ratio or 0):.0%} behind {a.reference} {m.metric} of its model in this "
                f"node ({a.node_best:.4g}; tolerance {spec.node_tolerance:.0%})"
            )
            remediation = Remediation.RESET_GPU
        found.append(
            Finding(
                code=Code.LOW_THROUGHPUT if spec.direction is Direction.HIGHER else Code.OVER_LIMIT,
                severity=Severity.FAIL,
                gpu=m.gpu,
                message=text,
                remediation=remediation,
                test=m.test,
                metric=m.metric,
                details={"value": m.value, "limit": spec.limit, "node_best": a.node_best, "status": str(a.status)}
                | ({"peer": m.peer} if m.peer else {}),
            )
        )
    return found


def missing(
    devices: Sequence[Device],
    baseline_for: Mapping[str, Baseline | None],
    measurements: Iterable[Measurement],
    *,
    group: str,
    test: str,
    excused: Iterable[str] = (),
    nothing_to_test: Iterable[str] = (),
) -> list[Finding]:
    """Required metrics of `group` that a finished test did not measure.

    `excused` GPUs already have a finding that explains the gap (a hang, an error). `nothing_to_test`
    GPUs had no peer to test with (one GPU, a test between GPUs): their baseline having no metric of the
    group is then as it should be (a 1-GPU file), not a gap; its required metrics still count.
    """
    have = {(m.gpu, m.metric) for m in measurements}
    excused = set(excused)
    alone = set(nothing_to_test)
    found = []
    for device in devices:
        baseline = baseline_for.get(device.uuid)
        if baseline is None or device.uuid in excused:
            continue
        if not any(spec.group == group for spec in baseline.metrics.values()):
            if device.uuid in alone:
                continue
            found.append(
                device.finding(
                    Code.NO_BASELINE,
                    Severity.INCOMPLETE,
                    f"{baseline.path.name} has no {group} metric: nothing this test measured could be judged",
                    Remediation.CHECK_CONFIG,
                    test=test,
                )
            )
            continue
        for spec in baseline.metrics.values():
            if spec.required and spec.group == group and (device.uuid, spec.name) not in have:
                found.append(
                    device.finding(
                        Code.MISSING_MEASUREMENT,
                        Severity.INCOMPLETE,
                        f"{spec.name} is required by {baseline.path.name} but was not measured",
                        Remediation.RERUN,
                        test=test,
                        metric=spec.name,
                    )
                )
    return found


def _status(m: Measurement, baseline: Baseline | None, spec: MetricSpec | None, node_best: float | None) -> Standing:
    if baseline is None:
        return Standing.NO_BASELINE
    if spec is None:
        return Standing.UNCHECKED
    if not spec.meets_limit(m.value):
        return Standing.BELOW_LIMIT
    bound = spec.node_bound(node_best) if node_best is not None else None
    if bound is not None:
        behind = m.value < bound if spec.direction is Direction.HIGHER else m.value > bound
        if behind:
            return Standing.BEHIND_NODE
    return Standing.OK


_Key = tuple[str, tuple[str, str, int, str], bool]
"""(metric, the device's model key, is a pair's figure)."""


def _node_best(measurements: list[Measurement], by_uuid: Mapping[str, Device]) -> dict[_Key, float]:
    """Per (metric, model, is a pair): the best value among the node's devices, or the median pair."""
    values: dict[_Key, list[float]] = collections.defaultdict(list)
    directions: dict[_Key, Direction] = {}
    for m in measurements:
        device = by_uuid.get(m.gpu)
        if device is None:
            continue
        key = (m.metric, device.model_key, bool(m.peer))
        values[key].append(m.value)
        directions[key] = m.direction
    return {key: _reference(v, directions[key], pair=key[2]) for key, v in values.items()}


def _reference(values: list[float], direction: Direction, *, pair: bool) -> float:
    if pair:
        return statistics.median(values)
    return max(values) if direction is Direction.HIGHER else min(values)
