"""The watch's journal (harness/watch/journal.py) never stops the watch: a torn line is dropped where it
is, an unreadable journal is moved aside and said on the node, a time from another clock is counted as
now. Through the real loop, the real client and the fake API server where the node is concerned."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.kube.api import KubeError
from harness.records import Code, Finding, Severity
from harness.watch.journal import ASIDE, Journal
from tests.kube_fake import FakeApiServer
from tests.watch_fleet import SCENARIOS, Nodes, events

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
GPU1 = "GPU-5141dc00-0000-4000-8000-000000000001"
FINDING = Finding(code=Code.XID, severity=Severity.FAIL, message="m", gpu="GPU-0", details={"xid": 79, "count": 1})


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


def three(path: Path) -> list[bytes]:
    """A journal of three entries (a fact, an action begun and done); its lines."""
    j = Journal(path, "b").open()
    j.note("start", 0.0, NOW, gpus=[{"index": 0, "uuid": "GPU-0", "name": "H100", "pci_bus_id": "00:18:00.0"}])
    begun = j.begin("record", ("K",), 30.0, NOW, findings=[FINDING.to_dict()], actions={"K": "record"})
    j.done(begun, 30.0, NOW)
    return path.read_bytes().splitlines()


def test_a_torn_line_is_dropped_where_it_is_and_the_lines_after_it_kept(tmp_path):
    path = tmp_path / "journal.jsonl"
    start, begun, done = three(path)
    # A write cut short (a full disk) left half a line and no newline; the restarted watch wrote on after it.
    path.write_bytes(start + b"\n" + begun[:25] + begun + b"\n" + done + b"\n")
    opened = Journal(path, "b").open()
    assert [(e.op, e.phase) for e in opened.entries] == [("start", "done"), ("record", "begin"), ("record", "done")]
    assert path.read_bytes() == b"\n".join([start, begun, done]) + b"\n"  # rewritten without the torn part
    assert opened.warnings and "line 2" in opened.warnings[0] and "cut short" in opened.warnings[0]
    assert not list(tmp_path.glob("*.bad")) and not list(tmp_path.glob(".*rewrite"))
    assert Journal(path, "b").open().warnings == []  # said once: the file is whole now


def test_a_torn_line_in_the_middle_and_nul_bytes_are_dropped_and_every_good_line_kept(tmp_path):
    path = tmp_path / "journal.jsonl"
    start, begun, done = three(path)
    path.write_bytes(start + b"\n" + begun[:40] + b"\n" + b"\0" * 300 + b"\n" + begun + b"\n" + done + b"\n")
    opened = Journal(path, "b").open()
    assert len(opened.entries) == 3 and len(opened.warnings) == 2
    assert path.read_bytes() == b"\n".join([start, begun, done]) + b"\n"
    assert opened.open_actions() == []


def test_a_last_line_without_its_newline_gets_one_before_anything_is_written_after_it(tmp_path):
    path = tmp_path / "journal.jsonl"
    start, begun, done = three(path)
    path.write_bytes(b"\n".join([start, begun, done]))  # the crash came between the line and its newline
    Journal(path, "b").open().note("start", 60.0, NOW)
    assert [e.op for e in Journal(path, "b").open().entries] == ["start", "record", "record", "start"]


BAD_LINES = {
    "an infinite id": lambda e: {**e, "id": float("inf")},
    "a NaN time": lambda e: {**e, "t": float("nan")},
    "a negative time": lambda e: {**e, "t": -1.0},
    "a boolean id": lambda e: {**e, "id": True},
    "an unknown op": lambda e: {**e, "op": "reboot"},
    "an unknown phase": lambda e: {**e, "phase": "half"},
    "another schema": lambda e: {**e, "v": 2},
    "keys that are not strings": lambda e: {**e, "keys": [1]},
    "findings as a string": lambda e: {**e, "data": {**e["data"], "findings": "XID"}},
    "a finding with an unknown code": lambda e: _finding(e, code="BOGUS"),
    "a finding with no severity": lambda e: _finding(e, severity=None),
    "a finding with an unknown remediation": lambda e: _finding(e, remediation="pray"),
    "a finding whose message is a number": lambda e: _finding(e, message=3),
    "an Xid that is a list": lambda e: _finding(e, details={"xid": [79]}),
    "more findings than keys": lambda e: {**e, "data": {**e["data"], "findings": e["data"]["findings"] * 2}},
    "an unknown action": lambda e: {**e, "data": {**e["data"], "actions": {"K": "reboot"}}},
    "data as a list": lambda e: {**e, "data": []},
    "an unknown key": lambda e: {**e, "colour": "red"},
    "a JSON array": lambda e: [e],
}


def _finding(entry: dict, **changed) -> dict:
    finding = {**entry["data"]["findings"][0], **changed}
    finding = {k: v for k, v in finding.items() if v is not None}
    return {**entry, "data": {**entry["data"], "findings": [finding]}}


@pytest.mark.parametrize("bad", [*BAD_LINES, "a line of text", "GPU index as a word"])
def test_an_unreadable_journal_is_moved_aside_whole_and_a_new_one_begun(tmp_path, bad):
    path = tmp_path / "journal.jsonl"
    start, begun, done = three(path)
    if bad == "a line of text":
        broken = b"this is not a journal"
    elif bad == "GPU index as a word":
        entry = json.loads(start)
        entry["data"]["gpus"][0]["index"] = "zero"
        broken = json.dumps(entry).encode()
    else:
        broken = json.dumps(BAD_LINES[bad](json.loads(begun))).encode()
    original = b"\n".join([start, broken, done]) + b"\n"
    path.write_bytes(original)
    opened = Journal(path, "b").open(now=NOW)
    (aside,) = tmp_path.glob("journal.jsonl.*.bad")
    assert aside.name == "journal.jsonl.20261128T000000Z.bad" and aside.read_bytes() == original  # kept whole
    assert [(e.op, e.phase) for e in opened.entries] == [(ASIDE, "begin")]  # to be said on the node
    assert opened.entries[0].data["moved_to"] == str(aside) and "line 2" in opened.entries[0].data["reason"]
    assert "line 2" in opened.warnings[0] and str(aside) in opened.warnings[0]
    assert [json.loads(line)["op"] for line in path.read_text().splitlines()] == [ASIDE]
    # A second bad journal the same second does not overwrite the first one kept.
    path.write_bytes(original)
    Journal(path, "b").open(now=NOW)
    assert len(list(tmp_path.glob("journal.jsonl.*.bad"))) == 2


def test_a_journal_that_is_not_a_regular_file_is_a_config_error_naming_the_flag(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.mkdir()
    with pytest.raises(ConfigError, match="--journal") as err:
        Journal(path, "b").open()
    assert str(path) in str(err.value)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):  # never opened: reading it would block
        Journal(fifo, "b").open()


def test_a_time_ahead_of_the_clock_is_counted_as_now(tmp_path):
    path = tmp_path / "journal.jsonl"
    three(path)
    opened = Journal(path, "b").open(t=10.0)
    assert [e.t for e in opened.entries] == [0.0, 10.0, 10.0]
    assert "timed after the clock" in opened.warnings[0]


# -- through the watch ------------------------------------------------------------------------------


def test_a_watch_with_an_unreadable_journal_moves_it_aside_says_so_on_the_node_and_goes_on(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    journal = tmp_path / "n1" / "journal.jsonl"
    journal.parent.mkdir()
    journal.write_text('{"boot":"boot-1","v":1,"op":"record","phase":"begin","id":Infinity}\n')
    fleet.add("n1", SCENARIOS / "row-remap-pending.toml")  # no exit: it starts
    (aside,) = journal.parent.glob("journal.jsonl.*.bad")
    assert events(server) == [("n1", "GPUBurnInWatchJournal")]
    (event,) = server.events
    assert event["type"] == "Warning" and str(aside) in event["message"] and "line 1" in event["message"]
    log = fleet.logs["n1"].getvalue()
    assert "warning:" in log and str(aside) in log and "line 1: id" in log
    fleet.run(1800)  # and goes on watching: the finding is acted on as ever
    assert server.node("n1")["metadata"]["labels"]["gpu-burnin/health"] == "failing"
    fleet.restart("n1")  # said once
    assert events(server) == [("n1", "GPUBurnInWatchJournal"), ("n1", "GPUBurnInFailing")]


def test_an_event_the_api_server_refused_is_said_at_the_next_start(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    journal = tmp_path / "n1" / "journal.jsonl"
    journal.parent.mkdir()
    journal.write_text('{"boot":"boot-1","v":1,"op":"record","phase":"begin","id":1,"data":{"findings":"XID"}}\n')
    server.fail("POST", "/api/v1/namespaces/gpu-burnin/events", 403, times=1000)
    with pytest.raises(KubeError):
        fleet.add("n1", SCENARIOS / "healthy.toml")
    server.heal()
    fleet.restart("n1")
    assert events(server) == [("n1", "GPUBurnInWatchJournal")]
    assert len(list(journal.parent.glob("journal.jsonl.*.bad"))) == 1  # the new journal was not moved too


def test_an_xid_journaled_under_another_clock_still_clears(server, tmp_path):
    """A boot id that could not be read is the same (empty) for every boot: a `t` from the last boot's
    clock, far ahead of this one's, must not keep the finding open for ever."""
    journal = Journal(tmp_path / "n1" / "journal.jsonl", "boot-1").open()
    xid13 = Finding(
        code=Code.XID, severity=Severity.WARNING, message="Xid 13", gpu=GPU1, details={"xid": 13, "count": 1}
    )
    key = f"XID:{GPU1}:13"
    begun = journal.begin("record", (key,), 1e7, NOW, findings=[xid13.to_dict()], actions={key: "record"})
    journal.done(begun, 1e7, NOW)
    fleet = Nodes(server, tmp_path, xid_clear_s=1800.0)
    watch = fleet.add("n1", SCENARIOS / "healthy.toml")  # the watch's clock starts at 0
    assert [t.key for t in watch.tracker.open()] == [key]
    assert "timed after the clock" in fleet.logs["n1"].getvalue()
    fleet.run(2400)
    assert watch.tracker.open() == []
    assert events(server) == [("n1", "GPUBurnInWatchCleared")]


def test_entries_the_watch_writes_read_back_as_written(tmp_path):
    path = tmp_path / "journal.jsonl"
    three(path)
    again = Journal(path, "b").open()
    assert [dataclasses.asdict(e) for e in again.entries][1]["data"]["findings"] == [FINDING.to_dict()]


def test_a_journal_that_cannot_be_rewritten_is_still_read(tmp_path, monkeypatch):
    path = tmp_path / "journal.jsonl"
    start, begun, done = three(path)
    path.write_bytes(start + b"\n" + begun[:25] + begun + b"\n" + done + b"\n")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    opened = Journal(path, "b").open()
    assert len(opened.entries) == 3 and "No space left on device" in opened.warnings[-1]
