"""A Baseline written back as a baseline file (docs/baselines.md), which harness.baselines reads.

The format is small and fixed (strings, numbers, booleans, a list of strings, tables), so
it is written here rather than through a TOML library; `write_text` reads the text back
with the project's own loader before anything is written, and refuses what it refuses.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from harness import baselines
from harness.baselines import HEALTH_FIELDS, Baseline, MetricSpec, Provenance
from harness.errors import ConfigError
from harness.outputs import write_output
from harness.records import Direction


def dumps(baseline: Baseline, header: str = "") -> str:
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [
        f"schema_version = {baselines.SCHEMA_VERSION}",
        f"model = {_string(baseline.model)}",
        f"device = {_string(baseline.device)}",
        f"names = [{', '.join(_string(n) for n in baseline.names)}]",
    ]
    if baseline.driver:
        lines.append(f"driver = {_string(baseline.driver)}")
    if baseline.description:
        lines.append(f"description = {_string(baseline.description)}")
    if baseline.gpus is not None:
        lines += ["", "[match]", f"gpus = {baseline.gpus}"]
    for spec in baseline.metrics.values():
        lines += ["", *_metric(spec)]
    health = baseline.health
    values = {key: getattr(health, key) for key in HEALTH_FIELDS if getattr(health, key) is not None}
    if values:
        lines += ["", "[health]"]
        lines += [f"{key} = {_number(value)}" for key, value in values.items()]
        if health.provenance is not None:
            lines += ["[health.provenance]", *_provenance(health.provenance)]
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str, option: str = "--output") -> None:
    """Check `text` loads as a baseline, then write it to `path` (harness.outputs: a regular file
    is replaced in one step, a link written through, `-` is standard output)."""
    with tempfile.TemporaryDirectory(prefix="gpu-burnin-proposal.") as directory:
        check = Path(directory) / (path.name if path.name.endswith(".toml") else "proposal.toml")
        check.write_text(text, encoding="utf-8")
        try:
            baselines.load_file(check)
        except ConfigError as err:
            raise ConfigError(
                f"the proposal is not a valid baseline ({err.problem}); nothing written", file=path
            ) from err
    write_output(path, text, option=option)


def _metric(spec: MetricSpec) -> list[str]:
    bound = "floor" if spec.direction is Direction.HIGHER else "ceiling"
    key = f"metrics.{_string(spec.name)}"
    lines = [
        f"[{key}]",
        f"unit = {_string(spec.unit)}",
        f"direction = {_string(str(spec.direction))}",
        f"{bound} = {_number(spec.limit)}",
    ]
    if spec.node_tolerance is not None:
        lines.append(f"node_tolerance = {_number(spec.node_tolerance)}")
    lines.append(f"required = {'true' if spec.required else 'false'}")
    return [*lines, f"[{key}.provenance]", *_provenance(spec.provenance)]


def _provenance(provenance: Provenance) -> list[str]:
    lines = [f"kind = {_string(provenance.kind)}", f"source = {_string(provenance.source)}"]
    for field in ("date", "card", "driver"):
        if getattr(provenance, field):
            lines.append(f"{field} = {_string(getattr(provenance, field))}")
    for field in ("reference", "margin"):
        if getattr(provenance, field) is not None:
            lines.append(f"{field} = {_number(getattr(provenance, field))}")
    return lines


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's (control characters as \\uXXXX)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _number(value: float | int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(float(value))
