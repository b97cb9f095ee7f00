"""`gpu-burnin watch` checks its inputs and output paths at start: a scenario with a bad field, a
`--metrics-textfile` it could not keep, is exit 4 naming the file and the field or flag, before NVML,
the journal or the node are touched (the loop never starts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import cli
from harness.watch import loop
from tests.kube_fake import FakeApiServer
from tests.watch_fleet import DATA, GPU_NODE, WRITES


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        fake.add_node("n1", labels=GPU_NODE)
        yield fake


@pytest.fixture(autouse=True)
def no_loop(monkeypatch):
    """Were the checks to let the watch start, it returns at once rather than watching for ever."""
    monkeypatch.setattr(loop, "run", lambda watch, stop: 0)


def watch(server: FakeApiServer, tmp_path: Path, textfile: Path) -> int:
    return cli.main(
        [
            "watch",
            "--node",
            "n1",
            "--kubeconfig",
            str(server.kubeconfig(tmp_path)),
            "--journal",
            str(tmp_path / "state" / "journal.jsonl"),
            "--nvml",
            f"sim:{DATA / 'busy.toml'}",
            "--metrics-textfile",
            str(textfile),
        ]
    )


def untouched(server: FakeApiServer, tmp_path: Path) -> bool:
    return not [r for r in server.requests if r.method in WRITES] and not (tmp_path / "state").exists()


def test_a_metrics_textfile_that_is_a_directory_is_exit_4_naming_the_flag(server, tmp_path, capsys):
    textfile = tmp_path / "metrics"
    textfile.mkdir()
    assert watch(server, tmp_path, textfile) == 4
    err = capsys.readouterr().err
    assert "--metrics-textfile" in err and str(textfile) in err and "is a directory" in err
    assert untouched(server, tmp_path)
    assert [r.path for r in server.requests] == []  # not even read


def test_a_metrics_textfile_under_a_file_is_exit_4_naming_the_flag(server, tmp_path, capsys):
    blocker = tmp_path / "metrics"
    blocker.write_text("a file, not a directory")
    assert watch(server, tmp_path, blocker / "watch.prom") == 4
    err = capsys.readouterr().err
    assert "--metrics-textfile" in err and f"{blocker} is not a directory" in err
    assert untouched(server, tmp_path)


def test_a_metrics_textfile_that_is_a_link_or_a_device_is_never_replaced(server, tmp_path, capsys):
    target = tmp_path / "elsewhere.prom"
    target.write_text("kept")
    link = tmp_path / "watch.prom"
    link.symlink_to(target)
    for textfile in (link, Path("/dev/null")):
        assert watch(server, tmp_path, textfile) == 4
        assert "is not a regular file" in capsys.readouterr().err
    assert link.is_symlink() and target.read_text() == "kept"
    assert untouched(server, tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any directory")
def test_a_metrics_textfile_in_a_directory_this_process_cannot_write_is_exit_4(server, tmp_path, capsys):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o555)
    assert watch(server, tmp_path, closed / "sub" / "watch.prom") == 4
    assert "not writable" in capsys.readouterr().err
    assert untouched(server, tmp_path)


def test_a_metrics_textfile_still_to_be_made_is_accepted(server, tmp_path):
    assert watch(server, tmp_path, tmp_path / "new" / "dir" / "watch.prom") == 0  # the loop is stubbed
    assert (tmp_path / "state" / "journal.jsonl").exists()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[gpus]]\ntemperature_c = "hot"\n', "gpus[0].temperature_c"),
        ("[[gpus]]\n[[xids]]\ngpu = -1\nxid = 79\n", "xids[0].gpu"),
    ],
)
def test_a_scenario_with_a_bad_field_is_exit_4_naming_the_file_and_field(server, tmp_path, capsys, text, field):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(text)
    code = cli.main(
        ["watch", "--node", "n1", "--kubeconfig", str(server.kubeconfig(tmp_path)), "--nvml", f"sim:{scenario}"]
        + ["--journal", str(tmp_path / "state" / "journal.jsonl")]
    )
    assert code == 4
    err = capsys.readouterr().err
    assert str(scenario) in err and field in err and "Traceback" not in err
    assert untouched(server, tmp_path)
