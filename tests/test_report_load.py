"""reports.load's column-wise reader: the same rows as the typed reader, and stricter about bad ones."""

import json
import math

import pandas as pd
import pytest

from bench.fleet import FleetSpec, write_fleet
from harness import results
from reports import load_results
from reports.load import MEASUREMENT_COLUMNS


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet")
    write_fleet(directory, FleetSpec(nodes=6, gpus=4, failing_nodes=1, unfinished_preflights=1))
    return directory


def test_every_row_is_what_the_typed_reader_reads(fleet):
    """The fast path must not drift from harness.results.load: compare every measurement of every file."""
    found = load_results(fleet).measurements
    expected = []
    for path in sorted(fleet.glob("*.json")):
        doc = results.load(path)
        devices = {d.uuid: d for d in doc.devices}
        for m in doc.measurements:
            device = devices[m.gpu]
            expected.append(
                (doc.run_id, doc.node, str(doc.verdict.status), str(doc.state), doc.host["driver"], device.index,
                 device.serial, device.name, m.test, m.gpu, m.metric, m.value, m.unit, str(m.direction), m.samples,
                 m.low, m.high, m.peer)
            )  # fmt: skip
    columns = ["run_id", "node", "verdict", "state", "driver", "gpu_index", "serial", "gpu_name", "test", "gpu"]
    columns += ["metric", "value", "unit", "direction", "samples", "low", "high", "peer"]
    rows = [tuple(r) for r in found[columns].astype(object).itertuples(index=False)]
    assert sorted(rows, key=str) == sorted(expected, key=str)
    assert list(found.columns) == MEASUREMENT_COLUMNS


def test_repeated_strings_are_categories_and_times_are_utc(fleet):
    found = load_results(fleet).measurements
    for column in ("node", "metric", "gpu", "run_id", "verdict", "gpu_name", "unit", "peer"):
        assert isinstance(found[column].dtype, pd.CategoricalDtype), column
    assert str(found["started_at"].dt.tz) == "UTC" and found["value"].dtype == "float64"


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"value": "fast"}, "measurements[1].value", "'fast'"),
        ({"value": True}, "measurements[1].value", "True"),
        ({"direction": "up"}, "measurements[1].direction", "'up'"),
        ({"metric": None}, "measurements[1].metric", "None"),
        ({"samples": 2.5}, "measurements[1].samples", "2.5"),
        ({"low": "x"}, "measurements[1].low", "'x'"),
    ],
)
def test_a_bad_measurement_refuses_its_whole_file_naming_the_field(fleet, tmp_path, change, field, problem):
    source = sorted(fleet.glob("gpu-node-*.json"))[0]
    data = json.loads(source.read_text())
    good_run = data["run_id"]
    data["measurements"][1].update(change)
    data["run_id"] = "another-run"  # not a copy of the good file's run, which would count once
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    found = load_results(source, bad)
    assert [(e.file, e.field) for e in found.errors] == [(str(bad), field)] and problem in found.errors[0].problem
    assert list(found.runs["file"]) == [str(source)]
    assert set(found.measurements["run_id"]) == {good_run}  # the good file's rows only, none of the bad one's


def test_a_missing_field_and_a_nan_are_refused(fleet, tmp_path):
    source = sorted(fleet.glob("gpu-node-*.json"))[0]
    data = json.loads(source.read_text())
    del data["measurements"][0]["unit"]
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(data))
    data = json.loads(source.read_text())
    data["measurements"][2]["value"] = math.nan
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(data))  # Python writes NaN; JSON readers accept it; a report must not
    found = load_results(missing, nan)
    assert [(e.field, e.problem) for e in found.errors] == [
        ("measurements[0].unit", "missing"),
        ("measurements[2].value", "NaN is not a JSON number (result files hold finite numbers only)"),
    ]
    assert found.measurements.empty and found.runs.empty


def test_a_figure_of_no_listed_gpu_has_no_index(fleet, tmp_path):
    source = sorted(fleet.glob("gpu-node-*.json"))[0]
    data = json.loads(source.read_text())
    data["measurements"][0]["gpu"] = "node"
    path = tmp_path / "node.json"
    path.write_text(json.dumps(data))
    rows = load_results(path).measurements
    assert rows["gpu_index"].isna().sum() == 1 and rows.loc[rows["gpu"] == "node", "serial"].tolist() == [""]


def test_progress_is_called_once_per_file(fleet):
    calls = []
    load_results(fleet, progress=lambda done, total: calls.append((done, total)))
    total = len(list(fleet.glob("*.json")))
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_a_jobs_file_gives_every_nodes_result_once(fleet, tmp_path):
    """An MPI job's file (jobs/<run id>.json) holds every node's result; a node's own file beside it
    is the same run, read once; a node without a result adds nothing."""
    paths = sorted(fleet.glob("*.json"))[:2]
    docs = [results.load(p) for p in paths]
    (tmp_path / paths[0].name).write_bytes(paths[0].read_bytes())  # rank 0's own file
    job = results.write_job(
        results.job_path(tmp_path, "job-1"),
        "job-1",
        [(d.node, d, "") for d in docs] + [("rank 2", None, "no result from MPI rank 2 within 120 s")],
    )
    assert job.parent.name == "jobs"
    found = load_results(tmp_path)
    assert found.errors == []
    assert sorted(found.runs["node"]) == sorted(d.node for d in docs)
    assert len(found.measurements) == sum(len(d.measurements) for d in docs)
