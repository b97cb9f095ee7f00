"""Read result files into pandas tables: one row per measurement, one per run.

Files that cannot be read (another schema, a newer version, a torn copy) are
returned as errors next to the tables, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from harness import results
from harness.errors import ConfigError

RUN_COLUMNS = ["run_id", "node", "started_at", "state", "device_kind", "profile", "verdict", "devices", "gpu_names"]
MEASUREMENT_COLUMNS = [
    "run_id",
    "node",
    "started_at",
    "gpu",
    "gpu_index",
    "gpu_name",
    "metric",
    "value",
    "unit",
    "direction",
    "samples",
]


def load(paths: Iterable[Path]) -> tuple[pd.DataFrame, pd.DataFrame, list[ConfigError]]:
    """(runs, measurements, errors) for the given result files."""
    runs, rows, errors = [], [], []
    for path in paths:
        try:
            doc = results.load(path)
        except ConfigError as err:
            errors.append(err)
            continue
        devices = {d.uuid: d for d in doc.devices}
        runs.append(
            {
                "run_id": doc.run_id,
                "node": doc.node,
                "started_at": doc.started_at,
                "state": str(doc.state),
                "device_kind": doc.device_kind,
                "profile": doc.profile.name if doc.profile else "",
                "verdict": str(doc.verdict.status),
                "devices": len(devices),
                "gpu_names": ", ".join(sorted({d.name for d in devices.values()})),
            }
        )
        for m in doc.measurements:
            device = devices.get(m.gpu)
            rows.append(
                {
                    "run_id": doc.run_id,
                    "node": doc.node,
                    "started_at": doc.started_at,
                    "gpu": m.gpu,
                    "gpu_index": device.index if device else None,
                    "gpu_name": device.name if device else "",
                    "metric": m.metric,
                    "value": m.value,
                    "unit": m.unit,
                    "direction": str(m.direction),
                    "samples": m.samples,
                }
            )
    run_frame = pd.DataFrame(runs, columns=RUN_COLUMNS)
    measurement_frame = pd.DataFrame(rows, columns=MEASUREMENT_COLUMNS)
    for frame in (run_frame, measurement_frame):
        frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    return run_frame, measurement_frame, errors
