from harness.records import Code, Finding, Severity
from harness.verdict import ExitCode, Status, TestOutcome, Verdict, decide

T = "gputests/test_matmul.py::test_matmul"


def finding(severity: Severity, code: Code = Code.TEST_ERROR, test: str = T) -> Finding:
    return Finding(code=code, severity=severity, message=f"{code} {severity}", test=test)


def test_pass_needs_every_test_passed_and_nothing_blocking():
    verdict = decide([finding(Severity.WARNING), finding(Severity.INFO)], {T: TestOutcome.PASSED})
    assert verdict == Verdict(status=Status.PASS)
    assert verdict.exit_code is ExitCode.PASS


def test_failure_wins_over_incomplete():
    verdict = decide(
        [finding(Severity.INCOMPLETE, Code.HANG), finding(Severity.FAIL, Code.DATA_MISMATCH)],
        {T: TestOutcome.FAILED, "other": TestOutcome.NOT_RUN},
    )
    assert verdict.status is Status.FAIL
    assert verdict.exit_code == 1
    assert verdict.reasons == ("DATA_MISMATCH: DATA_MISMATCH fail",)


def test_a_blocking_finding_makes_the_run_incomplete_even_when_tests_passed():
    verdict = decide([finding(Severity.INCOMPLETE, Code.NO_BASELINE, test="")], {T: TestOutcome.PASSED})
    assert verdict.status is Status.INCOMPLETE
    assert verdict.exit_code == 2


def test_no_selected_test_is_incomplete_never_pass():
    verdict = decide([], {})
    assert verdict.status is Status.INCOMPLETE
    assert "no burn-in test was selected" in verdict.reasons


def test_a_test_that_did_not_pass_blocks_even_without_a_finding():
    for outcome in (TestOutcome.SKIPPED, TestOutcome.ERROR, TestOutcome.FAILED, TestOutcome.NOT_RUN):
        verdict = decide([], {T: outcome})
        assert verdict.status is Status.INCOMPLETE, outcome
        assert verdict.reasons == (f"{T} ended {outcome}",)


def test_a_warning_about_a_test_does_not_explain_its_failure():
    verdict = decide([finding(Severity.WARNING)], {T: "failed"})
    assert verdict.status is Status.INCOMPLETE


def test_round_trip():
    verdict = decide([finding(Severity.INCOMPLETE)], {T: "error"})
    assert Verdict.from_dict(verdict.to_dict()) == verdict
    assert verdict.to_dict()["exit_code"] == 2
