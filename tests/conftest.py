"""Shared fixtures for gpu-burnin's own tests."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy  # noqa: F401 - imported once here: pytester's in-process runs cannot re-import it
import pytest

from harness.baselines import default_dir
from harness.devices import Device

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"


@pytest.fixture
def cpu() -> Device:
    return Device(index=0, kind="cpu", name="Test CPU", uuid="CPU-test", sm_count=2)


def gpus(count: int, name: str = "NVIDIA H100 80GB HBM3") -> list[Device]:
    return [
        Device(index=i, kind="cuda", name=name, uuid=f"GPU-{i:08d}", sm_count=132, compute_capability="9.0")
        for i in range(count)
    ]


def cpus(count: int, base: Device) -> list[Device]:
    """Several workers on the CPU, standing in for several GPUs of one model."""
    return [dataclasses.replace(base, index=i, uuid=f"CPU-{i}", sm_count=1) for i in range(count)]


@pytest.fixture
def baseline_dir(tmp_path: Path) -> Path:
    """A writable copy of the packaged baselines."""
    target = tmp_path / "baselines"
    target.mkdir()
    for path in default_dir().glob("*.toml"):
        shutil.copy(path, target / path.name)
    return target
