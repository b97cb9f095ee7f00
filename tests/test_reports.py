import datetime as dt
import json

from harness import results
from harness.devices import Device
from harness.records import Code, Direction, Finding, Measurement, Severity
from harness.verdict import Status, Verdict
from reports import load_results


def write_run(directory, node: str, value: float, minute: int, *, fail: bool = False):
    started = dt.datetime(2026, 11, 27, 13, minute, tzinfo=dt.UTC)
    gpu = Device(index=3, kind="cuda", name="NVIDIA H100 80GB HBM3", uuid=f"GPU-{node}", serial=f"16{minute}")
    findings = [Finding(code=Code.DATA_MISMATCH, severity=Severity.FAIL, gpu=gpu.uuid, message="GPU 3: bad")]
    doc = results.ResultDocument(
        run_id=f"r{minute}",
        node=node,
        started_at=started,
        ended_at=started + dt.timedelta(minutes=2),
        device_kind="cuda",
        host={"driver": "580.159.04"},
        devices=[gpu],
        measurements=[
            Measurement(
                metric="matmul.bf16.tflops",
                gpu=gpu.uuid,
                value=value,
                unit="TFLOP/s",
                direction=Direction.HIGHER,
                test="t::matmul",
                samples=30,
                low=value - 10,
                high=value + 5,
            )
        ],
        findings=findings if fail else [],
        verdict=Verdict(status=Status.FAIL, reasons=("DATA_MISMATCH: GPU 3: bad",))
        if fail
        else Verdict(status=Status.PASS),
    )
    return results.write(results.path_for(directory, node, doc.run_id), doc)


def test_many_results_become_tables_and_bad_files_are_reported(tmp_path):
    paths = [write_run(tmp_path, "n1", 790.0, 1), write_run(tmp_path, "n2", 760.0, 2, fail=True)]
    torn = tmp_path / "torn.json"
    torn.write_text('{"schema": "gpu-burnin/res')
    found = load_results(*paths, torn)
    runs, measurements = found.runs, found.measurements
    assert list(runs["node"]) == ["n1", "n2"] and list(runs["verdict"]) == ["pass", "fail"]
    assert runs["reasons"][1] == ["DATA_MISMATCH: GPU 3: bad"] and runs["findings"][1] == ["DATA_MISMATCH"]
    assert (runs["ended_at"] - runs["started_at"]).dt.total_seconds().tolist() == [120.0, 120.0]
    assert list(measurements["value"]) == [790.0, 760.0]
    assert list(measurements["low"]) == [780.0, 750.0] and list(measurements["high"]) == [795.0, 765.0]
    assert list(measurements["gpu_index"]) == [3, 3] and list(measurements["serial"]) == ["161", "162"]
    assert set(measurements["driver"]) == {"580.159.04"} and list(measurements["verdict"]) == ["pass", "fail"]
    assert str(measurements["started_at"].dt.tz) == "UTC"
    assert found.findings[["node", "code", "gpu_index"]].values.tolist() == [["n2", "DATA_MISMATCH", 3]]
    assert [e.file for e in found.errors] == [str(torn)]


def test_directories_globs_and_strings_are_all_sources(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deep").mkdir(parents=True)
    write_run(tmp_path / "a", "n1", 790.0, 1)
    write_run(tmp_path / "b" / "deep", "n2", 760.0, 2)
    assert sorted(load_results(tmp_path).runs["node"]) == ["n1", "n2"]
    assert list(load_results(str(tmp_path / "a")).runs["node"]) == ["n1"]
    assert sorted(load_results(f"{tmp_path}/**/*.json").runs["node"]) == ["n1", "n2"]
    missing = load_results(tmp_path / "nowhere.json", f"{tmp_path}/*.nothing")
    assert missing.runs.empty and [e.problem for e in missing.errors] == [
        "no such file or directory",
        "no file matches this pattern",
    ]


def test_an_empty_source_gives_empty_tables_with_their_columns(tmp_path):
    found = load_results(tmp_path)
    assert found.runs.empty and "verdict" in found.runs and "low" in found.measurements
    assert json.dumps(found.errors, default=str) == "[]"
