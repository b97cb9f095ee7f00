import json

from harness.records import Code, Direction, Finding, Measurement, Remediation, Severity


def test_measurement_round_trips_through_json_and_ignores_unknown_keys():
    m = Measurement(
        metric="matmul.bf16.tflops",
        gpu="GPU-1",
        value=791.5,
        unit="TFLOP/s",
        direction=Direction.HIGHER,
        test="t",
        samples=40,
        low=780.0,
        high=795.0,
    )
    data = json.loads(json.dumps(m.to_dict()))
    data["added_by_a_later_version"] = 1
    assert Measurement.from_dict(data) == m
    assert m.group == "matmul"


def test_finding_round_trips_with_its_enums():
    f = Finding(
        code=Code.HANG,
        severity=Severity.INCOMPLETE,
        message="GPU 3 hung",
        gpu="GPU-3",
        remediation=Remediation.RESET_GPU,
        test="t",
        details={"phase": "bf16 window 7"},
    )
    data = json.loads(json.dumps(f.to_dict()))
    assert data["code"] == "HANG" and data["severity"] == "incomplete"
    back = Finding.from_dict(data)
    assert back == f
    assert back.code is Code.HANG and back.remediation is Remediation.RESET_GPU
