"""`gpu-burnin watch` (harness/watch/): simulated NVML through timelines, the real Kubernetes client,
the fake API server, and virtual time. Each rule's scenario leads to its configured action, once: a
record, or a request that the node be taken out (the remediator's to serve: tests/test_remediator.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time

import pytest

from harness import results
from harness.errors import ConfigError
from harness.kube import node as nodes
from harness.nvml import binding
from harness.nvml.sim import Simulated
from harness.records import Code, Finding, Remediation, Severity
from harness.verdict import Status, Verdict
from harness.watch import flap
from harness.watch.config import Policy, WatchConfig
from harness.watch.journal import Journal
from tests.kube_fake import FakeApiServer
from tests.watch_fleet import DATA, EPOCH, SCENARIOS, Nodes, events, writes

NODE_PATH = "/api/v1/nodes/n1"
STATUS_PATH = f"{NODE_PATH}/status"
EVENTS_PATH = "/api/v1/namespaces/gpu-burnin/events"
NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


@pytest.fixture
def fleet(server, tmp_path):
    return Nodes(server, tmp_path)


def gpu(index: int) -> str:
    return f"GPU-5141dc00-0000-4000-8000-{index:012d}"


def watch_condition(server, name="n1") -> dict:
    return nodes.condition(server.node(name), nodes.WATCH_CONDITION) or {}


def journal(fleet: Nodes, name="n1") -> list[dict]:
    path = fleet.tmp / name / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def done_actions(fleet: Nodes, name="n1") -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """(op, ((code, gpu), ...)) of every action done, in order."""
    found = []
    for entry in journal(fleet, name):
        if entry["phase"] == "done" and entry["op"] != "start":
            found.append((entry["op"], tuple((f["code"], f["gpu"]) for f in entry["data"]["findings"])))
    return found


def assert_heartbeats_only(server, name="n1"):
    """The condition is written only when it changes: never the same (status, reason, message) twice in a row."""
    last = None
    for r in server.requests:
        if r.method != "PATCH" or r.path != f"/api/v1/nodes/{name}/status" or r.status != 200:
            continue
        (cond,) = r.body["status"]["conditions"]
        content = (cond["status"], cond["reason"], cond["message"])
        assert content != last, content
        last = content


RULES = [
    # (scenario, code, GPU, action, severity, seconds to watch)
    (SCENARIOS / "row-remap-pending.toml", "ROW_REMAP_PENDING", 0, "request", "fail", 1800),
    (SCENARIOS / "ecc-uncorrectable.toml", "ECC_UNCORRECTABLE", 0, "request", "critical", 1800),
    (SCENARIOS / "sram-threshold.toml", "ECC_UNCORRECTABLE", 1, "request", "critical", 1800),
    (SCENARIOS / "retirement-pending.toml", "RETIREMENT_PENDING", 0, "request", "fail", 1800),
    (SCENARIOS / "retired-pages.toml", "RETIRED_PAGES", 0, "request", "fail", 1800),
    (SCENARIOS / "nvlink-down.toml", "NVLINK_DOWN", 1, "request", "fail", 1800),
    (SCENARIOS / "pcie-downgraded.toml", "PCIE_DOWNGRADED", 0, "request", "fail", 1800),
    (SCENARIOS / "hw-slowdown.toml", "THROTTLED", 1, "request", "fail", 1800),
    (SCENARIOS / "row-remap-failure.toml", "ROW_REMAP_FAILURE", 1, "request", "critical", 1800),
    (SCENARIOS / "xid-79.toml", "XID", 0, "request", "critical", 1800),
    (SCENARIOS / "ecc-disabled.toml", "ECC_UNCORRECTABLE", 1, "record", "", 1800),
    (DATA / "ecc-corrected-rising.toml", "ECC_CORRECTED", 1, "request", "fail", 2400),
    (DATA / "gpu-lost.toml", "GPU_MISSING", 1, "request", "critical", 1800),
    (DATA / "nvlink-errors.toml", "NVLINK_ERRORS", 0, "request", "fail", 1800),
    (DATA / "over-temperature.toml", "OVER_TEMPERATURE", 1, "request", "fail", 1800),
    (DATA / "throttled-under-load.toml", "THROTTLED", 0, "request", "fail", 1800),
    (DATA / "pcie-gen-under-load.toml", "PCIE_DOWNGRADED", 1, "request", "fail", 1800),
    (DATA / "xid-app.toml", "XID", 1, "record", "", 1800),
    (DATA / "xid-burst.toml", "XID", 0, "request", "critical", 3 * 3600),  # Xid 48: reset the GPU
]


@pytest.mark.parametrize(
    ("scenario", "code", "index", "action", "severity", "seconds"), RULES, ids=lambda v: getattr(v, "stem", None)
)
def test_each_rule_leads_to_exactly_its_action_once(server, fleet, scenario, code, index, action, severity, seconds):
    fleet.add("n1", scenario)
    fleet.run(seconds)
    found = ((code, gpu(index)),)
    node = server.node("n1")
    cond = watch_condition(server)
    labels = node["metadata"]["labels"]
    assert "unschedulable" not in node["spec"] and "taints" not in node["spec"]  # the watch never takes a node out
    if action == "request":
        assert done_actions(fleet) == [("request", found)]
        assert (labels["gpu-burnin/health"], labels["gpu-burnin/severity"]) == ("failing", severity)
        requested = json.loads(node["metadata"]["annotations"][nodes.REQUESTED])
        assert requested["by"] == "gpu-burnin watch" and requested["codes"] == [code]
        assert (cond["status"], cond["reason"]) == ("False", code)
        assert events(server) == [("n1", "GPUBurnInFailing")]
        assert [w for w in writes(server) if w[1] == NODE_PATH] == [("PATCH", NODE_PATH, 200)]
    else:
        assert done_actions(fleet) == [("record", found)]
        assert "gpu-burnin/health" not in labels
        assert (cond["status"], cond["reason"]) == ("True", "Warnings") and gpu(index) in cond["message"]
        assert events(server) == [("n1", "GPUBurnInWatch")]
        assert [w for w in writes(server) if w[1] == NODE_PATH] == []
    # Nothing but the node patch, the condition and the one event: no write was refused or repeated, and no
    # read of anything but its own node.
    assert {(m, p) for m, p, _ in writes(server)} <= {
        ("PATCH", NODE_PATH),
        ("PATCH", STATUS_PATH),
        ("POST", EVENTS_PATH),
    }
    assert all(status < 300 for _, _, status in writes(server))
    assert {r.path for r in server.requests if r.method == "GET"} == {NODE_PATH}
    assert_heartbeats_only(server)


def test_an_application_xid_repeated_on_one_gpu_is_the_gpus(server, fleet):
    """Xid 13 once is the application's (a record); in a second, separate burst on the same GPU within a day it
    is the GPU's (NVSentinel's rule, NVIDIA's WORKFLOW_XID_13): news, acted on anew, though the first is open."""
    fleet.add("n1", DATA / "xid-app-repeats.toml")
    fleet.run(3600)
    found = (("XID", gpu(1)),)
    assert done_actions(fleet) == [("record", found), ("request", found)]
    node = server.node("n1")
    assert node["metadata"]["labels"]["gpu-burnin/health"] == "failing"  # a request: the watch cordons nothing
    assert not node["spec"].get("unschedulable")
    assert "separate bursts of it on this GPU" in watch_condition(server)["message"]


def test_a_quiet_node_makes_no_api_call_in_six_hours(server, fleet):
    fleet.add("n1", DATA / "busy.toml")  # with a one-poll power-brake blip under load, which is normal
    started = len(server.requests)
    # At start: its node read, and the condition written, the node showing none yet.
    assert [(r.method, r.path) for r in server.requests] == [("GET", NODE_PATH), ("PATCH", STATUS_PATH)]
    fleet.run(6 * 3600)
    assert server.requests[started:] == []  # no heartbeat, no read, nothing
    assert events(server) == []
    assert (watch_condition(server)["status"], watch_condition(server)["reason"]) == ("True", "NoFindings")
    # Its liveness is the last-poll file the readiness probe reads, written at every poll.
    last_poll = float((fleet.tmp / "n1" / "last-poll").read_text())
    assert last_poll == fleet.clock.wall().timestamp() - 30
    # A restart finds the node showing what it would write: one read, no write.
    fleet.restart("n1")
    assert [(r.method, r.path) for r in server.requests[started:]] == [("GET", NODE_PATH)]


def test_a_flapping_counter_never_holds_long_enough_to_act(server, fleet):
    fleet.add("n1", DATA / "flapping.toml")
    fleet.run(2 * 3600)
    assert done_actions(fleet) == []
    assert events(server) == [] and {p for _, p, _ in writes(server)} == {STATUS_PATH}


def test_a_cleared_finding_sets_the_condition_back_and_leaves_the_request(server, fleet):
    fleet.add("n1", DATA / "reset-clears.toml")
    fleet.run(2 * 3600)
    found = (("ROW_REMAP_PENDING", gpu(0)),)
    assert done_actions(fleet) == [("request", found), ("clear", found)]
    assert (watch_condition(server)["status"], watch_condition(server)["reason"]) == ("True", "NoFindings")
    node = server.node("n1")
    assert node["metadata"]["labels"]["gpu-burnin/health"] == "failing"  # a person's to release: retest
    assert [e["type"] for e in server.events] == ["Warning", "Normal"]
    assert events(server) == [("n1", "GPUBurnInFailing"), ("n1", "GPUBurnInWatchCleared")]


def test_a_restarted_watch_repeats_nothing_from_its_journal(server, fleet):
    fleet.add("n1", SCENARIOS / "row-remap-pending.toml")
    fleet.run(1800)
    before = writes(server)
    fleet.restart("n1")  # the node shows the condition: the restart writes nothing
    assert writes(server) == before
    fleet.run(1800)
    assert writes(server) == before  # nor does the open finding, once acted on
    assert events(server) == [("n1", "GPUBurnInFailing")]
    # ...and forgets nothing: the finding is still open on the node and in the restarted watch.
    assert [t.key for t in fleet.watches["n1"].tracker.open()] == [f"ROW_REMAP_PENDING:{gpu(0)}:reset-gpu"]
    assert watch_condition(server)["reason"] == "ROW_REMAP_PENDING"


def test_a_watch_restarted_after_a_gpu_was_lost_still_misses_it(server, fleet):
    fleet.add("n1", DATA / "gpu-lost.toml")
    fleet.run(1800)
    fleet.restart("n1")  # NVML lists one GPU now: the journal remembers two
    assert [d.uuid for d in fleet.watches["n1"].judge.devices] == [gpu(0), gpu(1)]
    fleet.run(1800)
    assert events(server) == [("n1", "GPUBurnInFailing")]
    assert watch_condition(server)["reason"] == "GPU_MISSING"


def test_a_restart_in_the_middle_of_a_request_finishes_it_once(server, fleet):
    fleet.add("n1", SCENARIOS / "row-remap-pending.toml")
    fleet.run(60)  # two polls: the finding has not held yet
    # The condition and the request land, then the API server fails every Event: the watch dies mid-action.
    server.after("PATCH", NODE_PATH, lambda s: s.fail("POST", EVENTS_PATH, 503, times=1000))
    fleet.run(30)
    assert server.node("n1")["metadata"]["labels"]["gpu-burnin/health"] == "failing" and events(server) == []
    open_ops = [e["op"] for e in journal(fleet) if e["phase"] == "begin"][-1:]
    assert open_ops == ["request"]
    server.heal()  # the API server recovers; a new watch process starts
    fleet.restart("n1")
    fleet.run(600)
    assert [w for w in writes(server) if w[1] == NODE_PATH] == [("PATCH", NODE_PATH, 200)]
    assert events(server) == [("n1", "GPUBurnInFailing")]
    assert watch_condition(server)["reason"] == "ROW_REMAP_PENDING"
    assert [e["op"] for e in journal(fleet) if e["phase"] == "done"][-1] == "request"


def test_an_event_that_landed_but_was_not_answered_is_not_posted_twice(server, fleet):
    """The API server stored the Event, but its answer was lost (a 500): the retry is refused as a duplicate,
    because an Event's name follows the journal entry it announces."""
    fleet.add("n1", SCENARIOS / "row-remap-pending.toml")

    def lose_the_answer(s):
        raise RuntimeError("the answer is lost on the way back")

    server.after("POST", EVENTS_PATH, lose_the_answer)
    fleet.run(120)
    posts = [w for w in writes(server) if w[1] == EVENTS_PATH]
    assert [status for _, _, status in posts] == [500, 409]
    assert events(server) == [("n1", "GPUBurnInFailing")]
    assert [e["op"] for e in journal(fleet) if e["phase"] == "done"] == ["start", "request"]


def nvml_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "gpu-burnin-nvml" and t.is_alive())


def test_a_wedged_driver_reads_unknown_keeps_the_watch_running_and_recovers(server, fleet, monkeypatch):
    """An Xid 79 makes NVML hang: the poll is bounded by --nvml-timeout, the condition says Unknown, no second
    call is made while the first hangs (one thread), and the watch carries on when NVML answers again."""
    watch = fleet.add("n1", SCENARIOS / "healthy.toml")
    watch.config = WatchConfig(**{**watch.config.__dict__, "nvml_timeout_s": 0.2})
    hang = threading.Event()
    real = watch.nv.nvmlDeviceGetCount
    threads = nvml_threads()
    monkeypatch.setattr(watch.nv, "nvmlDeviceGetCount", lambda: hang.wait(30) and real())
    began = time.monotonic()
    fleet.run(600)  # 20 polls
    assert time.monotonic() - began < 5  # bounded: one timeout, then no call while the first hangs
    assert nvml_threads() == threads + 1
    cond = watch_condition(server)
    assert (cond["status"], cond["reason"]) == ("Unknown", "NvmlUnavailable") and "wedged" in cond["message"]
    assert not server.node("n1")["spec"].get("unschedulable")  # unknown is not unhealthy
    status_writes = [w for w in writes(server) if w[1] == STATUS_PATH]
    assert len(status_writes) == 2  # the start's, and Unknown once
    hang.set()  # the driver answers again
    fleet.run(1200)  # within the back-off's bound
    cond = watch_condition(server)
    assert (cond["status"], cond["reason"]) == ("True", "NoFindings")
    assert nvml_threads() == threads
    assert "NVML answers again: watching 2 GPUs" in fleet.logs["n1"].getvalue()


class LateNvml:
    """The simulated NVML, as on a node whose driver is not mounted yet: nvmlInit fails until `ready`."""

    def __init__(self, nv):
        self.nv = nv
        self.ready = False
        self.inits = 0

    def nvmlInit(self):  # noqa: N802 - NVML's name
        self.inits += 1
        if not self.ready:
            raise self.nv.NVMLError(9)  # NVML_ERROR_DRIVER_NOT_LOADED
        self.nv.nvmlInit()

    def __getattr__(self, name):
        return getattr(self.nv, name)


def test_nvml_missing_at_start_reads_unknown_retries_with_back_off_and_recovers(server, fleet):
    watch = fleet.add("n1", SCENARIOS / "healthy.toml", start=False)
    late = watch.nv = LateNvml(watch.nv)
    watch.start()  # no exit: the watch runs on
    cond = watch_condition(server)
    assert (cond["status"], cond["reason"]) == ("Unknown", "NvmlUnavailable")
    assert "NVML could not start" in cond["message"]
    fleet.run(6 * 3600)
    # Tried again after 30 s, 60, 120, ... and then every 600 s at most: not every poll, and not never.
    assert 30 < late.inits < 60
    assert [w for w in writes(server) if w[1] == STATUS_PATH] == [("PATCH", STATUS_PATH, 200)]  # Unknown, once
    late.ready = True
    fleet.run(600)
    cond = watch_condition(server)
    assert (cond["status"], cond["reason"]) == ("True", "NoFindings") and "watching 2 GPUs" in cond["message"]
    assert [e["op"] for e in journal(fleet) if e["phase"] == "done"] == ["start"]  # the GPUs, learned late


def test_nvml_that_fails_to_answer_reads_unknown_then_recovers(server, fleet, monkeypatch):
    watch = fleet.add("n1", SCENARIOS / "healthy.toml")
    fleet.run(300)
    real = watch.nv.nvmlDeviceGetCount

    def broken():
        raise watch.nv.NVMLError(999)

    monkeypatch.setattr(watch.nv, "nvmlDeviceGetCount", broken)
    fleet.run(300)
    cond = watch_condition(server)
    assert (cond["status"], cond["reason"]) == ("Unknown", "NvmlUnavailable")
    assert not server.node("n1")["spec"].get("unschedulable")  # unknown is not unhealthy
    monkeypatch.setattr(watch.nv, "nvmlDeviceGetCount", real)
    fleet.run(300)
    assert watch_condition(server)["reason"] == "NoFindings"
    assert events(server) == [("n1", "GPUBurnInWatch"), ("n1", "GPUBurnInWatchCleared")]


def test_the_metrics_textfile_has_the_dcgm_equivalents(server, tmp_path):
    prom = tmp_path / "metrics" / "watch.prom"
    fleet = Nodes(server, tmp_path, metrics_textfile=prom)
    fleet.add("n1", DATA / "xid-burst.toml")
    fleet.run(3 * 3600)
    text = prom.read_text()
    assert f'gpu_burnin_watch_xid_last{{UUID="{gpu(0)}",gpu="0",node="n1"}} 48.0' in text
    assert f'gpu_burnin_watch_xid_events_total{{UUID="{gpu(0)}",gpu="0",node="n1",xid="48"}} 40.0' in text
    assert "# TYPE gpu_burnin_watch_xid_events_total counter" in text
    labels = f'UUID="{gpu(1)}",counter="volatile",gpu="1",node="n1",type="uncorrected"'
    assert f"gpu_burnin_watch_ecc_errors{{{labels}}} 0.0" in text
    assert f'gpu_burnin_watch_row_remap_pending{{UUID="{gpu(0)}",gpu="0",node="n1"}} 0.0' in text
    assert f'gpu_burnin_watch_open_findings{{UUID="{gpu(0)}",code="XID",node="n1",severity="fail"}} 1.0' in text
    assert 'gpu_burnin_watch_actions_total{action="request",node="n1"} 1.0' in text
    assert "gpu_burnin_watch_up" not in text and "_created" not in text
    assert 'gpu_burnin_watch_last_poll_timestamp_seconds{node="n1"}' in text


# -- the journal -----------------------------------------------------------------------------------


def test_a_journal_from_another_boot_is_moved_aside(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, "boot-1").open().note("start", 0.0, NOW)
    assert Journal(path, "boot-2").open().entries == []
    assert (tmp_path / "journal.jsonl.prev").is_file() and not path.exists()


def test_an_action_retried_under_a_new_id_is_not_open_after_it_is_done(tmp_path):
    j = Journal(tmp_path / "j.jsonl", "b").open()
    j.begin("record", ("K",), 0.0, NOW)  # its API call failed
    retried = j.begin("record", ("K",), 30.0, NOW)
    j.done(retried, 30.0, NOW)
    assert Journal(tmp_path / "j.jsonl", "b").open().open_actions() == []


# -- configuration and the command line --------------------------------------------------------------


def test_a_finding_is_known_by_code_gpu_and_what_tells_one_code_apart():
    volatile = Finding(
        code=Code.ECC_UNCORRECTABLE,
        severity=Severity.FAIL,
        message="2 since load",
        gpu="G",
        remediation=Remediation.RESET_GPU,
    )
    lifetime = Finding(
        code=Code.ECC_UNCORRECTABLE,
        severity=Severity.FAIL,
        message="6 SRAM",
        gpu="G",
        remediation=Remediation.REPLACE_GPU,
    )
    more = Finding(
        code=Code.ECC_UNCORRECTABLE,
        severity=Severity.FAIL,
        message="3 since load",
        gpu="G",
        remediation=Remediation.RESET_GPU,
    )
    assert flap.key(volatile) != flap.key(lifetime) and flap.key(volatile) == flap.key(more)  # counts move
    xid48 = Finding(code=Code.XID, severity=Severity.FAIL, message="x", gpu="G", details={"xid": 48, "count": 3})
    xid79 = Finding(code=Code.XID, severity=Severity.FAIL, message="x", gpu="G", details={"xid": 79, "count": 1})
    assert flap.key(xid48) != flap.key(xid79)


@pytest.mark.parametrize(
    ("given", "flag"),
    [
        ({"hold": 0}, "--hold"),
        ({"interval_s": 60.0, "window_s": 300.0}, "--window"),
        ({"node": ""}, "--node"),
    ],
)
def test_bad_options_name_the_flag(tmp_path, given, flag):
    with pytest.raises(ConfigError) as err:
        WatchConfig(**{"node": "n1", "journal": tmp_path / "j", **given})
    assert flag in str(err.value)


def test_a_bad_policy_names_its_flag():
    with pytest.raises(ConfigError, match="--on-fail"):
        Policy(fail="evict")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[gpus]]\n[[changes]]\nat = "soon"\ngpu = 0\nlost = true\n', "changes[0].at"),
        ('[[gpus]]\n[[changes]]\nuntil = "1h"\nafter = "matmul"\ngpu = 0\n', "changes[0].until"),
        ("[[gpus]]\n[[xids]]\nxid = 79\ncount = 0\n", "xids[0].count"),
    ],
)
def test_a_bad_timeline_names_the_file_and_field(tmp_path, text, field):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Simulated.from_file(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_the_timeline_applies_changes_between_at_and_until_and_counts_xid_bursts(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[gpus]]\n[[changes]]\nat = "1h30m"\nuntil = 5430\ngpu = 0\nset = { "remap.pending" = true }\n'
        '[[xids]]\ngpu = 0\nxid = 48\nat = "90m"\ncount = 3\n'
    )
    nv = binding.load(f"sim:{path}")
    nv.nvmlInit()
    events = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(0, nv.nvmlEventTypeXidCriticalError, events)

    def pending_at(seconds):
        nv.now_s = seconds
        return nv.nvmlDeviceGetRemappedRows(0)[2]

    def xids_at(seconds):
        nv.now_s = seconds
        found = 0
        while True:
            try:
                nv.nvmlEventSetWait_v2(events, 0)
                found += 1
            except nv.NVMLError:
                return found

    assert [pending_at(s) for s in (5399, 5400, 5429, 5430)] == [0, 1, 1, 0]
    assert (xids_at(5399), xids_at(5400), xids_at(9000)) == (0, 3, 0)
    nv.now_s = None
    assert nv.nvmlDeviceGetRemappedRows(0)[2] == 0  # outside a watch (a suite run), the timeline never applies


# -- the API calls the watch adds (harness/kube/api.py), through the real client -------------------------


def test_pods_are_listed_by_node_and_evicted_through_the_eviction_api(server, tmp_path):
    from harness.kube.api import Blocked, KubeError, Patience, connect

    api = connect(server.kubeconfig(tmp_path), patience=Patience(total_s=0.3, first_backoff_s=0.01))
    server.add_pod("ml", "a", node="n1", gpus=1)
    server.add_pod("ml", "b", node="n2", gpus=1)
    server.add_pod("ml", "c", node="n1")
    assert sorted(p["metadata"]["name"] for p in api.list_pods_on_node("n1")) == ["a", "c"]
    listed = [r for r in server.requests if r.path == "/api/v1/pods"]
    assert listed[-1].query["fieldSelector"] == "spec.nodeName=n1"  # the API server filters, not us

    server.protect("ml", "a")
    with pytest.raises(Blocked) as blocked:
        api.evict_pod("ml", "a")
    assert blocked.value.status == 429 and "disruption budget" in str(blocked.value)
    assert len([r for r in server.requests if r.path.endswith("/a/eviction")]) == 1  # 429: not retried here
    server.unprotect("ml", "a")
    assert api.evict_pod("ml", "a") is True
    (body,) = [r.body for r in server.requests if r.path.endswith("/a/eviction") and r.status == 201]
    assert body["metadata"] == {"name": "a", "namespace": "ml"}
    assert "deletionTimestamp" in next(p for p in server.pods if p["metadata"]["name"] == "a")["metadata"]
    server.finish_deletions()
    assert api.evict_pod("ml", "a") is False  # gone already: nothing to do
    server.forbid("create", "pods", subresource="eviction")
    with pytest.raises(KubeError) as forbidden:
        api.evict_pod("ml", "c")
    assert forbidden.value.status == 403 and 'cannot create resource "pods/eviction"' in str(forbidden.value)


def test_nvml_failing_after_a_gpu_is_lost_clears_nothing(server, fleet, monkeypatch):
    watch = fleet.add("n1", DATA / "gpu-lost.toml")
    fleet.run(1800)

    def broken():  # after an Xid 79, NVML itself often stops answering
        raise watch.nv.NVMLError(999)

    monkeypatch.setattr(watch.nv, "nvmlDeviceGetCount", broken)
    fleet.run(3600)
    assert [t.key for t in watch.tracker.open()][0].startswith("GPU_MISSING:")
    assert watch_condition(server)["reason"] == "GPU_MISSING"  # unknown is not healthy: nothing cleared
    assert ("n1", "GPUBurnInWatchCleared") not in events(server)


def test_a_node_with_fewer_gpus_than_its_label_says_is_failed_gpu_missing(server, fleet):
    """The device plugin advertises what it sees, and the first snapshot is all NVML lists: only the node's
    GPU feature discovery count can tell that a GPU was dead before anything started."""
    fleet.add("n1", SCENARIOS / "healthy.toml", **{"nvidia.com/gpu.count": "3"})  # 2 GPUs in the scenario
    fleet.run(600)
    assert done_actions(fleet) == [("request", (("GPU_MISSING", "node"),))]
    labels = server.node("n1")["metadata"]["labels"]
    assert (labels["gpu-burnin/health"], labels["gpu-burnin/severity"]) == ("failing", "critical")
    cond = watch_condition(server)
    assert (cond["status"], cond["reason"]) == ("False", "GPU_MISSING")
    assert "2 of 3 GPUs seen by NVML (nvidia.com/gpu.count=3)" in cond["message"]


def test_without_a_count_label_or_a_one_size_baseline_a_short_node_is_not_judged_short(server, fleet):
    fleet.add("n1", SCENARIOS / "healthy.toml")  # 2 H100s: the baselines have a 1-GPU and an 8-GPU file
    fleet.run(600)
    assert done_actions(fleet) == []
    assert watch_condition(server)["reason"] == "NoFindings"


def a_result(results_dir, node, run_id, status, when):
    """A finished result file of `node`, written at `when` (seconds since the epoch)."""
    started = dt.datetime.fromtimestamp(when, dt.UTC)
    doc = results.ResultDocument(
        run_id=run_id,
        node=node,
        started_at=started,
        device_kind="cuda",
        entrypoint="periodic",
        state=results.RunState.FINISHED,
        ended_at=started,
        verdict=Verdict(status=status, reasons=() if status is Status.PASS else ("why",)),
    )
    path = results.write(results.path_for(results_dir, node, run_id), doc)
    os.utime(path, (when, when))
    return path


def test_the_watch_keeps_the_freshness_label_while_the_newest_result_is_young(server, tmp_path):
    """gpu-burnin/fresh=true on its own node while the node's newest complete result is younger than
    --retest-after, absent otherwise; written only when that changes (the periodic pods require it absent).
    An incomplete run (a periodic pod preempted, or cut at its Job's deadline) tested nothing: never fresh."""
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    fleet = Nodes(server, tmp_path, results_dir=results_dir, retest_after_s=7 * 86400.0)
    day = 86400.0
    a_result(results_dir, "n1", "20261127T000000Z-a1b2c3", Status.PASS, EPOCH.timestamp() - day)
    a_result(results_dir, "n10", "20261128T000000Z-ffffff", Status.PASS, EPOCH.timestamp())  # another node's
    (results_dir / "n1_20261128T000000Z-0badf0.json").write_text("{}")  # not a result: never fresh
    fleet.add("n1", SCENARIOS / "healthy.toml")

    def label_writes():
        return [r.body["metadata"]["labels"] for r in server.requests if r.method == "PATCH" and r.path == NODE_PATH]

    assert server.node("n1")["metadata"]["labels"]["gpu-burnin/fresh"] == "true"
    fleet.run(5 * day, every=3600)
    assert label_writes() == [{"gpu-burnin/fresh": "true"}]  # once, not at every poll
    preempted = a_result(
        results_dir, "n1", "20261202T000000Z-c0ffee", Status.INCOMPLETE, fleet.clock.wall().timestamp()
    )
    fleet.run(2 * day, every=3600)  # the pass is 7 days old now, and the newer run was cut short
    assert preempted.exists()
    assert "gpu-burnin/fresh" not in server.node("n1")["metadata"]["labels"]
    assert label_writes() == [{"gpu-burnin/fresh": "true"}, {"gpu-burnin/fresh": None}]
    a_result(results_dir, "n1", "20261205T000000Z-d4e5f6", Status.FAIL, fleet.clock.wall().timestamp())
    fleet.run(3600, every=3600)  # a periodic run that finished (a failure tested the GPUs too): fresh again
    assert server.node("n1")["metadata"]["labels"]["gpu-burnin/fresh"] == "true"
    assert len(label_writes()) == 3
    # Only this tool's label, only on its own node.
    assert {r.path for r in server.requests if r.method == "PATCH"} <= {NODE_PATH, STATUS_PATH}
