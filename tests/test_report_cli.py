"""`gpu-burnin report`: its files, its summary, its exit codes, and nothing written on bad input."""

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import threading

import pandas as pd
import pytest

from bench.fleet import FleetSpec, write_fleet
from harness import results
from harness.cli import build_parser, main
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
        (["--json", "{tmp}/missing/f.json"], "--json {tmp}/missing/f.json: its directory does not exist"),
        (["--baseline-dir", "{tmp}/nothing"], "{tmp}/nothing: not a directory"),
        (["--now", "yesterday"], "argument --now: expected a time such as"),
        (["--fell", "2"], "argument --fell: expected a fraction greater than 0 and at most 1, got 2"),
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


# Item 10 of issue 15: an output never replaces a link, a FIFO, standard output or an input.


def test_outputs_through_links_keep_the_links(fleet, tmp_path):
    directory, _ = fleet
    (tmp_path / "real").mkdir()
    for name in ("r.html", "f.json"):
        (tmp_path / "real" / name).write_text("old")
        (tmp_path / name).symlink_to(f"real/{name}")
    code = main(["report", str(directory), "-o", str(tmp_path / "r.html"), "--json", str(tmp_path / "f.json")])
    assert code == 0
    for name in ("r.html", "f.json"):
        assert (tmp_path / name).is_symlink() and os.readlink(tmp_path / name) == f"real/{name}"
    assert json.loads((tmp_path / "real" / "f.json").read_text())["schema"] == "gpu-burnin/report"
    assert (tmp_path / "real" / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_an_output_onto_a_fifo_is_written_through(fleet, tmp_path):
    directory, _ = fleet
    fifo = tmp_path / "findings"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(["report", str(directory), "-o", str(tmp_path / "r.html"), "--json", str(fifo), "--now", NOW]) == 0
    reader.join(timeout=60)  # a guard against a hang, not a timing check
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert json.loads(got[0])["schema"] == "gpu-burnin/report"


def test_json_dash_is_standard_output_and_the_summary_moves_to_stderr(fleet, tmp_path, monkeypatch, capsys):
    directory, planted = fleet
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(directory), "-o", "r.html", "--json", "-", "--now", NOW]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["runs"] == planted.runs  # nothing but the JSON on stdout
    assert "gpu-burnin report:" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no file named "-"


@pytest.mark.parametrize("how", ["file", "directory", "glob", "link"])
def test_an_output_that_is_one_of_the_inputs_is_refused(tmp_path, capsys, how):
    results_dir = tmp_path / "results"
    write_fleet(results_dir, FleetSpec(nodes=3, gpus=2))
    victim = sorted(results_dir.glob("*.json"))[0]
    before = victim.read_bytes()
    source = {"file": str(victim), "directory": str(results_dir), "glob": f"{results_dir}/*.json"}.get(how)
    output = victim
    if how == "link":
        source, output = str(results_dir), tmp_path / "latest.html"
        output.symlink_to(victim)
    assert main(["report", source, "-o", str(output)]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"gpu-burnin: error: --output {output}: is one of the inputs") and err.count("\n") == 1
    assert victim.read_bytes() == before


def test_propose_refuses_an_input_as_its_output_and_writes_dash_to_stdout(tmp_path, capsys):
    results_dir = tmp_path / "results"
    write_fleet(results_dir, FleetSpec(nodes=3, gpus=8))  # the H100 file is for 8-GPU nodes
    victim = sorted(results_dir.glob("*.json"))[0]
    before = victim.read_bytes()
    baseline = str(REPO / "baselines" / "h100-sxm-80gb.toml")
    argv = ["baseline", "propose", str(results_dir), "--baseline", baseline, "--min-gpus", "1", "--min-nodes", "1"]
    assert main([*argv, "-o", str(victim), "--write"]) == 4
    assert "--output" in capsys.readouterr().err and victim.read_bytes() == before
    assert main([*argv, "-o", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# Proposed by `gpu-burnin baseline propose`")  # the file only
    assert "rule:" in captured.err  # the diff beside it, on stderr


# Item 17 of issue 15: report and propose flags are bounded, finite and named in the error.


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--stale-days", "1e308", "expected a number of days greater than 0 and at most 3650, got 1e308"),
        ("--stale-days", "nan", "expected a number of days greater than 0 and at most 3650, got nan"),
        ("--outlier-z", "1e308", "expected a number of robust sigmas greater than 0 and at most 50, got 1e308"),
        ("--outlier-z", "inf", "expected a number of robust sigmas greater than 0 and at most 50, got inf"),
        ("--k", "1e308", "expected a number of robust sigmas greater than 0 and at most 50, got 1e308"),
        ("--fell", "-0.1", "expected a fraction greater than 0 and at most 1, got -0.1"),
        ("--now", "9999-12-31T23:59:59-10:00", "expected a time such as 2026-11-28T00:00:00Z"),
        ("--now", "0001-01-01T00:00:00Z", "expected a time from 2000-01-01 to 2100-01-01"),
        ("--now", "2300-01-01T00:00:00Z", "expected a time from 2000-01-01 to 2100-01-01"),
        ("--min-gpus", "0", "expected at least 1, got 0"),
        ("-o", "", "expected a file name, got ''"),
    ],
)
def test_report_flags_out_of_bounds_are_one_line_naming_the_flag(fleet, tmp_path, capsys, flag, value, message):
    directory, _ = fleet
    argv = ["report", str(directory), "-o", str(tmp_path / "r.html"), flag, value]
    assert main(argv) == 4
    err = capsys.readouterr().err
    name = "-o/--output" if flag == "-o" else flag
    assert err.startswith(f"gpu-burnin: error: argument {name}: {message}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flag", "value"), [("--k", "1e308"), ("--k", "-1"), ("--now", "9999-12-31T23:59:59-10:00")])
def test_propose_flags_out_of_bounds_are_one_line_naming_the_flag(fleet, tmp_path, capsys, flag, value):
    directory, _ = fleet
    baseline = str(REPO / "baselines" / "h100-sxm-80gb.toml")
    argv = ["baseline", "propose", str(directory), "--baseline", baseline, "-o", str(tmp_path / "p.toml"), flag, value]
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"gpu-burnin: error: argument {flag}: expected") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_the_flags_defaults_are_the_dataclasses(capsys):
    """One declaration: the flags take their defaults (and say them in --help) from Limits and Rule."""
    from reports.settings import STALE_DAYS, Limits, Rule

    args = build_parser().parse_args(["report", "x.json"])
    assert (args.outlier_z, args.fell, args.stale_days) == (Limits().outlier_z, Limits().fell_share, STALE_DAYS)
    assert (args.k, args.min_gpus, args.min_nodes) == (Rule().k, Rule().min_gpus, Rule().min_nodes)
    assert main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"outlier (default {Limits().outlier_z:g})" in text and f"(default {Rule().min_gpus})" in text


def test_every_flag_at_its_bound_is_taken(fleet, tmp_path):
    """The flags' bounds and the dataclasses' checks agree: a value the parser takes never fails later."""
    directory, _ = fleet
    bounds = ["--fell", "1", "--outlier-z", "50", "--k", "50", "--stale-days", "3650", "--now", "2099-12-31T23:59:59Z"]
    assert main(["report", str(directory), "-o", str(tmp_path / "r.html"), *bounds]) == 0
