"""The watch's log (harness/watch/log.py): one line for every finding's course and every action, with the
node, the GPU (index and UUID) and the code; nothing for a quiet poll. The real loop against the
simulated NVML and the fake API server, in virtual time; the lines are read from the watch's stderr."""

from __future__ import annotations

import pytest

from harness.watch.config import Policy
from tests.kube_fake import FakeApiServer
from tests.watch_fleet import DATA, SCENARIOS, Nodes

NODE_PATH = "/api/v1/nodes/n1"


def gpu(index: int) -> str:
    return f"GPU {index} (GPU-5141dc00-0000-4000-8000-{index:012d})"


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


def lines(fleet: Nodes, name: str = "n1") -> list[str]:
    return fleet.logs[name].getvalue().splitlines()


def about(fleet: Nodes, code: str, index: int, name: str = "n1") -> list[str]:
    """What each line says after its node, GPU and code, for one finding."""
    head = f"gpu-burnin watch: node {name}: {gpu(index)}: {code}: "
    return [line.removeprefix(head) for line in lines(fleet, name) if line.startswith(head)]


def test_a_finding_is_said_when_it_appears_holds_is_acted_on_and_clears(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    fleet.add("n1", DATA / "reset-clears.toml")
    fleet.run(2 * 3600)
    said = about(fleet, "ROW_REMAP_PENDING", 0)
    assert [s.split(":")[0] for s in said] == [
        "appeared (fail)",
        "held 3 polls in a row",
        "request done",
        "clear done",
    ]
    assert "a row remap is pending" in said[0] and said[1].endswith(": request")
    assert said[2] == "request done: gpu-burnin/health=failing"
    assert said[3].startswith("clear done: absent 3 polls in a row")
    assert len(lines(fleet)) == len(said)  # and nothing else: the quiet polls between said nothing


def test_a_recorded_warning_and_a_policy_that_ignores_it_are_both_said(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    fleet.add("n1", SCENARIOS / "ecc-disabled.toml")
    fleet.run(600)
    said = about(fleet, "ECC_UNCORRECTABLE", 1)
    assert said[0].startswith("appeared (warning)") and said[1:] == [
        "held 3 polls in a row: record",
        "record done: the condition and a Warning Event",
    ]
    (tmp_path / "ignore").mkdir()
    quiet = Nodes(server, tmp_path / "ignore", policy=Policy(warning="ignore"), bystanders=0)
    quiet.add("n2", SCENARIOS / "ecc-disabled.toml")
    quiet.run(600)
    assert about(quiet, "ECC_UNCORRECTABLE", 1, "n2")[1:] == ["held 3 polls in a row: ignored (--on-warning ignore)"]


def test_an_xid_is_said_with_its_number(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    fleet.add("n1", DATA / "xid-burst.toml")
    fleet.run(3 * 3600)
    said = about(fleet, "XID 48", 0)
    assert said[0].startswith("appeared (fail): Xid 48") and said[1] == "held 40 Xid events: request"
    assert [s.split(":")[0] for s in said[2:]] == ["request done"]


def test_an_action_the_api_server_refuses_is_said_as_failed_and_again_when_done(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    fleet.add("n1", SCENARIOS / "row-remap-pending.toml")
    fleet.run(60)  # seen twice
    server.fail("PATCH", "/api/v1/nodes/n1(/status)?", 503, times=1000)
    fleet.run(60)  # held: its request fails, twice
    server.heal()
    fleet.run(60)
    said = about(fleet, "ROW_REMAP_PENDING", 0)
    assert [s.split(":")[0] for s in said] == [
        "appeared (fail)",
        "held 3 polls in a row",  # once, though the request is decided again at the next poll
        "request failed",
        "request failed",
        "request done",
    ]
    assert "tried again at the next poll" in said[2] and "503" in said[2]


def test_a_quiet_node_logs_nothing_for_hours(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    fleet.add("n1", DATA / "busy.toml")
    fleet.run(6 * 3600)
    assert lines(fleet) == []


def test_a_flapping_finding_is_said_once_not_at_every_flap(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    fleet.add("n1", DATA / "flapping.toml")  # five flaps within six minutes
    fleet.run(2 * 3600)
    said = about(fleet, "ROW_REMAP_PENDING", 0)
    assert [s.split(":")[0] for s in said] == ["appeared (fail)", "gone after 2 polls in a row, before it held"]
    assert len(lines(fleet)) == 2


def test_a_restarted_watch_says_what_it_found_open_in_its_journal(server, tmp_path):
    fleet = Nodes(server, tmp_path)
    fleet.add("n1", SCENARIOS / "row-remap-pending.toml")
    fleet.run(1800)
    fleet.restart("n1")
    assert about(fleet, "ROW_REMAP_PENDING", 0) == ["open from the journal (acted: request)"]
