"""The burn-in session's own findings: what it says before any test runs, in the words of the front end in use."""

import pytest

from gputests.session import BurnIn
from harness import devices, options
from harness.records import Code, Severity

NO_CUDA = devices.Listing(devices=(), facts={}, problem="no CUDA device (torch.cuda.is_available() is False)")


def started(tmp_path, **values) -> BurnIn:
    state = BurnIn(options.resolve({"results": tmp_path, **values}))
    state.start([("gputests/test_matmul.py::test_matmul", "matmul")])
    return state


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(devices, "_probe_cuda", lambda timeout: NO_CUDA)


@pytest.mark.parametrize(("entrypoint", "flag"), [("pytest", "--gpu-inject"), ("run", "--inject")])
def test_an_injected_fault_is_named_with_the_flag_of_the_front_end_in_use(tmp_path, entrypoint, flag):
    state = started(tmp_path, device="cpu", inject=["hang"], entrypoint=entrypoint)
    [injected] = [f for f in state.findings if f.code is Code.FAULT_INJECTED]
    assert f"injected on purpose ({flag})" in injected.message and "--gpu-" not in injected.message.replace(flag, "")


@pytest.mark.parametrize(
    ("entrypoint", "hint"),
    [("pytest", "; use --gpu-device cpu for the CPU self-test"), ("run", "; use --device cpu for the CPU self-test")],
)
def test_without_a_gpu_the_hint_names_the_flag_of_the_front_end_in_use(tmp_path, no_gpu, entrypoint, hint):
    state = started(tmp_path, device="cuda", entrypoint=entrypoint)
    [none] = [f for f in state.findings if f.code is Code.NO_GPUS]
    assert none.severity is Severity.INCOMPLETE  # nothing was expected: no decision, not a failure
    assert none.message == NO_CUDA.problem + hint and state.inventory.problem == none.message


def test_preflight_is_not_told_to_try_the_cpu_self_test(tmp_path, no_gpu):
    state = started(tmp_path, device="cuda", entrypoint="preflight")
    [none] = [f for f in state.findings if f.code is Code.NO_GPUS]
    assert none.message == NO_CUDA.problem


def test_expected_gpus_that_are_all_gone_fail_the_node(tmp_path, no_gpu):
    """A GPU that fell off the bus is a failure however many fell: --expect-gpus 8 and none visible fails."""
    state = started(tmp_path, device="cuda", expect_gpus=8, entrypoint="run")
    found = [f for f in state.findings if f.code in (Code.GPU_COUNT_MISMATCH, Code.NO_GPUS)]
    assert [(f.code, f.severity) for f in found] == [(Code.GPU_COUNT_MISMATCH, Severity.FAIL)]
    assert found[0].message.startswith("expected 8 GPUs, found none (no CUDA device (")
    assert found[0].details == {"expected": 8, "found": 0}
    assert state.finish().status == "fail"
