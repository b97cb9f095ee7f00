import datetime as dt
import json
import os
import stat
import threading

import pytest

from harness import results
from harness.devices import Device
from harness.errors import ConfigError
from harness.groups import MatmulSection
from harness.profiles import quick
from harness.records import Code, Direction, Finding, Measurement, Severity
from harness.verdict import Status, TestOutcome, Verdict
from tests.helpers import REPO


def document(run_id: str = "r1", **fields) -> results.ResultDocument:
    started = dt.datetime(2026, 11, 27, 13, 0, tzinfo=dt.UTC)
    return results.ResultDocument(run_id=run_id, node="node-1", started_at=started, device_kind="cpu", **fields)


def test_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = results.path_for(tmp_path / "out", "node-1", "r1")
    results.write(path, document())
    results.write(path, document(state=results.RunState.FINISHED))
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert results.load(path).state is results.RunState.FINISHED
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_failed_write_keeps_the_previous_document(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    results.write(path, document())

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        results.write(path, document(state=results.RunState.FINISHED))
    assert json.loads(path.read_text())["state"] == "running"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path):
    nan = Measurement(metric="matmul.bf16.tflops", gpu="g", value=float("nan"), unit="u", direction=Direction.HIGHER)
    with pytest.raises(ValueError):
        results.write(tmp_path / "r.json", document(measurements=[nan]))
    assert list(tmp_path.iterdir()) == []


def test_a_document_round_trips_with_its_types(tmp_path):
    gpu = Device(index=0, kind="cuda", name="NVIDIA H200", uuid="GPU-1", sm_count=132, compute_capability="9.0")
    original = document(
        state=results.RunState.FINISHED,
        ended_at=dt.datetime(2026, 11, 27, 13, 2, 3, 456000, tzinfo=dt.UTC),
        profile=quick(),
        selection="matmul",
        faults=["corrupt:0"],
        host={"driver": "580.159.04"},
        devices=[gpu],
        baselines=[results.BaselineUse(model="H200 141GB", file="h200.toml", sha256="ab")],
        tests=[results.TestRecord(nodeid="t::m", group="matmul", outcome=TestOutcome.FAILED, duration_s=1.5)],
        measurements=[Measurement(metric="m.x", gpu="GPU-1", value=1.5, unit="u", direction=Direction.HIGHER)],
        findings=[Finding(code=Code.DATA_MISMATCH, severity=Severity.FAIL, message="GPU 0 (GPU-1): bad")],
        verdict=Verdict(status=Status.FAIL, reasons=("DATA_MISMATCH: GPU 0 (GPU-1): bad",)),
    )
    path = results.write(tmp_path / "r.json", original)
    again = results.load(path)
    assert again == original
    assert again.tests[0].outcome is TestOutcome.FAILED and again.profile.section(MatmulSection).size == 8192
    assert json.loads(path.read_text())["profile"]["matmul"] == {"size": 8192, "ring": 8}


def test_a_malformed_document_is_an_error_naming_the_file(tmp_path):
    path = results.write(tmp_path / "r.json", document())
    data = json.loads(path.read_text())
    data["tests"] = [{"nodeid": "t", "outcome": "exploded"}]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"{path}: malformed result: ValueError: 'exploded'"):
        results.load(path)


def test_load_refuses_other_documents_and_newer_versions(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**document().to_dict(), "schema_version": results.SCHEMA_VERSION + 1}))
    with pytest.raises(ConfigError) as caught:
        results.load(path)
    assert caught.value.field == "schema_version"
    path.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ConfigError, match="not a gpu-burnin result"):
        results.load(path)
    path.write_text("{half a docu")
    with pytest.raises(ConfigError, match="not a JSON document"):
        results.load(path)


def test_names_sort_by_time_and_are_safe_on_any_filesystem(tmp_path):
    first = results.new_run_id(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    second = results.new_run_id(dt.datetime(2026, 1, 2, 3, 4, 6, tzinfo=dt.UTC))
    assert first.startswith("20260102T030405Z-") and first < second
    assert results.path_for(tmp_path, "gpu node/7:a", first).name == f"gpu_node_7_a_{first}.json"


def test_timestamps_are_utc_with_milliseconds():
    moment = dt.datetime(2026, 11, 27, 14, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert results.timestamp(moment) == "2026-11-27T13:00:00.123Z"


def test_the_first_gpu_run_s_files_are_read_back_as_written():
    # Written on an H200 by the code of 2026-11-28, before the profile had per-test sections.
    folder = REPO / "bench" / "results" / "2026-11-28-h200" / "results"
    docs = {doc.verdict.status: doc for doc in map(results.load, sorted(folder.glob("*.json")))}
    assert set(docs) == {Status.PASS, Status.FAIL, Status.INCOMPLETE}
    passed = docs[Status.PASS]
    assert passed.profile.section(MatmulSection).size == 8192 and passed.devices[0].name == "NVIDIA H200"
    bf16 = [m for m in passed.measurements if m.metric == "matmul.bf16.tflops"]
    assert len(bf16) == 1 and 700 < bf16[0].value < 800
    assert [f.code for f in docs[Status.FAIL].findings if f.severity is Severity.FAIL] == [Code.DATA_MISMATCH]


@pytest.mark.parametrize("run_id", ["x/../../../ESCAPED", "../x", "a/b", "", ".hidden", "a" * 65, "x\n"])
def test_a_run_id_that_is_not_one_never_names_a_file(tmp_path, run_id):
    with pytest.raises(ConfigError):
        results.path_for(tmp_path, "node", run_id)
    with pytest.raises(ConfigError):
        results.job_path(tmp_path, run_id)


def test_a_node_name_never_leaves_the_results_directory(tmp_path):
    for node in ("..", "../..", "a/../../b", "/etc/passwd", ""):
        path = results.path_for(tmp_path, node, "20261207T000000Z-abcdef")
        assert path.parent == tmp_path and "/" not in path.name and path.name not in ("..", ".")


def test_load_reads_only_a_regular_file_of_a_sane_size(tmp_path):
    """A FIFO among the results (a node's disk is not trusted) would block the reader for ever: the watch
    reads this directory every poll. It is refused at once, as a file too large to be a result."""
    fifo = tmp_path / "n1_fifo.json"
    os.mkfifo(fifo)
    refused: list[str] = []

    def read() -> None:
        try:
            results.load(fifo)
        except ConfigError as err:
            refused.append(str(err))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "results.load blocked on a FIFO"
    assert refused and "not a regular file" in refused[0]
    huge = tmp_path / "n1_huge.json"
    huge.write_bytes(b" " * (results.MAX_BYTES + 1))
    with pytest.raises(ConfigError, match="over the limit"):
        results.load(huge)
