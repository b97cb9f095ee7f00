"""DCGM's diagnostic: its JSON as the real dcgmi writes it, and what happens when there is none.

The files under tests/data/dcgm are real `dcgmi diag -j` outputs (tests/data/SOURCES.md).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.nvml import dcgm
from harness.records import NODE, Code, Remediation, Severity
from tests.helpers import REPO

DATA = REPO / "tests" / "data" / "dcgm"
R2_PASS = DATA / "virtualclient_dcgmi_diag_r2_1gpu_pass.json"
R3_PASS = DATA / "virtualclient_dcgmi_diag_r3_1gpu_pass.json"
CUDA_FAIL = DATA / "virtualclient_dcgmi_diag_cuda-library-fail.json"
GPUS = {0: "GPU-0000", 1: "GPU-1111"}
TEST = "gputests/test_dcgm.py::test_diag"


def judged(path: Path) -> list[Any]:
    return dcgm.findings(dcgm.parse_diag(path.read_text()), GPUS, test=TEST)


def blocking(findings: list[Any]) -> list[Any]:
    return [f for f in findings if f.severity in (Severity.FAIL, Severity.INCOMPLETE)]


def diag(*categories: dict[str, Any], **top: Any) -> str:
    return json.dumps({"DCGM GPU Diagnostic": {"test_categories": list(categories)}, **top})


def category(name: str, *tests: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"category": name, "tests": [{"name": test, "results": results} for test, results in tests]}


# --- the real files -------------------------------------------------------------------------------------------


def test_the_level_2_report_passes() -> None:
    report = dcgm.parse_diag(R2_PASS.read_text())
    assert report.problem == "" and len(report.results) == 11
    assert {r.status for r in report.results} == {"pass"}
    assert judged(R2_PASS) == []


def test_the_level_3_report_passes_and_notes_the_skipped_eud() -> None:
    report = dcgm.parse_diag(R3_PASS.read_text())
    assert report.problem == ""
    assert {r.category for r in report.results} == {"Deployment", "Integration", "Hardware", "Stress"}
    assert len(report.results) == 16
    found = judged(R3_PASS)
    assert blocking(found) == []
    (skipped,) = found
    assert (skipped.severity, skipped.gpu, skipped.code) == (Severity.INFO, "GPU-0000", Code.DCGM_FAILED)
    assert "'EUD Test' was skipped" in skipped.message


def test_gpu_results_name_their_gpu_and_keep_dcgms_info() -> None:
    report = dcgm.parse_diag(R3_PASS.read_text())
    pcie = next(r for r in report.results if r.test == "PCIe")
    assert pcie.gpus == (0,) and pcie.category == "Integration"
    assert "bidirectional bandwidth" in pcie.info[0]
    denylist = next(r for r in report.results if r.test == "Denylist")
    assert denylist.gpus == ()


def test_the_cuda_library_failure_is_one_failing_deployment_finding() -> None:
    report = dcgm.parse_diag(CUDA_FAIL.read_text())
    assert report.problem == ""  # "DCGM GPU Diagnostic" is the list of categories itself here
    assert [(r.category, r.test) for r in report.failed] == [("Deployment", "CUDA Main Library")]
    found = judged(CUDA_FAIL)
    (failed,) = found
    assert (failed.code, failed.severity, failed.gpu, failed.test) == (Code.DCGM_FAILED, Severity.FAIL, NODE, TEST)
    assert failed.remediation is Remediation.CHECK_CONFIG
    assert "Deployment test 'CUDA Main Library' failed" in failed.message
    assert "Cannot open library libcuda.so" in failed.message
    assert failed.details["warnings"][0].startswith("Cannot open library libcuda.so: 'libcuda.so: cannot open")
    json.dumps(failed.to_dict())


# --- shapes of other DCGM versions ----------------------------------------------------------------------------


def test_dcgm_3_warning_objects_and_gpu_lists_give_one_finding_per_gpu() -> None:
    text = diag(
        category(
            "Hardware",
            (
                "GPU Memory",
                [
                    {
                        "gpu_ids": "0,1",
                        "status": "Fail",
                        "warnings": [{"warning": "DBE detected", "error_id": 31, "error_category": 3}, None],
                    }
                ],
            ),
        ),
        version="3.3.5",
        **{"Driver Version Detected": "550.54.15"},
    )
    report = dcgm.parse_diag(text)
    assert (report.version, report.driver) == ("3.3.5", "550.54.15")
    found = dcgm.findings(report, GPUS, test=TEST)
    assert [(f.gpu, f.severity, f.remediation) for f in found] == [
        ("GPU-0000", Severity.FAIL, Remediation.REPLACE_GPU),
        ("GPU-1111", Severity.FAIL, Remediation.REPLACE_GPU),
    ]
    assert found[0].message == (
        "GPU 0 (GPU-0000): DCGM diagnostic Hardware test 'GPU Memory' failed: DBE detected (DCGM error 31)"
    )


def test_a_deployment_error_names_its_gpu_by_number() -> None:
    warning = {"warnings": "Persistence mode for GPU 1 is disabled.", "error_id": 8}
    text = diag(category("Deployment", ("Persistence Mode", [{"status": "Warn", "gpu_ids": 1, "warnings": [warning]}])))
    (found,) = dcgm.findings(dcgm.parse_diag(text), GPUS, test=TEST)
    assert (found.gpu, found.severity, found.remediation) == ("GPU-1111", Severity.WARNING, Remediation.CHECK_CONFIG)
    assert "Persistence mode for GPU 1 is disabled. (DCGM error 8)" in found.message


def test_dcgm_4_entities_are_read() -> None:
    results = [
        {"entity_group": "GPU", "entity_group_id": 1, "entity_id": 0, "status": "Pass"},
        {"entity_group": "CPU", "entity_group_id": 7, "entity_id": 3, "status": "Fail", "warnings": [{"warning": "x"}]},
    ]
    text = json.dumps({"DCGM Diagnostic": {"test_categories": [category("Hardware", ("CPU EUD Test", results))]}})
    report = dcgm.parse_diag(text)
    assert [(r.gpus, r.entity, r.status) for r in report.results] == [((0,), "", "pass"), ((), "CPU 3", "fail")]
    (found,) = dcgm.findings(report, GPUS, test=TEST)
    assert found.gpu == NODE and found.message.startswith("CPU 3: ")


def test_a_gpu_this_run_does_not_know_is_named_on_the_node() -> None:
    text = diag(category("Stress", ("Targeted Power", [{"gpu_ids": "7", "status": "Fail"}])))
    (found,) = dcgm.findings(dcgm.parse_diag(text), GPUS, test=TEST)
    assert found.gpu == NODE and found.severity is Severity.FAIL
    assert found.message.startswith("DCGM GPU 7 (not a GPU this run knows): ")
    assert found.message.endswith("failed: DCGM gave no reason")


@pytest.mark.parametrize(
    ("status", "severity"),
    [("Skip - All", Severity.INFO), ("Warning", Severity.WARNING), ("Not Run", Severity.INCOMPLETE)],
)
def test_statuses_are_read_in_their_variants(status: str, severity: Severity) -> None:
    text = diag(category("Hardware", ("Diagnostic", [{"gpu_ids": "0", "status": status}])))
    (found,) = dcgm.findings(dcgm.parse_diag(text), GPUS, test=TEST)
    assert found.severity is severity


# --- what is not a report -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not JSON: nothing"),
        ("Error: unable to connect to host engine", "not JSON: Error: unable to connect"),
        (CUDA_FAIL.read_text()[:700], "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"something": {}}', "no 'DCGM GPU Diagnostic'"),
        ('{"DCGM GPU Diagnostic": {"test_categories": 3}}', "'test_categories' is missing or not a list"),
        ('{"DCGM GPU Diagnostic": {"test_categories": []}}', "no test results"),
        ('{"DCGM GPU Diagnostic": {"version": "3.1.7", "runtime_error": "Unable to find GPUs"}}', "DCGM: Unable"),
        ('{"iterations": [], "Overall Result": "Pass"}', "several iterations"),
    ],
    ids=["empty", "text", "truncated", "list", "no-root", "categories", "no-results", "runtime-error", "iterations"],
)
def test_malformed_output_is_an_incomplete_finding(text: str, problem: str) -> None:
    report = dcgm.parse_diag(text)
    assert problem in report.problem
    (found,) = dcgm.findings(report, GPUS, test=TEST)
    assert (found.code, found.severity, found.remediation) == (Code.DCGM_FAILED, Severity.INCOMPLETE, Remediation.RERUN)
    assert "could not say" in found.message


def test_a_result_that_cannot_be_read_does_not_hide_the_ones_that_can() -> None:
    data = json.loads(CUDA_FAIL.read_text())
    data["DCGM GPU Diagnostic"][1]["tests"][0]["results"][0] = {"gpu_ids": "0"}  # PCIe: no status
    found = dcgm.findings(dcgm.parse_diag(json.dumps(data)), GPUS, test=TEST)
    assert sorted(f.severity for f in found) == [Severity.FAIL, Severity.INCOMPLETE]
    incomplete = next(f for f in found if f.severity is Severity.INCOMPLETE)
    assert "test_categories[1]: a result of test 'PCIe' has no status" in incomplete.message


def test_a_gpu_id_that_is_not_a_number_is_a_problem() -> None:
    text = diag(category("Hardware", ("GPU Memory", [{"gpu_ids": "all", "status": "Pass"}])))
    assert "gpu_ids 'all' is not a list of GPU ids" in dcgm.parse_diag(text).problem


# --- running dcgmi --------------------------------------------------------------------------------------------


class FakeRunner:
    def __init__(self, answer: subprocess.CompletedProcess[str] | Exception):
        self.answer = answer
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        assert kwargs["timeout"] == 900 and kwargs["check"] is False
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def ran(returncode: int, stdout: str = "", stderr: str = "") -> FakeRunner:
    return FakeRunner(subprocess.CompletedProcess(["dcgmi"], returncode, stdout=stdout, stderr=stderr))


def test_run_diag_reads_a_failing_report_despite_dcgmis_exit_status() -> None:
    runner = ran(226, stdout=CUDA_FAIL.read_text())
    report = dcgm.run_diag(3, timeout_s=900, runner=runner)
    assert runner.calls == [["dcgmi", "diag", "-r", "3", "-j"]]
    assert (report.level, report.exit_status, report.problem) == (3, 226, "")
    (found,) = dcgm.findings(report, GPUS, test=TEST)
    assert found.severity is Severity.FAIL and "(level 3)" in found.message


def test_run_diag_reads_json_after_a_line_of_text() -> None:
    report = dcgm.run_diag(
        2, timeout_s=900, runner=ran(0, stdout="Successfully ran diagnostic.\n" + R2_PASS.read_text())
    )
    assert report.problem == "" and len(report.results) == 11


def test_without_dcgmi_the_report_is_incomplete_and_says_to_install_it() -> None:
    report = dcgm.run_diag(1, timeout_s=900, runner=FakeRunner(FileNotFoundError(2, "No such file")))
    assert report.tool_missing and "dcgmi is not installed" in report.problem
    (found,) = dcgm.findings(report, GPUS, test=TEST)
    assert (found.severity, found.remediation) == (Severity.INCOMPLETE, Remediation.CHECK_CONFIG)


def test_a_diag_that_times_out_is_incomplete() -> None:
    report = dcgm.run_diag(3, timeout_s=900, runner=FakeRunner(subprocess.TimeoutExpired(["dcgmi"], 900)))
    assert "no result within 900 s" in report.problem
    (found,) = dcgm.findings(report, GPUS, test=TEST)
    assert (found.severity, found.remediation) == (Severity.INCOMPLETE, Remediation.RERUN)


def test_a_non_zero_exit_without_json_is_the_problem() -> None:
    report = dcgm.run_diag(3, timeout_s=900, runner=ran(255, stderr="Error: unable to establish a connection\n"))
    assert report.problem == "dcgmi exited with status 255: Error: unable to establish a connection"
    assert [f.severity for f in dcgm.findings(report, GPUS, test=TEST)] == [Severity.INCOMPLETE]


def test_a_non_zero_exit_with_only_passing_tests_is_not_a_pass() -> None:
    report = dcgm.run_diag(2, timeout_s=900, runner=ran(1, stdout=R2_PASS.read_text()))
    assert report.problem == "dcgmi exited with status 1, though no test failed"
    assert [f.severity for f in dcgm.findings(report, GPUS, test=TEST)] == [Severity.INCOMPLETE]


@pytest.mark.parametrize("level", [0, 5])
def test_an_unknown_level_is_refused(level: int) -> None:
    with pytest.raises(ValueError, match="level"):
        dcgm.run_diag(level, timeout_s=900, runner=ran(0))
