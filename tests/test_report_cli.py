"""`gpu-burnin report`: its files, its summary, its exit codes, and nothing written on bad input."""

import datetime as dt
import json
import subprocess
import sys

import pandas as pd
import pytest

from bench.fleet import FleetSpec, write_fleet
from harness import results
from harness.cli import main
from harness.devices import Device
from harness.records import Direction, Measurement
from harness.results import ResultDocument, RunState
from harness.verdict import Status, Verdict
from reports import load_results
from tests.helpers import REPO

NOW = "2026-11-28T00:00:00Z"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet")
    spec = FleetSpec(nodes=24, slow_gpus=1, failing_nodes=2, stale_nodes=1, unfinished_preflights=1, broken_files=2)
    return directory, write_fleet(directory, spec)


def test_the_report_writes_html_json_csv_and_parquet_and_summarises(fleet, tmp_path, capsys):
    directory, planted = fleet
    out = {name: tmp_path / name for name in ("r.html", "f.json", "m.csv", "m.parquet")}
    code = main(
        ["report", str(directory), "-o", str(out["r.html"]), "--json", str(out["f.json"]), "--csv", str(out["m.csv"])]
        + ["--parquet", str(out["m.parquet"]), "--now", NOW]
    )
    assert code == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0].startswith(f"gpu-burnin report: {planted.runs + 2} files (2 broken, skipped), {planted.runs} runs")
    assert f"report: {out['r.html']}" == stdout[-1]
    assert any(line.startswith("coverage: 1 nodes not tested in 7 days, 1 with an unfinished") for line in stdout)

    findings = json.loads(out["f.json"].read_text())
    assert findings["summary"]["failing_nodes"] == len(planted.failing)
    assert {(o["node"], o["gpu_index"], o["metric"]) for o in findings["outliers"]} == planted.outliers
    assert {f["file"] for f in findings["broken_files"]} == planted.broken
    assert {s["node"] for s in findings["stale_nodes"]} == planted.stale
    assert {u["node"] for u in findings["unfinished_preflights"]} == planted.unfinished
    assert [p["model"] for p in findings["proposals"]] == ["H100 SXM 80GB", "A100 SXM 80GB"]
    assert findings["sensitivity"] and "schema_version = 1" in findings["proposals"][0]["proposed_file"]

    loaded = load_results(directory).measurements
    csv = pd.read_csv(out["m.csv"])
    parquet = pd.read_parquet(out["m.parquet"])
    assert len(csv) == len(parquet) == len(loaded) == planted.measurements
    assert list(csv.columns) == list(parquet.columns) == list(loaded.columns)
    assert parquet["value"].tolist() == loaded["value"].tolist()
    assert parquet["node"].astype(str).tolist() == loaded["node"].astype(str).tolist()
    assert str(parquet["started_at"].dt.tz) == "UTC"
    page = out["r.html"].read_text()
    assert "id='outliers'" in page and 'id="outliers-table"' in page and page.count("plotly.js v") == 1


def test_progress_goes_to_stderr_only_when_asked_or_on_a_terminal(fleet, tmp_path, capsys):
    directory, planted = fleet
    assert main(["report", str(directory), "-o", str(tmp_path / "a.html"), "--now", NOW]) == 0
    assert "reading result files" not in capsys.readouterr().err
    assert main(["report", str(directory), "-o", str(tmp_path / "b.html"), "--now", NOW, "--progress"]) == 0
    total = planted.runs + 2
    assert f"gpu-burnin: reading result files {total}/{total}\n" in capsys.readouterr().err


def test_no_readable_result_is_incomplete_and_still_lists_the_broken_files(tmp_path, capsys):
    (tmp_path / "torn.json").write_text('{"schema": "gpu-bur')
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "torn.json"), str(tmp_path / "nowhere"), "-o", str(out)]) == 2
    page = out.read_text()
    assert "torn.json" in page and "no such file or directory" in page
    assert "0 runs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--json", "{tmp}/missing/f.json"], "{tmp}/missing/f.json: its directory does not exist"),
        (["--baseline-dir", "{tmp}/nothing"], "{tmp}/nothing: not a directory"),
        (["--now", "yesterday"], "argument --now: expected a time such as"),
        (["--fell", "2"], "argument --fell: expected a fraction between 0 and 1"),
    ],
)
def test_bad_input_is_a_usage_error_and_writes_nothing(fleet, tmp_path, capsys, extra, message):
    directory, _ = fleet
    out = tmp_path / "r.html"
    args = ["report", str(directory), "-o", str(out), *(a.format(tmp=tmp_path) for a in extra)]
    assert main(args) == 4
    assert f"gpu-burnin: error: {message.format(tmp=tmp_path)}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_node_commands_do_not_load_pandas_or_plotly():
    """report and baseline live in reports.cli, which imports its heavy parts only when it runs."""
    code = "import sys, harness.cli; print(sorted(m for m in ('pandas', 'plotly') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


def test_help_lists_the_new_commands(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "report" in text and "baseline" in text
    assert main(["baseline", "--help"]) == 0 and "propose" in capsys.readouterr().out


def test_cpu_self_test_results_are_reviewed_but_never_proposed_from(tmp_path, capsys):
    """The self-test's floors check the pipeline, not the CPU: no proposal may raise them to a CPU's speed."""
    cpu = Device(index=0, kind="cpu", name="Some CPU", uuid="CPU-0", sm_count=4)
    started = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    for i in range(60):
        doc = ResultDocument(
            run_id=f"r{i}", node=f"n{i}", started_at=started, ended_at=started, device_kind="cpu",
            state=RunState.FINISHED, devices=[cpu], verdict=Verdict(status=Status.PASS),
            measurements=[Measurement(metric="matmul.fp32.tflops", gpu="CPU-0", value=0.05 + i * 1e-4,
                                      unit="TFLOP/s", direction=Direction.HIGHER)],
        )  # fmt: skip
        results.write(tmp_path / f"n{i}.json", doc)
    findings = tmp_path / "out" / "f.json"
    findings.parent.mkdir()
    assert (
        main(["report", str(tmp_path / "n*.json"), "-o", str(tmp_path / "out" / "r.html"), "--json", str(findings)])
        == 0
    )
    data = json.loads(findings.read_text())
    assert data["summary"]["runs"] == 60 and data["proposals"] == [] and data["uncovered_models"] == []
    assert "proposal for" not in capsys.readouterr().out
