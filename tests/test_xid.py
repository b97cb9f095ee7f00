"""Xid errors: the table, the kernel log parser, the run's window and the findings.

The logs under tests/data/kernel-logs are real captures (tests/data/SOURCES.md): what
they hold is asserted from what SOURCES.md says of them, not from this parser's output.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.nvml import kernel_log, xid_findings, xid_rules, xid_table
from harness.records import Code, Remediation, Severity
from tests.helpers import REPO

LOGS = REPO / "tests" / "data" / "kernel-logs"
ISO_LOG = LOGS / "gpud_dmesg_xid48-dbe_xid63-row-remap_xid94.log"
DECODE_LOG = LOGS / "gpud_dmesg_xid13-sm-exception_xid43.log"
XID119_LOG = LOGS / "gpud_dmesg_xid119_gsp-rpc-timeout.log"

COMMON_XIDS = [8, 13, 31, 32, 38, 43, 44, 45, 48, 56, 57, 58, 61, 62, 63, 64, 68, 69, 73, 74, 79, 80, 81, 92, 94, 95]
COMMON_XIDS += [109, 110, 119, 120, 121, 122, 123, 136, 140, 143, *range(144, 151), 154, 155]
"""The Xids NVIDIA's catalog calls common (the brief's list): the table must know every one."""


def parse(path: Path, **kwargs: Any) -> list[kernel_log.XidEvent]:
    kwargs.setdefault("boot_time", None)
    kwargs.setdefault("local_tz", UTC)
    return kernel_log.parse_kernel_log(path.read_text(), **kwargs)


def event(number: int, pci: str = "00000000:19:00.0", when: datetime | None = None) -> kernel_log.XidEvent:
    return kernel_log.XidEvent(
        pci_bus_id=pci, xid=number, when=when, pid=None, process="", message="test", line=f"NVRM: Xid ... {number}"
    )


@pytest.fixture(scope="module")
def table() -> xid_table.XidTable:
    return xid_table.load_table()


# --- the table ------------------------------------------------------------------------------------------------


def test_the_packaged_table_loads_and_names_its_source(table: xid_table.XidTable) -> None:
    assert len(table) >= 150
    assert table.sources == (table.get(79).source,)  # type: ignore[union-attr]
    assert table.sources[0].endswith("xid.toml")
    assert all(info.bucket in xid_rules.BUCKETS for info in table.entries.values())
    assert all(info.name and info.description for info in table.entries.values())


def test_the_packaged_table_cites_nvidias_catalog() -> None:
    header = (REPO / "harness" / "nvml" / "xid.toml").read_text().split("schema_version")[0]
    assert "docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html" in header


@pytest.mark.parametrize("number", COMMON_XIDS)
def test_the_table_covers_every_common_xid(table: xid_table.XidTable, number: int) -> None:
    assert number in table


def test_the_table_covers_every_xid_in_the_kernel_logs(table: xid_table.XidTable) -> None:
    logged = {found.xid for path in sorted(LOGS.glob("*.log")) for found in parse(path)}
    assert logged  # the logs hold Xids: an empty parse would pass this test vacuously
    assert logged <= set(table.entries), f"not in the table: {sorted(logged - set(table.entries))}"


def test_uncertain_entries_say_so(table: xid_table.XidTable) -> None:
    """The entries whose bucket is a guess, or whose judgement departs from NVIDIA's, explain themselves."""
    for number in (56, 57, 58, 61, 73, 81, 122, 123, 166, 167, 169, 170):
        assert "unsure" in table.get(number).note.lower(), number  # type: ignore[union-attr]
    assert table.get(43).judge_as == "RESTART_APP" and table.get(43).bucket == "IGNORE"  # type: ignore[union-attr]


# --- the user's table -----------------------------------------------------------------------------------------

USER_TABLE = """
schema_version = 1

[xid.63]
name = "INFOROM_DRAM_RETIREMENT_EVENT"
description = "GPU memory remapping event"
bucket = "IGNORE"
judge_as = "RESET_GPU"
note = "our site resets a GPU with a pending remap before it goes back to service"

[xid.200]
name = "FUTURE_ERROR"
description = "An Xid from a newer driver"
bucket = "RESET_GPU"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site-xids.toml"
    path.write_text(text)
    return path


def test_a_user_table_overrides_and_extends_the_packaged_one(tmp_path: Path, table: xid_table.XidTable) -> None:
    path = write(tmp_path, USER_TABLE)
    merged = xid_table.load_table(path)
    assert merged.sources == (table.sources[0], str(path))
    assert len(merged) == len(table) + 1
    remap = merged.get(63)
    assert remap is not None and remap.source == str(path)
    assert remap.judgement.severity is Severity.FAIL and remap.judgement.remediation is Remediation.RESET_GPU
    assert merged.get(200) is not None and merged.get(200).judgement.severity is Severity.FAIL  # type: ignore[union-attr]
    assert merged.get(79) == table.get(79)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[xid.79]\nname = "X"\ndescription = "d"\nbucket = "RESET_GPU"', "schema_version"),
        ('schema_version = 2\n[xid.79]\nname = "X"\ndescription = "d"\nbucket = "RESET_GPU"', "schema_version"),
        ('schema_version = 1\n[xids.79]\nname = "X"', "xids"),
        ("schema_version = 1", "xid"),
        ('schema_version = 1\n[xid.79]\nname = "X"\ndescription = "d"\nbukcet = "RESET_GPU"', "xid.79.bukcet"),
        ('schema_version = 1\n[xid.79]\nname = 79\ndescription = "d"\nbucket = "RESET_GPU"', "xid.79.name"),
        ('schema_version = 1\n[xid.79]\nname = "X"\nbucket = "RESET_GPU"', "xid.79.description"),
        ('schema_version = 1\n[xid.79]\nname = "X"\ndescription = "d"\nbucket = "REBOOT"', "xid.79.bucket"),
        (
            'schema_version = 1\n[xid.79]\nname = "X"\ndescription = "d"\nbucket = "IGNORE"\njudge_as = "X"',
            "xid.79.judge_as",
        ),
        ('schema_version = 1\n[xid.79]\nname = "X"\ndescription = "d"\nbucket = "IGNORE"\nnote = 3', "xid.79.note"),
        ('schema_version = 1\n[xid.seventy]\nname = "X"\ndescription = "d"\nbucket = "IGNORE"', "xid.seventy"),
        ('schema_version = 1\n[xid.079]\nname = "X"\ndescription = "d"\nbucket = "IGNORE"', "xid.079"),
        ('schema_version = 1\n[xid]\n79 = "RESET_GPU"', "xid.79"),
    ],
)
def test_a_malformed_user_table_names_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        xid_table.load_table(path)
    assert caught.value.file == str(path)
    assert caught.value.field == field
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_a_user_table_that_is_not_toml_or_not_there_is_a_config_error(tmp_path: Path) -> None:
    broken = write(tmp_path, "schema_version = = 1")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        xid_table.load_table(broken)
    assert caught.value.file == str(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        xid_table.load_table(tmp_path / "missing.toml")


# --- the kernel logs ------------------------------------------------------------------------------------------


def test_the_iso_log_holds_xid_48_63_then_94_on_19_00() -> None:
    events = parse(ISO_LOG)
    assert [found.xid for found in events] == [48, 63] + [94] * 9
    assert {found.pci_bus_id for found in events} == {"00000000:19:00.0"}
    first = events[0]
    assert first.when == datetime(2024, 11, 15, 12, 2, 3, 470068, tzinfo=UTC)
    assert first.pid is None and first.process == ""
    assert first.message.startswith("An uncorrectable double bit error (DBE)")
    assert "Row Remapper" in events[1].message
    per_channel = events[3:]
    assert {(found.pid, found.process) for found in per_channel} == {(1248209, "python3.10")}
    assert [found.message for found in per_channel] == [f"Ch 0000000{c}" for c in "89abcdef"]


def test_the_decode_log_holds_629_xid_13_and_7_xid_43_on_38_00() -> None:
    events = parse(DECODE_LOG)
    assert Counter(found.xid for found in events) == {13: 629, 43: 7}
    assert {found.pci_bus_id for found in events} == {"00000000:38:00.0"}
    assert all(found.when is not None and found.when.tzinfo is not None for found in events)
    stopped = [found for found in events if found.xid == 43]
    assert stopped[0].pid == 2815167 and stopped[0].process == "pt_main_thread"
    assert stopped[0].message == "Ch 00000008"
    assert stopped[0].when == datetime(2025, 1, 21, 2, 21, 33, 502278, tzinfo=UTC)


def test_the_gsp_log_holds_five_xid_119_on_9b_00() -> None:
    events = parse(XID119_LOG)
    assert [found.xid for found in events] == [119] * 5
    assert {found.pci_bus_id for found in events} == {"00000000:9B:00.0"}
    assert events[0].when == datetime(2025, 2, 23, 16, 24, 18, tzinfo=UTC)  # dmesg -T, read in local_tz
    assert [found.process for found in events] == ["nvidia-smi"] * 3 + ["cache_mgr_main", "gpud"]
    assert events[0].pid == 2024380 and "GSP_RM_ALLOC" in events[0].message
    assert kernel_log.gpu_uuids_in_log(XID119_LOG.read_text()) == {
        "00000000:9B:00.0": "GPU-509665ad-b600-ac93-3616-d754b23d636d"
    }


def test_dmesg_t_times_are_the_nodes_local_time() -> None:
    eastern = timezone(timedelta(hours=-5))
    events = parse(XID119_LOG, local_tz=eastern)
    assert events[0].when == datetime(2025, 2, 23, 21, 24, 18, tzinfo=UTC)


FALLEN = "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."


@pytest.mark.parametrize(
    ("line", "when"),
    [
        (f"2025-01-21T02:21:33+0000 gpu-node-7 kernel: {FALLEN}", datetime(2025, 1, 21, 2, 21, 33, tzinfo=UTC)),
        (
            f"2025-01-21T02:21:33.250000+00:00 gpu-node-7 kernel: {FALLEN}",
            datetime(2025, 1, 21, 2, 21, 33, 250000, tzinfo=UTC),
        ),
        (f"kern  :err   : 2025-01-21T02:21:33,000001+00:00 {FALLEN}", datetime(2025, 1, 21, 2, 21, 33, 1, tzinfo=UTC)),
        (f"[Tue Jan  7 02:21:33 2025] {FALLEN}", datetime(2025, 1, 7, 2, 21, 33, tzinfo=UTC)),
        (f"[   60.500000] {FALLEN}", datetime(2025, 1, 21, 0, 1, 0, 500000, tzinfo=UTC)),
        (f"Jan 21 02:21:33 gpu-node-7 kernel: {FALLEN}", None),
    ],
    ids=["journalctl-short-iso", "short-iso-precise", "dmesg-decode", "dmesg-T", "seconds-since-boot", "syslog"],
)
def test_each_log_format_is_read_with_its_time(line: str, when: datetime | None) -> None:
    boot = datetime(2025, 1, 21, 0, 0, tzinfo=UTC)
    (found,) = kernel_log.parse_kernel_log(line, boot_time=boot, local_tz=UTC)
    assert (found.xid, found.pci_bus_id, found.when) == (79, "00000000:3B:00.0", when)
    assert found.message == "GPU has fallen off the bus." and found.line == line


def test_seconds_since_boot_without_a_boot_time_have_no_time() -> None:
    (found,) = kernel_log.parse_kernel_log(f"[   60.500000] {FALLEN}", boot_time=None)
    assert found.when is None


def test_a_date_inside_the_drivers_message_is_not_the_lines_time() -> None:
    line = "[  5.000000] NVRM: Xid (PCI:0000:3b:00): 13, pid=7, name=app, logged 2020-01-01T00:00:00+00:00"
    (found,) = kernel_log.parse_kernel_log(line, boot_time=None)
    assert found.when is None and found.message == "logged 2020-01-01T00:00:00+00:00"


def test_an_old_driver_line_without_pid_or_pci_prefix_still_parses() -> None:
    (found,) = kernel_log.parse_kernel_log("NVRM: Xid (0000:03:00): 79, GPU has fallen off the bus.", boot_time=None)
    assert (found.xid, found.pci_bus_id, found.pid, found.process) == (79, "00000000:03:00.0", None, "")
    assert found.message == "GPU has fallen off the bus."


def test_lines_without_an_xid_are_ignored() -> None:
    text = "NVRM: GPU at PCI:0000:9b:00: GPU-1\nnvidia-peermem nv_get_p2p_free_callback:127 ERROR\n\n"
    assert kernel_log.parse_kernel_log(text, boot_time=None) == []


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("0000:19:00", "00000000:19:00.0"),
        ("PCI:0000:9b:00", "00000000:9B:00.0"),
        ("00000000:9B:00.0", "00000000:9B:00.0"),
        ("0001:0a:1f.3", "00000001:0A:1F.3"),
        ("3b:00.0", "00000000:3B:00.0"),
    ],
)
def test_pci_bus_ids_take_nvmls_form(text: str, normal: str) -> None:
    assert kernel_log.normalise_pci_bus_id(text) == normal


def test_a_pci_bus_id_that_is_not_one_raises() -> None:
    with pytest.raises(ValueError, match="not a PCI bus id"):
        kernel_log.normalise_pci_bus_id("GPU-0")


# --- the run's window -----------------------------------------------------------------------------------------


def test_only_the_events_inside_the_run_count() -> None:
    events = parse(ISO_LOG)
    start = datetime(2024, 11, 15, 12, 0, tzinfo=UTC)
    inside, untimed = kernel_log.in_window(events, start, start + timedelta(minutes=5))
    assert (len(inside), untimed) == (11, 0)
    days_later = start + timedelta(days=3)
    assert kernel_log.in_window(events, days_later, days_later + timedelta(hours=1)) == ([], 0)


def test_the_window_includes_its_ends_and_widens_by_the_slack() -> None:
    when = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    events = [event(79, when=when)]
    assert kernel_log.in_window(events, when, when)[0] == events
    later = when + timedelta(seconds=2)
    assert kernel_log.in_window(events, later, later + timedelta(minutes=1))[0] == []
    assert kernel_log.in_window(events, later, later + timedelta(minutes=1), slack=timedelta(seconds=5))[0] == events


def test_events_with_no_time_are_left_out_and_counted() -> None:
    text = f"[   60.500000] {FALLEN}\n[   61.000000] {FALLEN}\n2025-01-21T02:21:33+0000 host kernel: {FALLEN}"
    events = kernel_log.parse_kernel_log(text, boot_time=None)
    start = datetime(2025, 1, 21, 2, 0, tzinfo=UTC)
    inside, untimed = kernel_log.in_window(events, start, start + timedelta(hours=1))
    assert ([found.when for found in inside], untimed) == ([datetime(2025, 1, 21, 2, 21, 33, tzinfo=UTC)], 2)
    warning = xid_findings.untimed_finding(untimed, test="t")
    assert warning is not None and warning.severity is Severity.WARNING and warning.code is Code.XID
    assert xid_findings.untimed_finding(0) is None


# --- findings -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "severity", "remediation"),
    [
        (79, Severity.FAIL, Remediation.REBOOT_NODE),  # RESTART_BM
        (48, Severity.FAIL, Remediation.RESET_GPU),  # WORKFLOW_XID_48
        (119, Severity.FAIL, Remediation.RESET_GPU),  # RESET_GPU
        (58, Severity.FAIL, Remediation.REPLACE_GPU),  # CONTACT_SUPPORT
        (13, Severity.WARNING, Remediation.RESTART_APP),  # RESTART_APP: the application's fault
        (31, Severity.WARNING, Remediation.RESTART_APP),
        (43, Severity.WARNING, Remediation.RESTART_APP),  # NVIDIA's IGNORE, judged as RESTART_APP
        (94, Severity.WARNING, Remediation.RESTART_APP),
        (63, Severity.INFO, Remediation.NONE),  # IGNORE
        (92, Severity.INFO, Remediation.NONE),
    ],
)
def test_each_bucket_gives_its_severity_and_remediation(
    table: xid_table.XidTable, number: int, severity: Severity, remediation: Remediation
) -> None:
    (found,) = xid_findings.findings([event(number)], {"00000000:19:00.0": "GPU-a"}, table, test="tests/x.py::t")
    assert (found.code, found.severity, found.remediation) == (Code.XID, severity, remediation)
    assert (found.gpu, found.test) == ("GPU-a", "tests/x.py::t")


def test_the_iso_log_fails_its_gpu_with_one_finding_per_xid(table: xid_table.XidTable) -> None:
    found = xid_findings.findings(parse(ISO_LOG), {"0000:19:00": "GPU-abc"}, table)
    assert [(f.details["xid"], f.details["count"], f.severity) for f in found] == [
        (48, 1, Severity.FAIL),
        (63, 1, Severity.INFO),
        (94, 9, Severity.WARNING),
    ]
    contained = found[2]
    assert contained.message == (
        "GPU 0000:19:00 (GPU-abc): Xid 94 (Contained memory error) x9 in this run: restart the application"
    )
    assert contained.details["first"] == "2024-11-15T12:02:03.506595+00:00"
    assert contained.details["last"] == "2024-11-15T12:02:03.638794+00:00"
    assert contained.details["bucket"] == "RESTART_APP" and contained.details["in_table"] is True


def test_the_decode_log_suspects_its_gpu_and_caps_the_events_it_keeps(table: xid_table.XidTable) -> None:
    """Outside gpu-burnin's burn an Xid 13 is the application's, until it repeats: this log holds nine separate
    bursts of them on 0000:38:00 within 2.5 hours (02:21 to 04:41), each from a new pt_main_thread process, so
    the GPU is suspect (NVSentinel's rule: twice on one GPU within a day). Its Xid 43s only warn."""
    found = xid_findings.findings(parse(DECODE_LOG), {"00000000:38:00.0": "GPU-38"}, table)
    assert [(f.details["xid"], f.severity) for f in found] == [(13, Severity.FAIL), (43, Severity.WARNING)]
    assert found[0].remediation is Remediation.INSPECT_HARDWARE and found[0].details["escalated"] is True
    assert "9 separate bursts of it on this GPU within 24 h" in found[0].message
    faults = found[0]
    assert faults.details["count"] == 629
    assert len(faults.details["events"]) == xid_findings.MAX_EVENTS_IN_DETAILS
    assert faults.details["events_left_out"] == 629 - xid_findings.MAX_EVENTS_IN_DETAILS
    json.dumps([f.to_dict() for f in found])  # JSON-ready


def test_an_xid_on_no_known_gpu_is_judged_under_its_pci_id(table: xid_table.XidTable) -> None:
    (found,) = xid_findings.findings(parse(XID119_LOG), {}, table)
    assert found.gpu == "00000000:9B:00.0"
    assert found.severity is Severity.FAIL
    assert "not a GPU this run knows" in found.message and "0000:9b:00" in found.message


def test_an_xid_not_in_the_table_reboots_the_node(table: xid_table.XidTable) -> None:
    (found,) = xid_findings.findings([event(9999)], {"00000000:19:00.0": "GPU-a"}, table)
    assert (found.severity, found.remediation) == (Severity.FAIL, Remediation.REBOOT_NODE)
    assert "not in the table" in found.message and found.details["in_table"] is False


def test_the_message_names_gpu_xid_count_and_action(table: xid_table.XidTable) -> None:
    when = datetime(2025, 1, 1, tzinfo=UTC)
    (found,) = xid_findings.findings([event(79, when=when)] * 3, {"00000000:19:00.0": "GPU-uuid"}, table)
    assert (
        found.message
        == "GPU 0000:19:00 (GPU-uuid): Xid 79 (GPU has fallen off the bus) x3 in this run: reboot the node"
    )


# --- reading the log ------------------------------------------------------------------------------------------

SINCE = datetime(2025, 1, 21, 2, 0, tzinfo=UTC)


class FakeRunner:
    """Answers each command by its program name: a CompletedProcess, or an exception to raise."""

    def __init__(self, answers: dict[str, subprocess.CompletedProcess[str] | Exception]):
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        assert kwargs["timeout"] > 0 and kwargs["check"] is False
        answer = self.answers[command[0]]
        if isinstance(answer, Exception):
            raise answer
        return answer


def done(command: str, returncode: int = 0, stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([command], returncode, stdout=stdout, stderr=stderr)


def test_journalctl_is_read_first(table: xid_table.XidTable) -> None:
    log = f"2025-01-21T02:21:33+0000 gpu-node-7 kernel: {FALLEN}\n"
    runner = FakeRunner({"journalctl": done("journalctl", stdout=log)})
    text, problem = kernel_log.read_kernel_log(SINCE, runner=runner)
    assert (text, problem) == (log, "")
    assert runner.calls == [
        ["journalctl", "-k", "--since", f"@{int(SINCE.timestamp())}", "-o", "short-iso", "--no-pager"]
    ]


def test_without_journalctl_dmesg_is_read() -> None:
    runner = FakeRunner(
        {"journalctl": FileNotFoundError(2, "No such file"), "dmesg": done("dmesg", stdout=ISO_LOG.read_text())}
    )
    text, problem = kernel_log.read_kernel_log(SINCE, runner=runner)
    assert problem == "" and text == ISO_LOG.read_text()
    assert runner.calls[1] == ["dmesg", "--time-format", "iso"]


def test_no_journalctl_and_a_denied_dmesg_is_a_problem_not_an_exception() -> None:
    denied = done("dmesg", 1, stderr="dmesg: read kernel buffer failed: Operation not permitted\n")
    runner = FakeRunner({"journalctl": FileNotFoundError(2, "No such file"), "dmesg": denied})
    text, problem = kernel_log.read_kernel_log(SINCE, runner=runner)
    assert text == ""
    assert "journalctl: not installed" in problem
    assert "dmesg exited with status 1: dmesg: read kernel buffer failed: Operation not permitted" in problem
    assert "\n" not in problem


def test_a_journal_the_user_may_not_read_falls_back_to_dmesg() -> None:
    hint = "Hint: You are currently not seeing messages from other users and the system.\n"
    runner = FakeRunner(
        {"journalctl": done("journalctl", stdout="-- No entries --\n", stderr=hint), "dmesg": done("dmesg", stdout="x")}
    )
    assert kernel_log.read_kernel_log(SINCE, runner=runner) == ("x", "")


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (lambda command: subprocess.TimeoutExpired(command, 2.0), "no answer within 2 s"),
        (lambda command: PermissionError(13, "Permission denied"), "not allowed to run it (Permission denied)"),
    ],
    ids=["timeout", "not-executable"],
)
def test_a_timeout_or_a_denied_program_is_a_problem(error: Callable[[str], Exception], said: str) -> None:
    runner = FakeRunner({"journalctl": error("journalctl"), "dmesg": error("dmesg")})
    text, problem = kernel_log.read_kernel_log(SINCE, timeout_s=2.0, runner=runner)
    assert (text, problem) == ("", f"journalctl: {said}; dmesg: {said}")


def test_the_boot_time_comes_from_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nbtime 1737417600\nprocesses 5\n")
    assert kernel_log.boot_time(stat) == datetime(2025, 1, 21, tzinfo=UTC)
    assert kernel_log.boot_time(tmp_path / "missing") is None


def test_events_and_gpus_match_whatever_form_their_bus_ids_take(table: xid_table.XidTable) -> None:
    events = [event(79, pci="0000:19:00.0"), event(79, pci="00000000:19:00.0")]
    (found,) = xid_findings.findings(events, {"PCI:0000:19:00": "GPU-a"}, table)
    assert (found.gpu, found.details["count"], found.details["pci_bus_id"]) == ("GPU-a", 2, "00000000:19:00.0")


def test_a_stamp_that_is_not_a_real_time_leaves_the_line_undated() -> None:
    (found,) = kernel_log.parse_kernel_log(f"[Sun Feb 30 16:24:18 2025] {FALLEN}", boot_time=None)
    assert found.when is None and found.xid == 79


# --- judged in context, as NVIDIA's catalog says ------------------------------------------------------------------
#
# Lines whose source is a file in tests/data/kernel-logs are real captures. The others are written from the
# text of NVIDIA's catalog (https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html), of the
# driver's format strings (open-gpu-kernel-modules, kernel_rc.c: "NVRM: Xid (PCI:%04x:%02x:%02x): %d, pid=%s,
# name=%s, %s%s", the last %s " caused by previous Xid %d"), or of the example lines other projects test their
# parsers with (leptonai/gpud components/accelerator/nvidia/xid/kmsg_test.go and nvlink_logs_test.go, NVIDIA's
# NVSentinel syslog-health-monitor parser tests and design notes); each says which.

GPU19 = {"0000:19:00": "GPU-19"}
T0 = datetime(2025, 3, 2, 10, 0, tzinfo=UTC)


def line(text: str, at: datetime = T0) -> kernel_log.XidEvent:
    """An Xid line as `dmesg --time-format iso` prints it, parsed."""
    stamp = at.isoformat().replace("+00:00", ",000000+00:00")
    (found,) = kernel_log.parse_kernel_log(f"{stamp} {text}", boot_time=None)
    return found


def judged(table: xid_table.XidTable, *texts: str, own_burn: bool = False, gpus: dict[str, str] = GPU19) -> list[Any]:
    events = [line(text, T0 + timedelta(seconds=n)) for n, text in enumerate(texts)]
    return [
        (f.details["xid"], f.severity, f.remediation, f.details["judged_as"])
        for f in xid_findings.findings(events, gpus, table, own_burn=own_burn)
    ]


def test_an_xid_on_a_mig_slice_is_read_as_its_gpus(table: xid_table.XidTable) -> None:
    # The driver's format for an Xid it attributes to a GPU instance and compute instance (XID_PRINT_WITH_ATTR,
    # "PCI:%04x:%02x:%02x GPU-I:%02u GPU-CI:%02u"), with the message of the first Xid 13 of the decode log.
    text = (
        "NVRM: Xid (PCI:0000:19:00 GPU-I:01 GPU-CI:00): 13, pid='<unknown>', name=<unknown>, "
        "Graphics SM Warp Exception on (GPC 8, TPC 5, SM 0): Out Of Range Address"
    )
    found = line(text)
    assert (found.pci_bus_id, found.xid, found.message[:20]) == ("00000000:19:00.0", 13, "Graphics SM Warp Exc")


def test_xid_45_caused_by_a_previous_xid_is_judged_as_that_xid(table: xid_table.XidTable) -> None:
    # The Xid 149 line is NVSentinel's parser test's (a link going down); the 45 is the driver's format for the
    # channel teardown it causes (kernel_rc.c appends " caused by previous Xid %d").
    link_down = (
        "NVRM: Xid (PCI:0000:19:00): 149, NETIR_LINK_EVT  Fatal   XC0 i0 Link 09 "
        "(0x025525c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)"
    )
    teardown = "NVRM: Xid (PCI:0000:19:00): 45, pid=4123, name=python3, Ch 00000008 caused by previous Xid 149"
    assert judged(table, link_down, teardown) == [
        (45, Severity.FAIL, Remediation.RESET_GPU, "RESET_GPU"),
        (149, Severity.FAIL, Remediation.RESET_GPU, "RESET_GPU"),
    ]
    (found,) = xid_findings.findings([line(teardown)], GPU19, table)
    assert "caused by previous Xid 149: judged as that Xid (NVIDIA: ignore the 45, follow the other)" in found.message
    # Caused by an Xid NVIDIA ignores (63, a row marked for remapping): it is ignored too.
    remap = "NVRM: Xid (PCI:0000:19:00): 45, pid=4123, name=python3, Ch 00000008 caused by previous Xid 63"
    assert judged(table, remap) == [(45, Severity.INFO, Remediation.NONE, "IGNORE")]
    # Caused by an application's Xid 13 in gpu-burnin's own burn: the GPU is suspect, as the 13 is.
    fault = "NVRM: Xid (PCI:0000:19:00): 45, pid=4123, name=python3, Ch 00000008 caused by previous Xid 13"
    assert judged(table, fault, own_burn=True) == [(45, Severity.FAIL, Remediation.INSPECT_HARDWARE, "SUSPECT_GPU")]


def test_only_a_solo_xid_45_says_fabric_manager(table: xid_table.XidTable) -> None:
    # The driver's format with the decode log's pid, name and channel (its Xid 43 line 7): no "caused by".
    solo = "NVRM: Xid (PCI:0000:19:00): 45, pid=2815167, name=pt_main_thread, Ch 00000008"
    (found,) = xid_findings.findings([line(solo)], GPU19, table)
    assert (found.severity, found.details["judged_as"]) == (Severity.WARNING, "WORKFLOW_XID_45")
    assert "alone, restart Fabric Manager" in found.message and "solo" in found.message


def test_application_xids_in_gpu_burnins_own_burn_fail_the_gpu(table: xid_table.XidTable) -> None:
    """NVIDIA blames 13, 31 and 43 on the application ('if known good APP ... REPORT_ISSUE'): in our own burn the
    application is known good. The 13 and 43 lines are the decode log's (real); the 31 line is the format
    NVSentinel's WORKFLOW_XID_31 design note quotes."""
    logged = [e for e in parse(DECODE_LOG) if e.when is not None and e.when < datetime(2025, 1, 21, 2, 22, tzinfo=UTC)]
    assert {e.xid for e in logged} == {13, 43} and len({_minute(e) for e in logged}) == 1  # one burst, 02:21
    gpu = {"0000:38:00": "GPU-38"}
    theirs = xid_findings.findings(logged, gpu, table)
    assert [(f.details["xid"], f.severity) for f in theirs] == [(13, Severity.WARNING), (43, Severity.WARNING)]
    ours = xid_findings.findings(logged, gpu, table, own_burn=True)
    assert [(f.details["xid"], f.severity, f.remediation) for f in ours] == [
        (13, Severity.FAIL, Remediation.INSPECT_HARDWARE),
        (43, Severity.FAIL, Remediation.INSPECT_HARDWARE),
    ]
    assert "gpu-burnin's own burn, whose application is known good" in ours[0].message
    mmu = (
        "NVRM: Xid (PCI:0000:19:00): 31, pid=2079991, name=pt_main_thread, Ch 00000007, intr 00000000. "
        "MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_6 faulted @ 0x7f5a_e7504000. Fault is of type FAULT_PDE "
        "ACCESS_TYPE_VIRT_READ"
    )
    assert judged(table, mmu) == [(31, Severity.WARNING, Remediation.RESTART_APP, "RESTART_APP")]
    assert judged(table, mmu, own_burn=True) == [(31, Severity.FAIL, Remediation.INSPECT_HARDWARE, "SUSPECT_GPU")]


def _minute(event: kernel_log.XidEvent) -> str:
    assert event.when is not None
    return event.when.strftime("%H:%M")


def test_an_application_xid_in_separate_bursts_on_one_gpu_is_the_gpus(table: xid_table.XidTable) -> None:
    """Outside a burn (the watch), NVSentinel's rule: Xid 13 or 31 twice on one GPU within a day. A burst (one
    fault, an Xid for every SM it hit) counts once; an earlier poll's events are context, not judged again."""
    logged = [e for e in parse(DECODE_LOG) if e.xid == 13]
    first = [e for e in logged if _minute(e) == "02:21"]
    second = [e for e in logged if _minute(e) == "02:44"]
    gpu = {"0000:38:00": "GPU-38"}
    (alone,) = xid_findings.findings(first, gpu, table)
    assert alone.severity is Severity.WARNING and alone.details["escalated"] is False
    (again,) = xid_findings.findings(second, gpu, table, earlier=first)
    assert (again.severity, again.details["count"], again.details["escalated"]) == (Severity.FAIL, len(second), True)
    # On another GPU, or two days later, it is the application's again.
    elsewhere = [_moved(e, "0000:39:00") for e in second]
    (other,) = xid_findings.findings(elsewhere, {"0000:39:00": "GPU-39"}, table, earlier=first)
    assert other.severity is Severity.WARNING
    later = [_shifted(e, timedelta(days=2)) for e in second]
    (fresh,) = xid_findings.findings(later, gpu, table, earlier=first)
    assert fresh.severity is Severity.WARNING


def _moved(event: kernel_log.XidEvent, pci: str) -> kernel_log.XidEvent:
    return dataclasses.replace(event, pci_bus_id=kernel_log.normalise_pci_bus_id(pci))


def _shifted(event: kernel_log.XidEvent, by: timedelta) -> kernel_log.XidEvent:
    assert event.when is not None
    return dataclasses.replace(event, when=event.when + by)


def test_xid_32_is_mostly_pci_link_quality(table: xid_table.XidTable) -> None:
    # NVSentinel's CSV parser test line (a real Xid 32 format: channel id and interrupt).
    text = "NVRM: Xid (PCI:0000:19:00): 32, pid=2280636, name=train.3, Channel ID 0000000d intr0 00040000"
    assert judged(table, text) == [(32, Severity.WARNING, Remediation.INSPECT_HARDWARE, "CHECK_PCIE")]
    assert judged(table, text, own_burn=True) == [(32, Severity.FAIL, Remediation.INSPECT_HARDWARE, "PCIE_FAULT")]
    assert "quality issues on PCI" in table.get(32).note  # type: ignore[union-attr]


# gpud's nvlink_logs_test.go lines (the catalog's message format: unit, severity, XC, injected, link, then
# IntrInfo and error status), the NETIR_LINK_EVT ones from NVSentinel's and gpud's parser tests.
NVLINK5 = [
    ("144, SAW_MVB Nonfatal XC0 i0 Link 00 (0x00000001 0x00000001 0x00000000 0x00000000)", "IGNORE"),
    ("144, SAW_MVB Fatal XC0 i0 Link 00 (0x00000001 0x00000002 0x00000000 0x00000000)", "RESET_GPU"),
    ("145, RLW_CTRL Nonfatal XC0 i0 Link 00 (0x00000003 0x80000000 0x00000000 0x00000000)", "IGNORE"),
    ("145, RLW_REMAP Nonfatal XC0 i0 Link 00 (0x00000004 0x00000001 0x00000000 0x00000000)", "XID_154_EVAL"),
    ("145, RLW_REMAP Fatal XC0 i0 Link 00 (0x00000004 0x00000040 0x00000000 0x00000000)", "RESET_GPU"),
    ("145, RLW_REMAP Nonfatal XC0 i0 Link 00 (0x00000004 0x00000100 0x00000000 0x00000000)", "IGNORE"),
    ("145, RLW_RXPIPE Nonfatal XC0 i0 Link 00 (0x00000006 0x00000001 0x00000000 0x00000000)", "IGNORE"),
    # The same, with the IntrInfo bit of NVIDIA's "Decode for action 2" set (written from the decode sheet).
    ("145, RLW_RXPIPE Fatal XC0 i0 Link 00 (0x00000086 0x00000001 0x00000000 0x00000000)", "RESET_GPU"),
    ("145, RLW_SRC_TRACK Fatal XC0 i0 Link 00 (0x00000007 0x00000001 0x00000000 0x00000000)", "RESET_GPU"),
    ("146, TLW_CTRL Nonfatal XC0 i0 Link 00 (0x00000009 0x00000001 0x00000000 0x00000000)", "IGNORE"),
    ("146, TLW_CTRL Fatal XC0 i0 Link 00 (0x00000009 0x00000004 0x00000000 0x00000000)", "RESET_GPU"),
    ("146, TLW_TX/TLW_TX_PIPE1 Nonfatal XC0 i0 Link 00 (0x0000000d 0x00000001 0x00000000 0x00000000)", "IGNORE"),
    ("147, TREX Nonfatal XC0 i0 Link 00 (0x0000000e 0x00000001 0x00000000 0x00000000)", "IGNORE"),
    ("148, NVLPW_CTRL/NVLPW Nonfatal XC0 i0 Link 00 (0x0000000f 0x80000000 0x00000000 0x00000000)", "IGNORE"),
    ("149, NETIR/NETIR_INT Fatal XC0 i0 Link 00 (0x00000018 0x00000000 0x00000000 0x00000000)", "RESET_GPU"),
    ("149, NETIR_BER_EVENT Nonfatal XC0 i0 Link 00 (0x00000013 0x00000001 0x00000000 0x00000000)", "IGNORE"),
    ("149, NETIR_MFDE_EVENT Fatal XC0 i0 Link 00 (0x00000014 0x00000001 0x00000000 0x00000000)", "RESET_GPU"),
    ("149, NETIR_MFDE_EVENT Nonfatal XC0 i0 Link 00 (0x00000014 0x00000003 0x00000000 0x00000000)", "IGNORE"),
    (
        "149, NETIR_LINK_EVT  Fatal   XC0 i0 Link 09 (0x025525c6 0x00000000 0x00000000 0x00000000 0x00000000 0x0)",
        "RESET_GPU",
    ),
    ("149, NETIR_LINK_EVT Fatal XC0 i0 Link 00 (0x026001c6 0x00000000 0x00000000 0x00000000 0x00000000)", "IGNORE"),
    ("150, MSE_WATCHDOG Fatal XC0 i0 Link 00 (0x00000000 0x00000000 0x00000000 0x00000000)", "RESET_GPU"),
]


@pytest.mark.parametrize(("text", "bucket"), NVLINK5, ids=[t.split(" (")[0] for t, _ in NVLINK5])
def test_nvlink5_xids_are_judged_by_nvidias_decode(table: xid_table.XidTable, text: str, bucket: str) -> None:
    (found,) = xid_findings.findings([line(f"NVRM: Xid (PCI:0000:19:00): {text}")], GPU19, table)
    assert found.details["judged_as"] == bucket
    assert (found.severity, found.remediation) == (
        xid_rules.BUCKETS[bucket].severity,
        xid_rules.BUCKETS[bucket].remediation,
    )
    assert "NVIDIA's decode" in found.message


def test_every_subcode_of_xid_147_and_148_is_ignored(table: xid_table.XidTable) -> None:
    rows = [row for row in table.nvlink5 if row.xid in (147, 148)]
    assert len(rows) == 3 and {row.bucket for row in rows} == {"IGNORE"} and not any(row.promoted[2] for row in rows)
    assert {row.xid for row in table.nvlink5} == set(range(144, 151))


def test_an_nvlink5_message_no_row_decodes_is_judged_whole(table: xid_table.XidTable) -> None:
    # The pre-R575 format a third-party parser test keeps ("[0x0000000a]", IntrInfo alone): no 149 row matches.
    old = "NVRM: Xid (PCI:0000:19:00): 149, NETIR_LINK_EVT Fatal XC 1 i 2 Link 01 [0x0000000a]"
    assert judged(table, old) == [(149, Severity.FAIL, Remediation.RESET_GPU, "WORKFLOW_NVLINK5_ERR")]
    # An NVML event carries the number alone.
    nvml = kernel_log.XidEvent(
        pci_bus_id="00000000:19:00.0", xid=147, when=T0, pid=None, process="", message="", line=""
    )
    (found,) = xid_findings.findings([nvml], GPU19, table)
    assert found.details["judged_as"] == "WORKFLOW_NVLINK5_ERR" and "not decoded" in found.message


RECOVERY = [
    # gpud's kmsg_test.go lines (an NVLink5 fault's recovery, NVL72).
    ("GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)", "DRAIN_AND_RESET"),
    ("GPU recovery action changed from 0x4 (Drain and Reset) to 0x1 (GPU Reset Required)", "RESET_GPU"),
    # The catalog's own example for Xid 154.
    ("GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)", "RESTART_BM"),
    # The catalog's other values, in the same format.
    ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)", "DRAIN_P2P"),
    ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", "IGNORE"),
    # Newer drivers word it otherwise: the words alone, and an action this table does not know.
    ("GPU recovery action changed to Node Reboot", "RESTART_BM"),
    ("GPU recovery action changed from 0x0 (None) to 0x9 (Reseat the Tray)", "XID_154"),
]


@pytest.mark.parametrize(("text", "bucket"), RECOVERY, ids=[b for _, b in RECOVERY])
def test_xid_154_is_judged_by_the_action_it_names(table: xid_table.XidTable, text: str, bucket: str) -> None:
    (found,) = xid_findings.findings([line(f"NVRM: Xid (PCI:0009:01:00): 154, {text}")], {"0009:01:00": "GPU-9"}, table)
    assert found.details["judged_as"] == bucket
    assert found.severity is xid_rules.BUCKETS[bucket].severity


def test_xid_159_resets_only_where_uvm_is_in_use(table: xid_table.XidTable) -> None:
    # Written from the catalog's description of Xid 159 (CHI Non-Data Error, any C2C-connected GPU).
    text = "NVRM: Xid (PCI:0009:01:00): 159, CHI Non-Data Error"
    gpus = {"0009:01:00": "GPU-9"}
    assert judged(table, text, gpus=gpus) == [(159, Severity.WARNING, Remediation.RESET_GPU, "CHECK_UVM")]
    assert judged(table, text, gpus=gpus, own_burn=True) == [(159, Severity.INFO, Remediation.NONE, "IGNORE")]


def nvlink_error(registers: str, link: int = 14) -> str:
    # NVSentinel's WORKFLOW_NVLINK_ERR design note quotes this line (register 2 bit 16 set); the others put the
    # bits of the catalog's workflow in the same seven registers.
    said = f"NVLink: fatal error detected on link {link}({registers})"
    return f"NVRM: Xid (PCI:0000:19:00): 74, pid='<unknown>', name=<unknown>, {said}"


@pytest.mark.parametrize(
    ("registers", "bucket"),
    [
        ("0x1, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", "IGNORE"),  # register 0 bit 0: can be safely ignored
        ("0x0, 0x0, 0x0, 0x0, 0x100000, 0x0, 0x0", "IGNORE"),  # register 4 bit 20: ECC over a threshold
        ("0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0", "NOTE"),  # register 2 bit 16: only if it repeats
        ("0x10, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", "NOTE"),  # register 0 bit 4: ECC/parity, more than twice on a link
        ("0x100, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", "CHECK_NVLINK_CONNECTIONS"),  # register 0 bit 8
        ("0x102, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", "CHECK_NVLINK_CONNECTIONS"),  # bit 1, sympathetic, beside bit 8
        ("0x2, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", "WORKFLOW_NVLINK_ERR"),  # bit 1 alone: NVIDIA: report a bug
        ("0x200000, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", "CHECK_NVLINK_CONNECTIONS"),  # bit 21 alone: marginal SI
        ("0x0, 0x0, 0x2000, 0x0, 0x0, 0x0, 0x0", "CONTACT_SUPPORT"),  # register 2 bit 13: not expected
        ("0x4, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", "WORKFLOW_NVLINK_ERR"),  # a bit the workflow does not list
        ("0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", "WORKFLOW_NVLINK_ERR"),  # no bit: nothing to decode
    ],
)
def test_xid_74_is_judged_by_its_register_bits(table: xid_table.XidTable, registers: str, bucket: str) -> None:
    assert judged(table, nvlink_error(registers))[0][3] == bucket


def test_xid_74_bits_that_count_when_they_repeat_on_a_link(table: xid_table.XidTable) -> None:
    parity = nvlink_error("0x10, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0")
    assert judged(table, parity, parity)[0][3] == "NOTE"
    assert judged(table, parity, parity, parity)[0][3] == "CONTACT_SUPPORT"  # more than twice on link 14
    spread = [nvlink_error("0x10, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0", link) for link in (1, 2, 3)]
    assert judged(table, *spread)[0][3] == "NOTE"  # once on each of three links
    diags = nvlink_error("0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0")
    assert judged(table, diags, diags)[0][3] == "CONTACT_SUPPORT"  # register 2 bit 16, seen repeatedly
    assert judged(table, "NVRM: Xid (PCI:0000:19:00): 74, NVLink error")[0][3] == "WORKFLOW_NVLINK_ERR"
    # Sympathetic bits alone beside another Xid on the GPU (here the catalog's Xid 79 example, on this GPU's bus):
    # NVIDIA follows the other Xid, which is judged on its own.
    fallen = "NVRM: Xid (PCI:0000:19:00): 79, GPU has fallen off the bus."
    sympathetic = nvlink_error("0x2, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0")
    assert [j[3] for j in judged(table, fallen, sympathetic)] == ["IGNORE", "RESTART_BM"]


@pytest.mark.parametrize(
    ("number", "severity"),
    [(162, Severity.INFO), (163, Severity.WARNING), (164, Severity.WARNING), (165, Severity.WARNING)]
    + [(166, Severity.WARNING), (167, Severity.FAIL), (168, Severity.FAIL), (169, Severity.FAIL)]
    + [(170, Severity.WARNING), (171, Severity.FAIL), (172, Severity.FAIL)],
)
def test_xids_newer_than_the_old_table_have_entries(table: xid_table.XidTable, number: int, severity: Severity) -> None:
    info = table.get(number)
    assert info is not None and info.bucket == "NOT_GIVEN" and info.judge_as and info.note
    (found,) = xid_findings.findings([event(number)], {"00000000:19:00.0": "GPU-a"}, table)
    assert found.severity is severity and found.details["in_table"] is True


ODD_MESSAGES = [
    "",
    "(0x1)",
    "[0xffffffff 0x0]",
    "NETIR_LINK_EVT Fatal XC0 i0 Link 01 (0xzz 0x1)",
    "NVLink: fatal error detected on link 3(0x1, 0x2)",
    "NVLink: fatal error detected on link 3(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x0, 0x0)",
    "Ch 00000008 caused by previous Xid 45",
    "Ch 00000008 caused by previous Xid 9999",
    "GPU recovery action changed from 0x0 (None) to 0xffffffffffff (?)",
    "GPU recovery action changed to",
]


@pytest.mark.parametrize("message", ODD_MESSAGES)
def test_every_xid_with_an_odd_message_is_judged_never_a_traceback(table: xid_table.XidTable, message: str) -> None:
    events = [line(f"NVRM: Xid (PCI:0000:19:00): {number}, {message}") for number in [*table.entries, 9999]]
    found = xid_findings.findings(events, GPU19, table) + xid_findings.findings(events, GPU19, table, own_burn=True)
    assert len(found) == 2 * (len(table) + 1)
    decoded = {f.details["xid"]: f for f in found if f.details.get("in_table")}
    for number in (74, 144, 149, 154):  # a decode that cannot read the message is never milder than the whole
        whole = xid_rules.BUCKETS[table.get(number).bucket]  # type: ignore[union-attr]
        judged_as = xid_rules.BUCKETS[decoded[number].details["judged_as"]]
        assert xid_rules.strictness(whole) <= xid_rules.strictness(judged_as)
