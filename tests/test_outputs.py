"""harness.outputs: an output replaces a regular file whole, and never a device, a FIFO, a link or an input."""

import os
import stat
import threading
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.outputs import check_outputs, write_output


def test_a_regular_file_is_replaced_whole_and_keeps_its_mode(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o600)
    before = target.stat().st_ino
    write_output(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_ino != before  # a new file renamed into place: a reader never sees half of one
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary left behind


def test_a_new_file_is_readable_by_all(tmp_path):
    write_output(tmp_path / "f.json", b"{}")
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644


def test_a_link_stays_a_link_and_its_target_is_written(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "report.html"
    target.write_text("old")
    link = tmp_path / "latest.html"
    link.symlink_to("real/report.html")
    write_output(link, "new")
    assert link.is_symlink() and os.readlink(link) == "real/report.html"
    assert target.read_text() == "new"


def test_a_link_to_a_device_writes_the_device_and_stays_a_link(tmp_path):
    link = tmp_path / "sink"
    link.symlink_to(os.devnull)
    write_output(link, "discarded")
    assert link.is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_output(fifo, "through the pipe")
    reader.join(timeout=60)  # a guard against a hang, not a timing check
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_dash_and_dev_stdout_are_standard_output(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    write_output(Path(name), "to the terminal\n")
    assert capsys.readouterr().out == "to the terminal\n"
    assert list(tmp_path.iterdir()) == []


def test_a_function_writes_a_stream(tmp_path):
    write_output(tmp_path / "t.csv", lambda out: out.write(b"a,b\n"))
    assert (tmp_path / "t.csv").read_text() == "a,b\n"


def test_an_unwritable_target_is_a_config_error_naming_the_flag(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=r"^--json .*/d: is a directory"):
        write_output(tmp_path / "d", "x", option="--json")


def _inputs(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for name in ("a.json", "b.json"):
        (results / name).write_text("{}")
    return results, [results / "a.json", results / "b.json"]


@pytest.mark.parametrize("how", ["same path", "relative path", "link", "hard link"])
def test_an_output_that_is_an_input_is_refused(tmp_path, monkeypatch, how):
    results, inputs = _inputs(tmp_path)
    output = {
        "same path": results / "a.json",
        "relative path": Path("results/../results/a.json"),
        "link": tmp_path / "link.json",
        "hard link": tmp_path / "hard.json",
    }[how]
    if how == "link":
        output.symlink_to(results / "a.json")
    elif how == "hard link":
        os.link(results / "a.json", output)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^--output .*: is one of the inputs \(.*a\.json\)"):
        check_outputs({"--output": output, "--json": None}, inputs)


def test_two_outputs_that_are_one_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^--csv .*same\.out: is the same file as --json's"):
        check_outputs({"--json": tmp_path / "same.out", "--csv": tmp_path / "same.out"})
    with pytest.raises(ConfigError, match=r"^--csv -: is the same file as --json's"):
        check_outputs({"--json": "-", "--csv": "-"})


def test_good_outputs_pass_the_check(tmp_path):
    _, inputs = _inputs(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    check_outputs({"-o": tmp_path / "new.html", "--json": "-", "--csv": os.devnull, "--parquet": fifo}, inputs)
    check_outputs({"-o": os.devnull, "--json": os.devnull})  # a device may take two: both discarded


@pytest.mark.parametrize(
    ("path", "problem"),
    [("missing/f.json", "its directory does not exist"), ("d", "is a directory; expected a file name")],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, path, problem):
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=f"^--json {tmp_path}/{path}: {problem}"):
        check_outputs({"--json": tmp_path / path})
