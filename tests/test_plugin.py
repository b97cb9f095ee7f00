"""The plugin end to end: the real suite on the CPU through pytester, and small burn-in tests of our own."""

import time

import pytest

from harness import devices
from tests.helpers import only_result

SUITE = (
    "-p",
    "no:cacheprovider",
    "--pyargs",
    "gputests",
    "--gpu-device",
    "cpu",
    "--gpu-duration",
    "0.4",
    "-m",
    "matmul",
)


def run_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*SUITE, *args)


@pytest.mark.slow
def test_the_cpu_self_test_passes_and_leaves_one_result_where_it_was_run(pytester):
    result = run_suite(pytester)  # no --gpu-results: ./gpu-burnin-results, as gpu-burnin run
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 passed*"])
    result.stdout.fnmatch_lines(
        [
            "device*metric*value*limit*vs best*status",
            "CPU 0*matmul.bf16.tflops*TFLOP/s*1e-06 TFLOP/s*ok",
            "CPU 0*matmul.fp32.tflops*TFLOP/s*1e-06 TFLOP/s*ok",
            "CPU 1*matmul.bf16.tflops*TFLOP/s*1e-06 TFLOP/s*ok",
            "gpu-burnin verdict: PASS (2 devices); result: gpu-burnin-results/*.json",
        ]
    )
    doc = only_result(pytester.path / "gpu-burnin-results")
    assert (doc["schema"], doc["schema_version"], doc["state"]) == ("gpu-burnin/result", 1, "finished")
    assert doc["verdict"] == {"status": "pass", "reasons": [], "exit_code": 0}
    assert [t["outcome"] for t in doc["tests"]] == ["passed"]
    assert {m["metric"] for m in doc["measurements"]} >= {f"matmul.{d}.tflops" for d in ("bf16", "fp16", "fp32")}
    assert doc["devices"][0]["kind"] == "cpu" and doc["host"]["torch"]
    assert doc["baselines"][0]["model"] == "CPU self-test"


def test_without_a_cuda_device_the_tests_skip_and_the_run_is_incomplete(pytester, monkeypatch):
    # Whatever this machine has, the probe finds no GPU (tests/test_devices.py runs the real probe).
    problem = "no CUDA device (torch.cuda.is_available() is False)"
    monkeypatch.setattr(devices, "_probe_cuda", lambda timeout: devices.Listing(devices=(), facts={}, problem=problem))
    result = pytester.runpytest("-p", "no:cacheprovider", "--pyargs", "gputests")
    assert result.ret == 2
    # matmul, memory, pcie, nvlink, nccl, train, health; dcgm not asked for
    result.stdout.fnmatch_lines(["*7 skipped, 1 deselected*"])
    result.stdout.fnmatch_lines(
        ["gpu-burnin verdict: INCOMPLETE (0 devices): NO_GPUS: no CUDA device (*); use --gpu-device cpu*"]
    )


@pytest.mark.slow
def test_expected_gpus_none_of_which_is_visible_fail_the_run(pytester, monkeypatch):
    problem = "no CUDA device (torch.cuda.is_available() is False)"
    monkeypatch.setattr(devices, "_probe_cuda", lambda timeout: devices.Listing(devices=(), facts={}, problem=problem))
    result = pytester.runpytest("-p", "no:cacheprovider", "--pyargs", "gputests", "--gpu-expect-gpus", "8")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*verdict: FAIL (0 devices): GPU_COUNT_MISMATCH: expected 8 GPUs, found none*"])


def test_a_model_without_a_baseline_is_incomplete_but_its_figures_are_kept(pytester, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_suite(pytester, "--gpu-baseline-dir", str(empty), "--gpu-results", str(tmp_path))
    assert result.ret == 2
    result.stdout.fnmatch_lines(["CPU 0*matmul.fp32.tflops*no baseline", "*NO_BASELINE*"])
    doc = only_result(tmp_path)
    assert doc["verdict"]["status"] == "incomplete" and doc["measurements"]


@pytest.mark.slow
def test_a_floor_that_cannot_be_met_fails(pytester, tmp_path, baseline_dir):
    cpu = baseline_dir / "cpu-selftest.toml"
    cpu.write_text(cpu.read_text().replace("floor = 0.000001", "floor = 1000000.0", 1))  # fp32 comes first
    result = run_suite(pytester, "--gpu-baseline-dir", str(baseline_dir), "--gpu-results", str(tmp_path))
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*LOW_THROUGHPUT: CPU 0 (*): matmul.fp32.tflops = *, below the floor of 1e+06 in cpu-selftest.toml*"]
    )
    result.stdout.fnmatch_lines(["CPU 0*matmul.fp32.tflops*1e+06*LOW", "gpu-burnin verdict: FAIL*"])
    assert only_result(tmp_path)["tests"][0]["outcome"] == "failed"


@pytest.mark.slow
def test_one_corrupted_element_fails_the_run(pytester, tmp_path):
    result = run_suite(pytester, "--gpu-inject", "corrupt", "--gpu-results", str(tmp_path))
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*DATA_MISMATCH*CPU 0 (*): 1 of * bf16 products differed from its first product, 1 elements in all*"]
    )
    result.stdout.fnmatch_lines(["CPU 0*matmul.bf16.tflops*TFLOP/s*DATA_MISMATCH", "CPU 0*matmul.fp16.tflops*ok"])
    result.stdout.fnmatch_lines(["gpu-burnin verdict: FAIL (2 devices): DATA_MISMATCH: CPU 0*"])
    doc = only_result(tmp_path)
    codes = {f["code"] for f in doc["findings"]}
    assert {"DATA_MISMATCH", "FAULT_INJECTED"} <= codes
    assert doc["faults"] == ["corrupt:0"] and doc["verdict"]["status"] == "fail"


@pytest.mark.slow
def test_a_hung_test_ends_within_its_limit_as_a_failure_of_that_device(pytester, tmp_path):
    began = time.monotonic()
    result = run_suite(pytester, "--gpu-inject", "hang", "--gpu-hang-timeout", "3", "--gpu-results", str(tmp_path))
    assert time.monotonic() - began < 30
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*HANG*CPU 0 (*): matmul worker no progress for 3 s*; it was killed*"])
    result.stdout.fnmatch_lines(["gpu-burnin verdict: FAIL (2 devices): HANG: CPU 0 (*)*", "*1 failed*"])
    assert "passed" not in result.stdout.lines[-1]
    doc = only_result(tmp_path)
    assert doc["verdict"]["status"] == "fail" and doc["tests"][0]["outcome"] == "failed"


def test_a_malformed_baseline_is_a_usage_error_naming_file_and_field(pytester, tmp_path, baseline_dir):
    cpu = baseline_dir / "cpu-selftest.toml"
    cpu.write_text(cpu.read_text().replace("floor = 0.000001", 'floor = "low"', 1))
    result = run_suite(pytester, "--gpu-baseline-dir", str(baseline_dir), "--gpu-results", str(tmp_path))
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"ERROR: {cpu}: metrics.'matmul.fp32.tflops'.floor: expected a finite number*'low'"])
    assert list(tmp_path.glob("*.json")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gpu-expect-gpus", "8"), "ERROR: --gpu-expect-gpus: counts GPUs: it cannot be used with the CPU self-test"),
        (("--gpu-expect-gpus", "0"), "argument --gpu-expect-gpus: expected at least 1, got 0"),
        (("--gpu-inject", "melt"), "argument --gpu-inject: unknown fault 'melt'"),
        (("--gpu-inject", "corrupt:3"), "ERROR: --gpu-inject: corrupt:3 names device 3; this node has [0, 1]"),
        (("--gpu-duration", "0"), "argument --gpu-duration: expected a positive, finite number of seconds, got 0"),
        (("--gpu-duration", "inf"), "argument --gpu-duration: expected a positive, finite number of seconds, got inf"),
        (("--gpu-hang-timeout", "nan"), "argument --gpu-hang-timeout: expected a positive, finite number of seconds"),
        (("--gpu-duration", "1e308"), "argument --gpu-duration: 1e308 s is more than a week"),
        (("--gpu-hang-timeout", "1e-6"), "argument --gpu-hang-timeout: 1e-6 s is below the minimum of 3 s"),
        (("--gpu-duration", "0.001"), "argument --gpu-duration: 0.001 s is below the minimum of 0.1 s"),
        (("--gpu-xid-table", "/nonexistent"), "argument --gpu-xid-table: /nonexistent: cannot read: No such file"),
        (("--gpu-baseline-dir", ""), "argument --gpu-baseline-dir: expected a path, got an empty string"),
    ],
)
def test_bad_options_exit_4(pytester, args, message):
    result = run_suite(pytester, *args)
    assert result.ret == 4
    assert message in result.stderr.str()


def test_a_results_directory_that_cannot_be_made_is_a_usage_error(pytester, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_suite(pytester, "--gpu-results", str(blocker / "out"))
    assert result.ret == 4
    assert f"ERROR: {blocker / 'out'}: cannot create the results directory" in result.stderr.str()


@pytest.mark.slow
def test_junit_xml_is_written_alongside(pytester, tmp_path):
    xml = tmp_path / "junit.xml"
    result = run_suite(pytester, f"--junitxml={xml}")
    assert result.ret == 0
    assert 'name="test_matmul"' in xml.read_text()


def test_markers_and_options_are_registered(pytester):
    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.matmul: matrix-multiply throughput*", "@pytest.mark.nccl: *"])
    helptext = pytester.runpytest("--help")
    helptext.stdout.fnmatch_lines(
        ["gpu-burnin (GPU burn-in tests):", "*--gpu-device={cuda,cpu,auto}*", "*--gpu-results=DIR*"]
    )


def test_a_marker_expression_naming_no_registered_marker_is_a_usage_error(pytester, tmp_path):
    result = run_suite(pytester, "-m", "matmul or nvlnk", "--gpu-results", str(tmp_path))
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: -m: unknown marker 'nvlnk'; the markers are *matmul*nvlink*"])
    assert list(tmp_path.iterdir()) == []


def test_a_marker_registered_by_the_project_may_be_selected(pytester):
    pytester.makeini("[pytest]\nmarkers =\n    slow: takes seconds\n")
    pytester.makepyfile("import pytest\n@pytest.mark.slow\ndef test_a():\n    pass\ndef test_b():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "not slow")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 passed, 1 deselected*"])


def test_an_ordinary_test_session_is_left_alone(pytester):
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 0
    assert "gpu-burnin verdict" not in result.stdout.str()


def test_selecting_no_burn_in_test_for_a_result_is_incomplete(pytester, tmp_path):
    result = run_suite(pytester, "-m", "nvlink and matmul", "--gpu-results", str(tmp_path))
    assert result.ret == 2
    result.stdout.fnmatch_lines(["gpu-burnin verdict: INCOMPLETE (2 devices): no burn-in test was selected*"])


# Burn-in tests of our own, to drive the plugin's bookkeeping without workers.
RECORDING = """
import json, pathlib, pytest
from harness.workers.devicetest import Outcome
from harness.records import Direction, Measurement

pytestmark = pytest.mark.matmul

def measure(burnin, dtypes):
    return Outcome(measurements=[
        Measurement(metric=f"matmul.{d}.tflops", gpu=g.uuid, value=1.0, unit="TFLOP/s",
                    direction=Direction.HIGHER, test=burnin.test) for g in burnin.devices for d in dtypes])
"""


def test_a_test_that_raises_is_a_test_error_not_a_hardware_failure(pytester, tmp_path):
    pytester.makepyfile(RECORDING + "def test_boom(burnin):\n    raise KeyError('surprise')\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu-device", "cpu", "--gpu-results", str(tmp_path))
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*TEST_ERROR*test_boom raised in call: KeyError: 'surprise'*"])
    finding = [f for f in only_result(tmp_path)["findings"] if f["code"] == "TEST_ERROR"][0]
    assert "KeyError" in finding["details"]["traceback"]


def test_a_test_that_skips_or_measures_too_little_is_incomplete(pytester, tmp_path):
    pytester.makepyfile(
        RECORDING
        + "def test_skips(burnin):\n    pytest.skip('no fabric manager')\n"
        + "def test_partial(burnin):\n    burnin.record(measure(burnin, ['fp32']))\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu-device", "cpu", "--gpu-results", str(tmp_path))
    assert result.ret == 2
    codes = [f["code"] for f in only_result(tmp_path)["findings"]]
    assert codes.count("TEST_SKIPPED") == 1
    assert codes.count("MISSING_MEASUREMENT") == 4  # bf16 and fp16 on each of the two CPU devices
    result.stdout.fnmatch_lines(
        ["*MISSING_MEASUREMENT*matmul.bf16.tflops is required by cpu-selftest.toml but was not measured*"]
    )


def test_the_result_file_is_rewritten_after_every_test(pytester, tmp_path):
    pytester.makepyfile(
        RECORDING
        + "def test_first(burnin):\n    burnin.record(measure(burnin, ['fp32', 'bf16', 'fp16']))\n"
        + "def test_second(burnin):\n"
        + f"    doc = json.loads(next(pathlib.Path({str(tmp_path)!r}).glob('*.json')).read_text())\n"
        + "    assert doc['state'] == 'running' and doc['verdict']['status'] == 'incomplete'\n"
        + "    assert [t['outcome'] for t in doc['tests']] == ['passed', 'not-run']\n"
        + "    assert len(doc['measurements']) == 6\n"
        + "    burnin.record(measure(burnin, ['fp32', 'bf16', 'fp16']))\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu-device", "cpu", "--gpu-results", str(tmp_path))
    assert result.ret == 0, result.stdout.str()
    assert only_result(tmp_path)["state"] == "finished"


def test_a_pass_whose_result_cannot_be_written_is_not_a_pass(pytester, tmp_path):
    out = tmp_path / "out"
    pytester.makepyfile(
        RECORDING
        + "def test_then_lose_the_disk(burnin):\n"
        + "    burnin.record(measure(burnin, ['fp32', 'bf16', 'fp16']))\n"
        + f"    import shutil; shutil.rmtree({str(out)!r}); pathlib.Path({str(out)!r}).write_text('not a dir')\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu-device", "cpu", "--gpu-results", str(out))
    assert result.ret == 2
    assert "gpu-burnin: could not write the result file" in result.stderr.str()
    result.stdout.fnmatch_lines(
        ["gpu-burnin verdict: INCOMPLETE (2 devices): RESULT_UNWRITTEN: the result file could not be written*"]
    )


PASSING = RECORDING + "def test_ok(burnin):\n    burnin.record(measure(burnin, ['fp32', 'bf16', 'fp16']))\n"
CPU_RUN = ("-p", "no:cacheprovider", "--gpu-device", "cpu")


def test_any_selected_test_that_fails_blocks_the_pass_burn_in_or_not(pytester, tmp_path):
    pytester.makepyfile(test_burn=PASSING, test_other="def test_unmarked():\n    assert 1 == 2\n")
    result = pytester.runpytest(*CPU_RUN, "--gpu-results", str(tmp_path))
    assert result.ret == 2
    result.stdout.fnmatch_lines(
        ["*TEST_ERROR*test_other.py::test_unmarked raised in call: AssertionError: assert 1 == 2*"]
    )


def test_a_module_skipped_or_broken_at_collection_does_not_vanish(pytester, tmp_path):
    pytester.makepyfile(
        test_burn=PASSING,
        test_memory="import pytest\npytest.importorskip('no_such_module')\npytestmark = pytest.mark.memory\n",
    )
    result = pytester.runpytest(*CPU_RUN, "--gpu-results", str(tmp_path))
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*TEST_SKIPPED*test_memory.py was skipped: could not import 'no_such_module'*"])
    pytester.makepyfile(test_memory="import no_such_module\n")
    result = pytester.runpytest(*CPU_RUN, "--gpu-results", str(tmp_path))
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*TEST_ERROR*test_memory.py raised in collect: *No module named 'no_such_module'*"])


def test_an_internal_error_of_pytest_is_never_a_pass(pytester, tmp_path):
    pytester.makepyfile(test_burn=PASSING)
    pytester.makeconftest("def pytest_runtest_logfinish(nodeid, location):\n    raise RuntimeError('plugin bug')\n")
    result = pytester.runpytest(*CPU_RUN, "--gpu-results", str(tmp_path))
    assert result.ret == 2
    assert only_result(tmp_path)["verdict"]["reasons"][0].startswith("TEST_ERROR: pytest reported an internal error")


def test_a_usage_error_in_collection_leaves_no_result_behind(pytester, tmp_path):
    result = pytester.runpytest(*CPU_RUN, "--gpu-results", str(tmp_path), "no_such_dir")
    assert result.ret == 4
    assert list(tmp_path.iterdir()) == []


def test_recording_another_groups_metric_is_a_bug_in_the_test(pytester):
    pytester.makepyfile(
        RECORDING + "def test_wrong(burnin):\n    m = measure(burnin, ['fp32']).measurements[0]\n"
        "    m = m.__class__(**{**m.to_dict(), 'metric': 'nccl.busbw', 'direction': m.direction})\n"
        "    burnin.record(Outcome(measurements=[m]))\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu-device", "cpu")
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*TEST_ERROR*ValueError: nccl.busbw from * recorded by *test_wrong (matmul)*"])


def test_recording_a_figure_against_its_declared_direction_is_a_bug_in_the_test(pytester):
    pytester.makepyfile(
        RECORDING + "def test_wrong(burnin):\n    m = measure(burnin, ['fp32']).measurements[0]\n"
        "    m = m.__class__(**{**m.to_dict(), 'direction': Direction.LOWER})\n"
        "    burnin.record(Outcome(measurements=[m]))\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu-device", "cpu")
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*TEST_ERROR*ValueError: matmul.fp32.tflops is better higher, not lower*"])


INTERRUPTED_TEST = (
    RECORDING
    + """
import os, signal, time
from harness.workers.devicetest import Outcome

def test_cut_short(burnin):
    live = Outcome()
    burnin.scope.on_outcome(live)  # as a device run does when it starts
    live.measurements.extend(measure(burnin, ['fp32']).measurements)  # a figure that arrived
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGNAME)
    time.sleep(30)

def test_never_reached(burnin):
    pass
"""
)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_an_interrupted_test_is_recorded_as_interrupted_with_its_duration_and_figures(pytester, tmp_path, name):
    pytester.makepyfile(INTERRUPTED_TEST.replace("SIGNAME", name))
    args = ("-p", "no:cacheprovider", "--gpu-device", "cpu", "--gpu-results", str(tmp_path))
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == 2
    output = result.stdout.str() + result.stderr.str()
    assert output.count(f"Interrupted: the run was interrupted by {name} !") == 1, output  # one line says so
    assert "KeyboardInterrupt" not in output and "--full-trace" not in output
    doc = only_result(tmp_path)
    assert doc["state"] == "finished" and doc["verdict"]["status"] == "incomplete"
    cut, never = doc["tests"]
    assert cut["outcome"] == "interrupted" and cut["duration_s"] >= 0.3
    assert never["outcome"] == "not-run"
    devices = [d["uuid"] for d in doc["devices"]]
    assert [(m["metric"], m["gpu"]) for m in doc["measurements"]] == [("matmul.fp32.tflops", d) for d in devices]
    assert "MISSING_MEASUREMENT" not in {f["code"] for f in doc["findings"]}  # it was not its fault
    assert f"INTERRUPTED: the run was interrupted by {name} before it finished" in doc["verdict"]["reasons"]
