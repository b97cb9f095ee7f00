"""Shared fixtures for gpu-burnin's own tests; helpers are in tests/helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy  # noqa: F401 - imported once here: pytester's in-process runs cannot re-import it
import pytest
import torch  # noqa: F401 - likewise

import gputests.work.matmul_run  # noqa: F401 - likewise: workers are pickled by reference, so the worker
import gputests.work.memory_run  # noqa: F401 - likewise (the memory test's workers)
import gputests.work.nccl_run  # noqa: F401 - likewise
import gputests.work.nvlink_run  # noqa: F401 - likewise
import gputests.work.pcie_run  # noqa: F401 - likewise
from harness.baselines import default_dir  # functions must stay the same objects across pytester's runs
from harness.devices import Device


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds (a real run, a hang, a watchdog); -m 'not slow' skips")


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose runs load the burn-in plugin whether or not gpu-burnin is installed
    (on a GPU box the checkout often runs uninstalled, from PYTHONPATH): pytest loads
    the plugins PYTEST_PLUGINS names, in-process runs and subprocesses alike."""
    monkeypatch.setenv("PYTEST_PLUGINS", "gputests.plugin")
    return pytester


@pytest.fixture
def cpu() -> Device:
    return Device(index=0, kind="cpu", name="Test CPU", uuid="CPU-test", sm_count=2)


@pytest.fixture
def baseline_dir(tmp_path: Path) -> Path:
    """A writable copy of the packaged baselines."""
    target = tmp_path / "baselines"
    target.mkdir()
    for path in default_dir().glob("*.toml"):
        shutil.copy(path, target / path.name)
    return target
