"""Baselines: what each GPU model must achieve, read from TOML files.

The format is documented in docs/baselines.md. Files are parsed strictly: an
unknown key, a wrong type or a missing provenance is a ConfigError that names the
file and the field, because a mistyped threshold can cordon a healthy fleet or
admit a broken GPU.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from harness import files, groups
from harness.errors import ConfigError
from harness.records import Direction
from harness.strict import Strict, load_toml

SCHEMA_VERSION = 1
DEVICE_KINDS = ("cuda", "cpu")
PROVENANCE_KINDS = ("published", "measured", "estimate")
_METRIC_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where a threshold came from."""

    kind: str
    """"published" (a figure someone else measured), "measured" (our own run) or "estimate"."""
    source: str
    """The reference or the command, and how the threshold was derived from it."""
    date: str = ""
    card: str = ""
    driver: str = ""
    reference: float | None = None
    """The figure the limit was derived from (a healthy card's sustained figure, a published one), in
    the metric's unit."""
    margin: float | None = None
    """How far below `reference` the floor sits, as a fraction: what a healthy card has to spare."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricSpec:
    name: str
    unit: str
    direction: Direction
    limit: float
    """The floor when higher is better, the ceiling when lower is better."""
    node_tolerance: float | None
    """How far (as a fraction) a GPU may trail the best GPU of its model in the node."""
    required: bool
    """A run that selected this metric's test and did not measure it is incomplete."""
    provenance: Provenance

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]

    def meets_limit(self, value: float) -> bool:
        if self.direction is Direction.HIGHER:
            return value >= self.limit
        return value <= self.limit

    def node_bound(self, best: float) -> float | None:
        """The worst value a GPU may have, given the node's best; None when unchecked."""
        if self.node_tolerance is None:
            return None
        if self.direction is Direction.HIGHER:
            return best * (1.0 - self.node_tolerance)
        return best * (1.0 + self.node_tolerance)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealthLimits:
    """The health rules' thresholds for one GPU model (docs/health.md). None: the rule does not apply."""

    ecc_corrected_delta_max: int | None = None
    """Corrected ECC errors a GPU may gain during one stress test."""
    sram_uncorrected_aggregate_max: int | None = None
    """Lifetime uncorrectable SRAM errors before the GPU is to be replaced."""
    retired_pages_max: int | None = None
    """Retired pages (before Ampere) before the GPU is to be replaced."""
    throttle_share_max: float | None = None
    """Share of a burn a GPU may spend under hardware or thermal slowdown or the power brake."""
    temperature_max_c: float | None = None
    memory_temperature_max_c: float | None = None
    pcie_gen: int | None = None
    """The PCIe generation the link must run at under load."""
    pcie_width: int | None = None
    """The PCIe link width the link must have."""
    nvlink_links: int | None = None
    """Active NVLink links each GPU must have."""
    nvlink_recovery_delta_max: int | None = None
    """Recoveries one NVLink link may go through during one stress test (DCGM fails any)."""
    nvlink_replay_delta_max: int | None = None
    """Replays (retransmissions after a CRC error) one link may have during one test before a warning:
    a few are the link doing its job."""
    nvlink_crc_per_s_max: float | None = None
    """CRC errors per second one link may average over a test: NVIDIA's driver team tells DCGM they
    matter only at 100 a second and more."""
    provenance: Provenance | None = None


HEALTH_FIELDS: dict[str, type] = {
    "ecc_corrected_delta_max": int,
    "sram_uncorrected_aggregate_max": int,
    "retired_pages_max": int,
    "throttle_share_max": float,
    "temperature_max_c": float,
    "memory_temperature_max_c": float,
    "pcie_gen": int,
    "pcie_width": int,
    "nvlink_links": int,
    "nvlink_recovery_delta_max": int,
    "nvlink_replay_delta_max": int,
    "nvlink_crc_per_s_max": float,
}
RETIRED_HEALTH_FIELDS = {
    "nvlink_errors_delta_max": "nvlink_recovery_delta_max, nvlink_replay_delta_max and nvlink_crc_per_s_max, "
    "per link and per test: one replay error among 144 links is not a broken GPU",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Baseline:
    path: Path
    model: str
    device: str
    names: tuple[str, ...]
    """Device names this file covers, as the driver reports them (shell patterns allowed)."""
    metrics: Mapping[str, MetricSpec]
    driver: str = ""
    description: str = ""
    health: HealthLimits = HealthLimits()
    sha256: str = ""
    """Of the file's bytes: result files record which thresholds judged them."""
    gpus: int | None = None
    """`[match] gpus`: the number of GPUs of this model on a node this file judges (an 8-GPU HGX board
    and a 1-GPU VM share a model name and need different files); None: any number."""

    def covers(self, kind: str, name: str) -> bool:
        return kind == self.device and any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names)

    def fits(self, kind: str, name: str, count: int) -> bool:
        """Covers this device on a node with `count` GPUs of its model."""
        return self.covers(kind, name) and self.gpus in (None, count)


@dataclasses.dataclass(frozen=True)
class BaselineSet:
    baselines: tuple[Baseline, ...]
    source: Path
    """The directory, or the one file given explicitly."""
    explicit: bool = False
    """True when the user named one file: then a GPU it does not cover is an error."""

    def for_device(self, kind: str, name: str, count: int) -> Baseline | None:
        """The file that judges a device named `name` on a node with `count` devices of that name: of the
        files that cover the name, one whose `[match] gpus` is `count` wins over one that matches any
        number; two at the same rank are an error."""
        fitting = [b for b in self.baselines if b.fits(kind, name, count)]
        exact = [b for b in fitting if b.gpus == count]
        matches = exact or fitting
        if len(matches) > 1:
            files = ", ".join(str(b.path) for b in matches)
            raise ConfigError(
                f"{name!r} on a node with {count} of them is covered by more than one baseline: {files}",
                file=self.source,
                field="names",
            )
        if not matches and self.explicit:
            only = self.baselines[0]
            if only.covers(kind, name):
                problem = f"this baseline is for nodes with {only.gpus} of {name!r}; this node has {count}"
            else:
                problem = (
                    f"this baseline covers {list(only.names)} ({only.device}), "
                    f"but this node's device is {name!r} ({kind})"
                )
            raise ConfigError(
                f"{problem}; give the baseline for this GPU model and count, or a baseline directory",
                file=only.path,
                field="names",
                option="baseline",
            )
        return matches[0] if matches else None

    def for_health(self, kind: str, name: str, count: int) -> Baseline | None:
        """The file whose health thresholds judge a device: the one `for_device` picks, else, on a node
        with a number of these GPUs no file is for (a board that lost some, a VM with a few), the file
        for the nearest larger node, else any that covers the name. Health is always judged: an ECC
        error on a 7-GPU node of an 8-GPU model must not go unseen for want of a 7-GPU file."""
        try:
            chosen = self.for_device(kind, name, count)
        except ConfigError:
            chosen = None
        if chosen is not None:
            return chosen
        covering = sorted((b for b in self.baselines if b.covers(kind, name)), key=lambda b: b.gpus or 0)
        larger = [b for b in covering if (b.gpus or 0) >= count]
        if larger:
            return larger[0]
        return covering[-1] if covering else None

    def counts_for(self, kind: str, name: str) -> tuple[int, ...]:
        """The node sizes the files covering this device name are for (for a message: a node with a
        number of GPUs no file is for may have lost one)."""
        return tuple(sorted({b.gpus for b in self.baselines if b.covers(kind, name) and b.gpus is not None}))


def default_dir() -> Path:
    """The baselines shipped with the package."""
    return Path(str(resources.files("baselines")))


def load_dir(directory: Path) -> BaselineSet:
    if not files.is_dir(directory):
        raise ConfigError("not a directory", file=directory)
    found = sorted(directory.glob("*.toml"))
    return BaselineSet(tuple(load_file(path) for path in found), source=directory)


def load_one(path: Path) -> BaselineSet:
    return BaselineSet((load_file(path),), source=path, explicit=True)


def load_file(path: Path) -> Baseline:
    data, raw = load_toml(path)
    return dataclasses.replace(_Parser(path).baseline(data), sha256=hashlib.sha256(raw).hexdigest())


class _Parser(Strict):
    def baseline(self, data: dict[str, Any]) -> Baseline:
        self.only(
            data,
            "",
            {"schema_version", "model", "device", "names", "match", "driver", "description", "metrics", "health"},
        )
        version = self.get(data, "schema_version", int)
        if version != SCHEMA_VERSION:
            raise self.fail("schema_version", f"is {version}; this gpu-burnin reads version {SCHEMA_VERSION}")
        device = self.get(data, "device", str)
        if device not in DEVICE_KINDS:
            raise self.fail("device", f"is {device!r}; expected one of {list(DEVICE_KINDS)}")
        names = self.get(data, "names", list)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise self.fail("names", "must be a non-empty list of device names")
        metrics = self.get(data, "metrics", dict)
        if not metrics:
            raise self.fail("metrics", "must list at least one metric")
        return Baseline(
            path=self.path,
            model=self.text(data, "model", "model"),
            device=device,
            names=tuple(names),
            driver=self.get(data, "driver", str, default=""),
            description=self.get(data, "description", str, default=""),
            metrics={name: self.metric(name, spec) for name, spec in metrics.items()},
            health=self.health(data.get("health")),
            gpus=self.match(data.get("match")),
        )

    def match(self, data: Any) -> int | None:
        """`[match] gpus = N`: the number of GPUs of the model on a node this file judges."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise self.fail("match", "must be a table")
        self.only(data, "match", {"gpus"})
        gpus = self.get(data, "gpus", int, where="match")
        if not 1 <= gpus <= 64:
            raise self.fail("match.gpus", f"is {gpus}; expected the number of GPUs on a node, 1 to 64")
        return int(gpus)

    def health(self, data: Any) -> HealthLimits:
        if data is None:
            return HealthLimits()
        if not isinstance(data, dict):
            raise self.fail("health", "must be a table")
        for key, instead in RETIRED_HEALTH_FIELDS.items():
            if key in data:
                raise self.fail(f"health.{key}", f"is no longer read; use {instead}")
        self.only(data, "health", {*HEALTH_FIELDS, "provenance"})
        values: dict[str, Any] = {}
        for key, kind in HEALTH_FIELDS.items():
            if key in data:
                value = self.number(data, key, "health")
                if kind is int and value != int(value):
                    raise self.fail(f"health.{key}", f"expected a whole number, got {data[key]!r}")
                if key == "throttle_share_max" and value > 1.0:
                    raise self.fail(f"health.{key}", f"is {value}; expected a share from 0 to 1")
                values[key] = int(value) if kind is int else value
        if values:
            values["provenance"] = self.provenance(data.get("provenance"), "health.provenance")
        return HealthLimits(**values)

    def metric(self, name: str, spec: Any) -> MetricSpec:
        where = f"metrics.{name!r}"
        if not _METRIC_NAME.match(name):
            raise self.fail(where, "metric names are lower-case dotted words, such as 'matmul.bf16.tflops'")
        if not isinstance(spec, dict):
            raise self.fail(where, "must be a table")
        allowed = {"unit", "direction", "floor", "ceiling", "node_tolerance", "required", "provenance"}
        self.only(spec, where, allowed)
        direction_text = self.get(spec, "direction", str, where=where)
        try:
            direction = Direction(direction_text)
        except ValueError:
            raise self.fail(f"{where}.direction", f"is {direction_text!r}; expected 'higher' or 'lower'") from None
        declared = groups.direction_of(name)
        if declared is None:
            known = ", ".join(groups.metrics())
            raise self.fail(where, f"no test measures it; the tests measure {known}")
        if direction is not declared:
            raise self.fail(
                f"{where}.direction",
                f"is {direction_text!r}; {name} is better {declared}: the direction is the test's, not the file's",
            )
        bound, other = ("floor", "ceiling") if direction is Direction.HIGHER else ("ceiling", "floor")
        if other in spec:
            raise self.fail(f"{where}.{other}", f"a metric where {direction} is better takes '{bound}', not '{other}'")
        limit = self.number(spec, bound, where)
        tolerance = self.number(spec, "node_tolerance", where) if "node_tolerance" in spec else None
        if tolerance is not None and not 0.0 <= tolerance < 1.0:
            raise self.fail(f"{where}.node_tolerance", f"is {tolerance}; expected a fraction from 0 to below 1")
        provenance = self.provenance(spec.get("provenance"), f"{where}.provenance")
        reference, margin = provenance.reference, provenance.margin
        if reference is not None and margin is not None and direction is Direction.HIGHER:
            derived = reference * (1.0 - margin)
            if abs(limit - derived) > 0.01 * reference:
                raise self.fail(
                    f"{where}.provenance.margin",
                    f"the floor {limit:g} is not {margin:g} below the reference {reference:g} ({derived:.4g}): "
                    "say the margin the floor really leaves",
                )
        return MetricSpec(
            name=name,
            unit=self.text(spec, "unit", f"{where}.unit"),
            direction=direction,
            limit=limit,
            node_tolerance=tolerance,
            required=self.get(spec, "required", bool, where=where),
            provenance=provenance,
        )

    def provenance(self, data: Any, where: str) -> Provenance:
        if not isinstance(data, dict):
            raise self.fail(where, "missing: say where this threshold came from (kind, source; date, card, driver)")
        self.only(data, where, {"kind", "source", "date", "card", "driver", "reference", "margin"})
        kind = self.get(data, "kind", str, where=where)
        if kind not in PROVENANCE_KINDS:
            raise self.fail(f"{where}.kind", f"is {kind!r}; expected one of {list(PROVENANCE_KINDS)}")
        found = Provenance(
            kind=kind,
            source=self.text(data, "source", f"{where}.source"),
            date=self.get(data, "date", str, default="", where=where),
            card=self.get(data, "card", str, default="", where=where),
            driver=self.get(data, "driver", str, default="", where=where),
            reference=self.number(data, "reference", where) if "reference" in data else None,
            margin=self.number(data, "margin", where) if "margin" in data else None,
        )
        if found.margin is not None and not found.margin < 1.0:
            raise self.fail(f"{where}.margin", f"is {found.margin}; expected a fraction from 0 to below 1")
        if kind == "measured":
            for field in ("date", "card", "driver"):
                if not getattr(found, field):
                    raise self.fail(f"{where}.{field}", "a measured threshold needs the date, card and driver")
        if found.date and not _DATE.match(found.date):
            raise self.fail(f"{where}.date", f"is {found.date!r}; expected YYYY-MM-DD")
        return found
