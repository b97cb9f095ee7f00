"""Results to object storage (harness/store.py, harness/outbox.py), against moto's real S3 API
(tests/s3server.py): one object per run, retried within a bound, nothing lost, no secret shown."""

import datetime as dt
import json
import socket
import threading

import pytest

from harness import cli, metrics, options, outbox, results, store
from harness.errors import ConfigError
from harness.results import ResultDocument

NODE = "gpu-node-17"
SECRET = "gpu-burnin-test-secret-d41d8cd98f00"  # the fixture's AWS_SECRET_ACCESS_KEY


def result(directory, run_id="20261127T130000Z-a1b2c3", node=NODE) -> bytes:
    """A result file in `directory`, as a run leaves it; its bytes."""
    started = dt.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    doc = ResultDocument(run_id=run_id, node=node, started_at=started, device_kind="cpu", entrypoint="run")
    return results.write(results.path_for(directory, node, run_id), doc).read_bytes()


def hurried(directory, url, patience_s=5.0):
    """`outbox.drain` on a clock that only its waits move: the attempts are real, the waits take no time."""
    now = [0.0]
    return outbox.drain(
        directory, url, patience_s=patience_s, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )


def closed_port() -> str:
    """The address of a port nothing listens on: a store that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_result_is_one_object_named_by_node_and_run_id_holding_the_files_bytes(s3, tmp_path, capsys):
    data = result(tmp_path)
    done = outbox.deliver(tmp_path, NODE, "20261127T130000Z-a1b2c3", s3.url)
    key = f"fleet/{NODE}/20261127T130000Z-a1b2c3.json"
    assert s3.objects() == {key: data}
    assert s3.puts() == [f"/{s3.name}/{key}"]  # one PUT: no multipart upload, nothing half-visible
    assert done.sent == (f"{s3.url}/{NODE}/20261127T130000Z-a1b2c3.json",) and done.left == 0
    assert outbox.waiting(tmp_path) == 0
    assert f"gpu-burnin: result sent to {s3.url}/{NODE}/20261127T130000Z-a1b2c3.json" in capsys.readouterr().err


def test_sending_a_run_again_overwrites_its_object_with_the_same_bytes(s3, tmp_path):
    data = result(tmp_path)
    outbox.deliver(tmp_path, NODE, "20261127T130000Z-a1b2c3", s3.url)
    outbox.deliver(tmp_path, NODE, "20261127T130000Z-a1b2c3", s3.url)
    assert s3.objects() == {f"fleet/{NODE}/20261127T130000Z-a1b2c3.json": data}
    assert len(set(s3.puts())) == 1 and len(s3.puts()) == 2


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_is_retried_with_growing_waits_then_sent(s3, tmp_path, status):
    result(tmp_path)
    outbox.queue(tmp_path, NODE, "20261127T130000Z-a1b2c3")
    s3.server.fail(status, 3)
    waits: list[float] = []
    done = outbox.drain(tmp_path, s3.url, patience_s=600, sleep=waits.append)
    assert done.left == 0 and len(done.sent) == 1
    assert len(s3.puts()) == 4  # three refused, the fourth stored
    assert len(waits) == 3
    assert all(outbox.FIRST_WAIT_S * 2**i / 2 <= w <= outbox.FIRST_WAIT_S * 2**i for i, w in enumerate(waits))


def test_the_waits_stop_at_the_patience_and_the_result_stays_in_the_outbox(s3, tmp_path):
    result(tmp_path)
    outbox.queue(tmp_path, NODE, "20261127T130000Z-a1b2c3")
    s3.server.fail(503, 1000)
    now = [0.0]
    done = outbox.drain(
        tmp_path, s3.url, patience_s=40, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    assert done.left == 1 and not done.sent and "HTTP 503 SlowDown" in done.problem, done.problem
    assert now[0] < 40  # never a wait past the bound
    assert len(s3.puts()) >= 4  # waits of 1, 2, 4, 8, then 15 s at most: several attempts in 40 s
    s3.server.fail(0, 0)
    assert s3.objects() == {}


def test_403_from_a_wrong_key_leaves_the_result_waiting_and_never_shows_the_secret(s3, tmp_path, capsys):
    result(tmp_path)
    s3.server.authenticate(True)  # moto now refuses the fixture's key: it knows no such key
    done = outbox.deliver(tmp_path, NODE, "20261127T130000Z-a1b2c3", s3.url, send=False)
    assert done.left == 1
    done = hurried(tmp_path, s3.url)
    assert done.left == 1 and "Access Key Id" in done.problem and "HTTP 403" in done.problem, done.problem
    outbox.say(done, tmp_path, __import__("sys").stderr)
    err = capsys.readouterr().err
    assert "1 result(s) wait in" in err and "gpu-burnin results push" in err
    assert SECRET not in err + done.problem
    assert SECRET not in "".join(p.read_text() for p in outbox.directory(tmp_path).iterdir())


def test_an_injected_403_is_one_more_failed_attempt(s3, tmp_path):
    result(tmp_path)
    outbox.queue(tmp_path, NODE, "20261127T130000Z-a1b2c3")
    s3.server.fail(403, 1)
    done = outbox.drain(tmp_path, s3.url, patience_s=600, sleep=lambda s: None)
    assert done.left == 0 and len(s3.puts()) == 2


def test_no_credentials_at_all_is_a_failed_attempt_not_a_crash(s3, tmp_path, monkeypatch):
    result(tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    outbox.queue(tmp_path, NODE, "20261127T130000Z-a1b2c3")
    done = hurried(tmp_path, s3.url)
    assert done.left == 1 and "credentials" in done.problem.lower(), done.problem


def test_a_store_that_is_down_leaves_the_result_and_the_next_drain_sends_all_oldest_first(s3, tmp_path, monkeypatch):
    runs = ["20261127T130000Z-000003", "20261125T130000Z-000001", "20261126T130000Z-000002"]
    sent = {run: result(tmp_path, run) for run in runs}
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port())
    for run in runs:
        done = outbox.deliver(tmp_path, NODE, run, s3.url, send=False)
    done = hurried(tmp_path, s3.url)
    assert done.left == 3 and not done.sent and "Could not connect" in done.problem, done.problem
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    done = outbox.drain(tmp_path, s3.url)
    assert done.left == 0 and outbox.waiting(tmp_path) == 0
    assert s3.puts() == [f"/{s3.name}/fleet/{NODE}/{run}.json" for run in sorted(runs)]  # oldest first, once each
    assert s3.objects() == {f"fleet/{NODE}/{run}.json": data for run, data in sent.items()}


def test_an_entry_is_written_before_the_send_and_removed_only_after_it(s3, tmp_path, monkeypatch):
    result(tmp_path)
    seen = []
    real_put = store.put

    def put(url, key, data):
        seen.append(outbox.waiting(tmp_path))
        return real_put(url, key, data)

    monkeypatch.setattr(store, "put", put)
    outbox.deliver(tmp_path, NODE, "20261127T130000Z-a1b2c3", s3.url)
    assert seen == [1] and outbox.waiting(tmp_path) == 0


def test_a_store_that_never_answers_cannot_hold_the_run(tmp_path, monkeypatch):
    result(tmp_path)
    outbox.queue(tmp_path, NODE, "20261127T130000Z-a1b2c3")
    forever = threading.Event()
    monkeypatch.setattr(store, "put", lambda *args: forever.wait())
    done = outbox.drain(tmp_path, "s3://bucket/fleet", patience_s=0.3)
    forever.set()
    assert done.left == 1 and done.problem.startswith("no answer within")


def test_an_entry_whose_result_is_gone_or_is_another_runs_is_dropped_unsent(s3, tmp_path):
    outbox.queue(tmp_path, NODE, "20261127T130000Z-a1b2c3")  # no such result file
    result(tmp_path, "20261127T140000Z-bbbbbb", node="other")
    path = results.path_for(tmp_path, NODE, "20261127T140000Z-bbbbbb")
    path.write_bytes(results.path_for(tmp_path, "other", "20261127T140000Z-bbbbbb").read_bytes())
    outbox.queue(tmp_path, NODE, "20261127T140000Z-bbbbbb")  # its file holds another node's result
    (outbox.directory(tmp_path) / "junk.pending").write_text("{")
    done = outbox.drain(tmp_path, s3.url)
    assert len(done.dropped) == 2 and not done.sent and s3.objects() == {}
    assert done.left == 1  # the unreadable entry waits for a person, and is counted


def test_results_push_sends_what_waits_and_exits_2_while_any_is_left(s3, tmp_path, monkeypatch, capsys):
    result(tmp_path)
    outbox.queue(tmp_path, NODE, "20261127T130000Z-a1b2c3")
    monkeypatch.setattr(outbox, "PATIENCE_S", 0.5)
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port())
    assert cli.main(["results", "push", "--results", str(tmp_path), "--results-url", s3.url]) == 2
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setattr(outbox, "PATIENCE_S", 60.0)
    assert cli.main(["results", "push", "--results", str(tmp_path), "--results-url", s3.url]) == 0
    assert list(s3.objects()) == [f"fleet/{NODE}/20261127T130000Z-a1b2c3.json"]
    assert cli.main(["results", "push", "--results", str(tmp_path), "--results-url", s3.url]) == 0
    assert "nothing waits in the outbox" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("fleet-results/burnin", "is not a URL"),
        ("http://example.com/x", "http:// is not an object store"),
        ("s3://", "expected s3://BUCKET"),
        ("s3://bucket/x?versionId=1", "without ? or #"),
        ("s3://bucket//x", "expected s3://BUCKET"),
    ],
)
def test_a_bad_results_url_is_a_usage_error_naming_the_flag(url, message, tmp_path, capsys):
    assert cli.main(["run", "--device", "cpu", "--results", str(tmp_path), "--results-url", url]) == 4
    err = capsys.readouterr().err
    assert err.startswith("gpu-burnin: error: argument --results-url: ") and message in err, err
    assert not any(tmp_path.iterdir())  # nothing ran


def test_a_url_with_credentials_in_it_is_refused_without_repeating_them(capsys, tmp_path):
    url = f"s3://AKIDEXAMPLE:{SECRET}@bucket/fleet"
    assert cli.main(["run", "--device", "cpu", "--results", str(tmp_path), "--results-url", url]) == 4
    err = capsys.readouterr().err
    assert "carries no credentials" in err and SECRET not in err


def test_a_store_whose_client_is_not_installed_names_the_extra(monkeypatch):
    import fsspec

    def missing(protocol):
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(ConfigError, match=r"gs:// needs its client: pip install 'gpu-burnin\[gcs\]'"):
        store.check_url("gs://bucket/fleet")


def test_every_secret_of_the_environment_is_blanked_from_a_message(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("AZURE_STORAGE_KEY", "c2VjcmV0LWF6dXJlLWtleQ==")
    monkeypatch.setenv("HOME_DIRECTORY", "/home/someone")  # not a secret: left alone
    text = "signature for wJalrXUtnFEMI/K7MDENG and c2VjcmV0LWF6dXJlLWtleQ== in /home/someone"
    assert store.redact(text) == "signature for *** and *** in /home/someone"
    assert store.describe(ValueError(text)) == "ValueError: signature for *** and *** in /home/someone"


def test_the_outbox_gauge_says_how_many_results_wait(tmp_path):
    doc = ResultDocument(run_id="r1", node=NODE, started_at=results.utcnow(), device_kind="cpu")
    path = metrics.write(tmp_path / "m.prom", doc, outbox=3)
    assert f'gpu_burnin_results_outbox{{node="{NODE}"}} 3.0' in path.read_text()
    assert "gpu_burnin_results_outbox" not in metrics.write(tmp_path / "n.prom", doc).read_text()


def test_the_url_is_not_handed_to_the_child_the_parent_sends_once():
    parsed = cli.build_parser().parse_args(["run", "--device", "cpu", "--results-url", "s3://bucket/fleet"])
    values = options.values_from(parsed)
    assert values["results_url"] == "s3://bucket/fleet"
    assert not any("results-url" in arg for arg in options.child_argv(values))
    assert options.resolve(values).results_url == "s3://bucket/fleet"


def test_an_outbox_entry_is_a_small_record_not_a_result_file(tmp_path):
    """A report over the results directory must not read the outbox as results (nor twice)."""
    result(tmp_path)
    entry = outbox.queue(tmp_path, NODE, "20261127T130000Z-a1b2c3")
    assert entry.suffix == ".pending" and entry.parent == tmp_path / "outbox"
    assert set(json.loads(entry.read_text())) == {"node", "run_id", "queued_at"}


def test_only_harness_store_imports_fsspec_or_a_stores_client():
    """One module owns each outside system: the store's is harness/store.py (reports read through it)."""
    import ast

    from tests.helpers import REPO

    owners = set()
    for folder in ("harness", "reports", "gputests", "baselines", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n.split(".")[0] in {"fsspec", "s3fs", "gcsfs", "adlfs", "boto3", "botocore"} for n in names):
                    owners.add(str(path.relative_to(REPO)))
    assert owners == {"harness/store.py"}


def test_json_prints_the_result_document_as_one_line_for_log_pipelines(tmp_path, capsys):
    """Fluent Bit and Vector read a log line by line: the document must be one of them."""
    from harness import runner

    result(tmp_path)
    path = results.path_for(tmp_path, NODE, "20261127T130000Z-a1b2c3")
    with runner.documents_on_stdout():
        print("a message for a person")
        runner._print_document(path)
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and json.loads(out) == json.loads(path.read_text())
    assert list(json.loads(out)) == list(json.loads(path.read_text()))  # the file's own order
    assert err == "a message for a person\n"
