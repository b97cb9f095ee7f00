"""`gpu-burnin report` and `baseline propose` over object storage (moto's real S3 API): a bucket reads
as the directory it was copied from, and a hostile object is refused as a hostile file is."""

import json
import socket

import pytest

from bench.fleet import FleetSpec, write_fleet
from harness.cli import main
from reports import resultfile, sources
from reports.load import load_results

NOW = "2026-11-28T00:00:00Z"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet")
    spec = FleetSpec(nodes=12, slow_gpus=1, failing_nodes=1, stale_nodes=1, unfinished_preflights=1, broken_files=2)
    return directory, write_fleet(directory, spec)


@pytest.fixture
def copied(fleet, s3):
    """The fleet's files, each as an object under the bucket's results URL, by the same name."""
    directory, planted = fleet
    api = s3.api()
    for path in sorted(directory.glob("*.json")):
        api.put_object(Bucket=s3.name, Key=f"fleet/{path.name}", Body=path.read_bytes())
    return directory, planted, s3


def report(tmp_path, source, name, *extra):
    out = {kind: tmp_path / f"{name}.{kind}" for kind in ("html", "json", "csv")}
    argv = ["report", source, "-o", str(out["html"]), "--json", str(out["json"]), "--csv", str(out["csv"]), *extra]
    return main([*argv, "--now", NOW]), out


def test_the_report_over_a_bucket_is_the_report_over_the_same_files_on_disk(copied, tmp_path, capsys):
    directory, planted, s3 = copied
    code, on_disk = report(tmp_path, str(directory), "disk")
    disk_lines = capsys.readouterr().out.splitlines()
    assert code == 0
    code, in_store = report(tmp_path, s3.url, "store", "--progress")
    store_lines, err = capsys.readouterr()
    assert code == 0
    total = planted.runs + 2
    assert f"gpu-burnin: reading result files {total}/{total}\n" in err  # progress, as for files
    assert store_lines.splitlines()[:-1] == disk_lines[:-1]  # all but `report: FILE`
    assert store_lines.splitlines()[0].startswith(f"gpu-burnin report: {total} files (2 broken, skipped)")
    assert in_store["csv"].read_bytes() == on_disk["csv"].read_bytes()
    from_store = json.loads(in_store["json"].read_text().replace(f"{s3.url}/", f"{directory}/"))
    assert from_store == json.loads(on_disk["json"].read_text())

    files, objects = load_results(directory), load_results(s3.url)
    for name in ("runs", "measurements", "findings"):
        a, b = getattr(files, name).drop(columns="file", errors="ignore"), getattr(objects, name)
        assert a.equals(b.drop(columns="file", errors="ignore")), name
    assert set(objects.runs["file"]) == {f"{s3.url}/{p.name}" for p in directory.glob("*.json")} - {
        f"{s3.url}/{name.rsplit('/', 1)[-1]}" for name in planted.broken
    }


def test_a_torn_foreign_or_oversized_object_is_counted_and_skipped(fleet, s3, monkeypatch, capsys):
    directory, _ = fleet
    good = next(p for p in sorted(directory.glob("*.json")) if p.name not in {"broken"} and _readable(p))
    api = s3.api()
    data = good.read_bytes()
    api.put_object(Bucket=s3.name, Key="fleet/n/good.json", Body=data)
    api.put_object(Bucket=s3.name, Key="fleet/n/torn.json", Body=data[: len(data) // 2])
    api.put_object(Bucket=s3.name, Key="fleet/n/foreign.json", Body=b'{"schema": "someone-else/1", "x": 1}')
    api.put_object(Bucket=s3.name, Key="fleet/n/nan.json", Body=data.replace(b'"value": ', b'"value": NaN, "v": ', 1))
    api.put_object(Bucket=s3.name, Key="fleet/n/big.json", Body=data + b" " * len(data))
    api.put_object(Bucket=s3.name, Key="fleet/n/notes.txt", Body=b"not a result: not listed")
    limit = len(data) + 100  # the size limit, as for a file: the big one is over it
    monkeypatch.setattr(sources, "MAX_BYTES", limit)
    monkeypatch.setattr(resultfile, "MAX_BYTES", limit)
    fetched = []
    from harness import store

    real_fetch = store.fetch
    monkeypatch.setattr(store, "fetch", lambda remote, *a: fetched.append(remote.url) or real_fetch(remote, *a))
    found = load_results(s3.url)
    assert found.files == 5 and len(found.runs) == 1
    problems = {e.file: e.problem for e in found.errors}
    assert set(problems) == {f"{s3.url}/n/{name}.json" for name in ("torn", "foreign", "nan", "big")}
    assert problems[f"{s3.url}/n/torn.json"].startswith("not a JSON document")
    assert "not a gpu-burnin result" in problems[f"{s3.url}/n/foreign.json"]
    assert "NaN is not a JSON number" in problems[f"{s3.url}/n/nan.json"]
    assert "not a result file" in problems[f"{s3.url}/n/big.json"]
    assert f"{s3.url}/n/big.json" not in fetched  # refused by its listed size, never fetched


def _readable(path) -> bool:
    try:
        resultfile.read(path)
    except Exception:  # noqa: BLE001
        return False
    return True


def test_a_glob_url_reads_only_its_matches_and_a_url_naming_nothing_is_listed_as_an_error(copied, tmp_path, capsys):
    directory, planted, s3 = copied
    node = sorted(planted.failing)[0]
    found = load_results(f"{s3.url}/{node}_*.json", f"s3://{s3.name}/elsewhere")
    assert set(found.runs["node"]) == {node}
    [error] = found.errors
    assert error.file == f"s3://{s3.name}/elsewhere" and "no result object" in error.problem
    assert main(["report", f"s3://{s3.name}/elsewhere", "-o", str(tmp_path / "r.html")]) == 2


def test_a_store_that_cannot_be_reached_is_a_listed_error_not_a_crash(s3, tmp_path, monkeypatch, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{probe.getsockname()[1]}")
    assert main(["report", s3.url, "-o", str(tmp_path / "r.html")]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "gpu-burnin report: 1 files (1 broken, skipped)" in captured.out


@pytest.mark.parametrize("flag", ["-o", "--json", "--csv", "--parquet"])
def test_an_output_is_never_a_url(flag, s3, capsys):
    assert main(["report", s3.url, flag, f"{s3.url}/report.out"]) == 4
    assert f"{s3.url}/report.out is a URL; this is a local file" in capsys.readouterr().err


def test_baseline_propose_over_a_bucket_proposes_what_it_proposes_over_the_files(copied, capsys):
    directory, _, s3 = copied
    from harness.baselines import default_dir

    baseline = str(default_dir() / "h100-sxm-80gb.toml")
    assert main(["baseline", "propose", str(directory), "--baseline", baseline, "--now", NOW, "--min-gpus", "2"]) == 0
    on_disk = capsys.readouterr().out
    assert main(["baseline", "propose", s3.url, "--baseline", baseline, "--now", NOW, "--min-gpus", "2"]) == 0
    assert capsys.readouterr().out == on_disk
    assert main(["baseline", "propose", s3.url, "--baseline", baseline, "-o", f"{s3.url}/b.toml"]) == 4
