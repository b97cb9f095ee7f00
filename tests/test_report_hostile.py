"""Hostile result files given to `report` and `baseline propose` (issue 15, item 16): each is one broken
file, listed with its reason and skipped; the report is still written; nothing hangs or reads for ever."""

import json
import os
import shutil
import signal

import pytest

from bench.fleet import FleetSpec, write_fleet
from harness.cli import main
from reports import load_results
from reports.resultfile import MAX_BYTES
from tests.helpers import REPO

NOW = "2026-11-28T00:00:00Z"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet")
    write_fleet(directory, FleetSpec(nodes=4, gpus=8))
    return directory


@pytest.fixture
def no_hang():
    """Turns a hang (a FIFO read before the fix) into a failure; not a timing check."""

    def stop(signum, frame):
        raise TimeoutError("the report hung")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _variant(fleet, change):
    data = json.loads(sorted(fleet.glob("*.json"))[0].read_text())
    data["run_id"], data["node"] = "hostile-run", "hostile-node"
    change(data)
    return data


def _set(path, value):
    def change(data):
        *parents, last = path
        for key in parents:
            data = data[key]
        data[last] = value

    return change


DOCUMENTS = {
    "year 2300": (_set(["started_at"], "2300-01-01T00:00:00Z"), "started_at", "outside 2000-01-01 to 2100-01-01"),
    "year 1500": (_set(["started_at"], "1500-06-01T00:00:00Z"), "started_at", "outside 2000-01-01 to 2100-01-01"),
    "year 9999": (_set(["ended_at"], "9999-12-31T23:59:59Z"), "ended_at", "outside 2000-01-01 to 2100-01-01"),
    "year 9999 west of UTC": (_set(["started_at"], "9999-12-31T23:00:00-10:00"), None, "OverflowError"),
    "device index zero": (_set(["devices", 0, "index"], "zero"), "devices[0].index", "expected a whole number"),
    "device index true": (_set(["devices", 1, "index"], True), "devices[1].index", "expected a whole number"),
    "NaN duration": (_set(["tests", 0, "duration_s"], float("nan")), "tests[0].duration_s", "NaN is not a JSON"),
    "Infinity exit code": (_set(["verdict", "exit_code"], float("inf")), "verdict.exit_code", "Infinity is not"),
    "a list for a node": (_set(["node"], ["a"]), "node", "expected a string"),
    "a table for a driver": (_set(["host", "driver"], {"x": 1}), "host.driver", "expected a string"),
    "a finding's GPU a number": (
        lambda d: d["findings"].append({"code": "HANG", "severity": "fail", "message": "m", "gpu": 7}),
        "findings[0].gpu",
        "expected a string",
    ),
    "a device index of 10**30": (_set(["devices", 0, "index"], 10**30), "devices[0].index", "expected a whole"),
    "a value of 10**400": (_set(["measurements", 0, "value"], 10**400), "measurements[0].value", "unexpected"),
    "samples of 10**30": (_set(["measurements", 0, "samples"], 10**30), "measurements[0].samples", "unexpected"),
    "a time that is a number": (_set(["started_at"], 12345), None, "malformed result"),
    "a bad profile": (_set(["profile", "duration_s"], -1), "profile.duration_s", "below the minimum"),
}


@pytest.mark.parametrize("case", DOCUMENTS)
def test_a_hostile_document_is_one_broken_file(fleet, tmp_path, case):
    change, field, problem = DOCUMENTS[case]
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(_variant(fleet, change)))  # NaN and Infinity as Python writes them
    _only_broken(fleet, hostile, field, problem)


def test_json_nested_too_deeply_is_one_broken_file(fleet, tmp_path):
    hostile = tmp_path / "deep.json"
    deep = "[" * 100_000 + "]" * 100_000
    hostile.write_text('{"schema": "gpu-burnin/result", "schema_version": 1, "x": ' + deep + "}")
    _only_broken(fleet, hostile, None, "nested too deeply")


def test_a_file_over_the_size_limit_is_not_read(fleet, tmp_path):
    hostile = tmp_path / "huge.json"
    padding = "x" * (MAX_BYTES + 1)
    hostile.write_text(json.dumps(_variant(fleet, _set(["selection"], padding))))
    _only_broken(fleet, hostile, None, "larger than 16 MiB")


def test_a_fifo_named_directly_is_refused_without_blocking(fleet, tmp_path, no_hang):
    hostile = tmp_path / "results.json"
    os.mkfifo(hostile)
    _only_broken(fleet, hostile, None, "is a FIFO, not a regular file")


def test_a_link_to_dev_zero_named_directly_is_refused_without_reading(fleet, tmp_path, no_hang):
    hostile = tmp_path / "zero.json"
    hostile.symlink_to("/dev/zero")
    _only_broken(fleet, hostile, None, "is a character device, not a regular file")


def test_the_report_is_written_listing_every_hostile_file(fleet, tmp_path, no_hang):
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    for i, (change, _, _) in enumerate(DOCUMENTS.values()):
        (hostile / f"doc{i}.json").write_text(json.dumps(_variant(fleet, change)))
    os.mkfifo(hostile / "fifo.json")
    (hostile / "zero.json").symlink_to("/dev/zero")
    named = [str(hostile / "fifo.json"), str(hostile / "zero.json"), str(hostile / "doc*.json")]
    out = tmp_path / "out"
    out.mkdir()
    findings = out / "f.json"
    code = main(["report", str(fleet), *named, "-o", str(out / "r.html"), "--json", str(findings), "--now", NOW])
    assert code == 0
    data = json.loads(findings.read_text())
    assert len(data["broken_files"]) == len(DOCUMENTS) + 2
    assert data["summary"]["runs"] == 4 and data["summary"]["files"] == 4 + len(DOCUMENTS) + 2
    assert all(str(hostile / f"doc{i}.json") in (out / "r.html").read_text() for i in range(len(DOCUMENTS)))


def test_a_fifo_in_a_results_directory_is_listed_not_skipped_silently(fleet, tmp_path, no_hang):
    directory = tmp_path / "results"
    shutil.copytree(fleet, directory)
    os.mkfifo(directory / "stuck.json")
    found = load_results(directory)
    assert [(e.file, e.problem) for e in found.errors] == [
        (str(directory / "stuck.json"), "is a FIFO, not a regular file: only result files are read")
    ]
    assert len(found.runs) == 4


def test_many_distinct_metrics_still_give_a_page(fleet, tmp_path):
    """A file of hundreds of metrics made plotly refuse the histogram grid's spacing."""
    many = _variant(fleet, lambda d: None)
    template = many["measurements"][0]
    many["measurements"] = [dict(template, metric=f"made.up{i}") for i in range(300)]
    hostile = tmp_path / "many.json"
    hostile.write_text(json.dumps(many))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["report", str(fleet), str(hostile), "-o", str(out / "r.html"), "--now", NOW]) == 0
    assert "300 more metrics not drawn" not in (out / "r.html").read_text()
    assert "more metrics not drawn (in --json)" in (out / "r.html").read_text()


def test_propose_skips_a_hostile_file_and_names_it(fleet, tmp_path, capsys, no_hang):
    hostile = tmp_path / "results.json"
    os.mkfifo(hostile)
    baseline = str(REPO / "baselines" / "h100-sxm-80gb.toml")
    code = main(["baseline", "propose", str(fleet), str(hostile), "--baseline", baseline, "--min-gpus", "1"])
    assert code == 0
    assert f"gpu-burnin: skipped {hostile}: is a FIFO" in capsys.readouterr().err


def _only_broken(fleet, hostile, field, problem):
    found = load_results(fleet, hostile)
    [broken] = found.errors
    assert (broken.file, broken.field) == (str(hostile), field) and problem in broken.problem, broken
    assert len(found.runs) == 4 and found.files == 5


def test_control_characters_from_a_file_never_reach_the_terminal(fleet, tmp_path, capsys):
    """A GPU model no baseline covers is named in the summary: its escape sequence is shown, not obeyed."""
    hostile = tmp_path / "esc.json"
    hostile.write_text(json.dumps(_variant(fleet, _set(["devices", 0, "name"], "GPU\x1b[2J\x1b]0;owned\x07"))))
    assert main(["report", str(fleet), str(hostile), "-o", str(tmp_path / "r.html"), "--now", NOW]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "no baseline covers: GPU\\x1b[2J\\x1b]0;owned\\x07" in out


# The same run in two files counts once.


def test_a_copy_of_a_run_in_another_directory_counts_once(fleet, tmp_path):
    copy = tmp_path / "backup"
    copy.mkdir()
    source = sorted(fleet.glob("*.json"))[0]
    shutil.copy(source, copy / source.name)
    found = load_results(fleet, copy)
    once = load_results(fleet)
    assert len(found.runs) == len(once.runs) == 4
    assert len(found.measurements) == len(once.measurements)
    assert found.duplicates == [str(copy / source.name)] and found.errors == [] and found.files == 5


def test_of_two_copies_the_finished_one_counts(fleet, tmp_path):
    """A copy taken while the run was going (state running) and the final file: the final one counts,
    whichever is read first."""
    source = sorted(fleet.glob("*.json"))[0]
    data = json.loads(source.read_text())
    early = dict(data, state="running", measurements=data["measurements"][:1], findings=[])
    early["verdict"] = {"status": "incomplete", "reasons": ["the run has not finished"], "exit_code": 2}
    (tmp_path / "a-early.json").write_text(json.dumps(early))
    (tmp_path / "b-final.json").write_text(json.dumps(data))
    found = load_results(tmp_path)
    assert list(found.runs["state"]) == ["finished"] and list(found.runs["file"]) == [str(tmp_path / "b-final.json")]
    assert len(found.measurements) == len(data["measurements"])
    assert found.duplicates == [str(tmp_path / "a-early.json")]


def test_the_summary_counts_a_copy_once_and_says_so(fleet, tmp_path, capsys):
    source = sorted(fleet.glob("*.json"))[0]
    copy = tmp_path / "copy.json"
    shutil.copy(source, copy)
    assert main(["report", str(fleet), str(copy), "-o", str(tmp_path / "r.html"), "--now", NOW]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("gpu-burnin report: 5 files (0 broken, skipped, 1 copies of runs read twice"), first
    assert ", 4 runs, 4 nodes," in first
