"""Both NVML bindings satisfy harness.nvml.backend.Backend: at run time (every name is there) and to
mypy (every signature fits), so that no caller asks which binding it has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.nvml import binding
from harness.nvml.backend import Backend
from harness.nvml.sim import Simulated

HEALTHY = Path(__file__).resolve().parents[1] / "harness" / "nvml" / "scenarios" / "healthy.toml"


def simulated() -> Backend[int]:
    return Simulated.from_file(HEALTHY)  # mypy: the simulation's signatures fit Backend's


def driver(module: Any) -> Backend[Any]:
    return binding.Driver(module)  # mypy: the driver's wrapper is a Backend


def test_the_simulation_is_a_backend() -> None:
    assert isinstance(binding.load(f"sim:{HEALTHY}"), Backend)


def test_the_driver_binding_is_a_backend() -> None:
    pynvml = pytest.importorskip("pynvml")
    nv = binding.load(binding.REAL)
    assert isinstance(nv, binding.Driver) and isinstance(nv, Backend)
    assert nv.NVMLError is pynvml.NVMLError and nv.NVML_ERROR_GPU_IS_LOST == pynvml.NVML_ERROR_GPU_IS_LOST


def test_the_driver_binding_ignores_a_scenario_s_clock_and_tests() -> None:
    class Module:  # any other name asked of it would be an AttributeError
        NVMLError = RuntimeError

    nv = binding.Driver(Module)  # type: ignore[arg-type]
    nv.follow_clock(12.0)
    nv.follow_tests(finished={"matmul"}, running={"nccl"})
    assert nv.NVMLError is RuntimeError


def test_the_driver_finds_the_clock_events_under_either_name() -> None:
    class Old:  # nvidia-ml-py before 12.535
        @staticmethod
        def nvmlDeviceGetCurrentClocksThrottleReasons(handle: object) -> int:  # noqa: N802
            return 0x8

    class New:
        @staticmethod
        def nvmlDeviceGetCurrentClocksEventReasons(handle: object) -> int:  # noqa: N802
            return 0x4

    assert binding.Driver(Old).nvmlDeviceGetCurrentClocksEventReasons(None) == 0x8  # type: ignore[arg-type]
    assert binding.Driver(New).nvmlDeviceGetCurrentClocksEventReasons(None) == 0x4  # type: ignore[arg-type]


def test_mypy_checks_this_module_against_the_protocol(tmp_path: Path) -> None:
    """The assignments above are the static half: mypy --strict passes here, and fails for a binding whose
    handle type does not fit."""
    here = Path(__file__)
    repo = here.parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(here)],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    wrong = tmp_path / "wrong_handle.py"
    wrong.write_text(
        "from harness.nvml.backend import Backend\nfrom harness.nvml.sim import Simulated\n\n\n"
        "def bad(s: Simulated) -> Backend[str]:\n    return s\n"
    )
    failed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(wrong)],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert failed.returncode == 1 and 'expected "Backend[str]"' in failed.stdout, failed.stdout
