"""The simulated NVML's scenario files (harness/nvml/scenario.py): checked whole on load, every
error one ConfigError naming the file and the field; a scenario that loads plays without a traceback."""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.nvml import read, scenario
from harness.nvml.sim import Simulated
from harness.nvml.snapshot import GpuHealth

SCENARIOS = Path(__file__).resolve().parent.parent / "harness" / "nvml" / "scenarios"
WATCH = Path(__file__).parent / "data" / "watch"


def toml(value: Any) -> str:
    """A value as TOML: tables inline, so any document is one line a key (tomllib has no writer)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"


def document(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml(value)}\n" for key, value in data.items())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        Simulated.from_file(path)
    assert str(path) in str(err.value)
    return str(err.value)


def play(nv: Simulated) -> None:
    """Every call the suite and the watch make, at every moment of the timeline, every Xid drained."""
    nv.nvmlInit()
    events = nv.nvmlEventSetCreate()
    for index in range(nv.nvmlDeviceGetCount()):
        nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(index), nv.nvmlEventTypeXidCriticalError, events)
    limit = sum(x.count for x in nv.scenario.xids) + 1
    for finished, running, now in (
        (set(), set(), None),
        ({"matmul"}, {"memory"}, None),
        (set(), set(), 0.0),
        (set(), set(), 3600.0),
        ({"matmul", "memory"}, set(), 1e12),
    ):
        nv.finished, nv.running, nv.now_s = finished, running, now
        read.snapshot(nv, "sim:test")
        for _ in range(limit):
            try:
                nv.nvmlEventSetWait_v2(events, 0)
            except nv.NVMLError:
                break
        else:
            raise AssertionError("more Xid events than the scenario holds")


# Every field a scenario can hold, each with a value of its kind.
FULL: dict[str, Any] = {
    "description": "every field",
    "driver": "580.159.04",
    "cuda": "13.0",
    "expect": ["XID:fail:0", "GPU_MISSING:fail:node"],
    "gpus": [
        {
            "index": 0,
            "uuid": "GPU-0",
            "name": "NVIDIA H100 80GB HBM3",
            "serial": "1650000000001",
            "pci_bus_id": "00000000:18:00.0",
            "memory_bytes": 85520809984,
            "ecc_enabled": True,
            "ecc": {"volatile_uncorrected": 1, "aggregate_sram_corrected": 2},
            "retired": {"single_bit": 1, "double_bit": 0, "pending": False},
            "remap": {"corrected": 0, "uncorrected": 1, "pending": True, "failure": False},
            "clock_events": ["gpu_idle", "hw_slowdown"],
            "temperature_c": 40,
            "memory_temperature_c": 41,
            "power_w": 72.5,
            "power_limit_w": 700.0,
            "sm_clock_mhz": 1980,
            "memory_clock_mhz": 2619,
            "pcie": {"gen": 5, "gen_max": 5, "width": 16, "width_max": 16},
            "nvlinks": [
                {"link": 0, "active": True, "crc_errors": 1, "replay_errors": 0, "recovery_errors": 0},
                {"link": 1, "active": False},
            ],
            "persistence": True,
            "unsupported": ["memory_temperature_c", "remap"],
        },
        {},
    ],
    "changes": [
        {"after": "matmul", "gpu": 1, "set": {"ecc.volatile_corrected": 50, "temperature_c": 90, "power_w": 600.5}},
        {"during": "memory", "gpu": 0, "set": {"clock_events": ["sw_power_cap"], "remap": {"pending": False}}},
        {"at": 3600, "until": 7200, "gpu": 1, "lost": True},
        {"at": "1h30m", "gpu": 0, "set": {"nvlinks": [{"link": 0, "active": False}], "persistence": False}},
    ],
    "xids": [
        {"gpu": 0, "xid": 79, "at": 60, "count": 3},
        {"gpu": 1, "xid": 48, "after": "matmul"},
    ],
}

HOSTILE: list[Any] = ["x", "", True, False, 1.5, 0, -1, math.nan, math.inf, -math.inf, 2**70, [], [1], {"a": 1}]
NUMBERS = {"power_w", "power_limit_w", "at", "until"}
"""Leaves where a number with a fraction is right (everywhere else a whole number is wanted)."""


def leaves(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, (*path, key))
    elif isinstance(data, list):
        for n, value in enumerate(data):
            yield from leaves(value, (*path, n))
    if path:
        yield path, data


def tables(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(data, dict):
        yield path
        for key, value in data.items():
            yield from tables(value, (*path, key))
    elif isinstance(data, list):
        for n, value in enumerate(data):
            yield from tables(value, (*path, n))


def replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(FULL)
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return data


def must_refuse(path: tuple[Any, ...], original: Any, new: Any) -> bool:
    """A value of another kind than the field's: the loader must refuse it (other values may be right)."""
    number = isinstance(new, int | float) and not isinstance(new, bool)
    finite = number and math.isfinite(new) and new >= 0
    if isinstance(original, bool):
        return not isinstance(new, bool)
    if isinstance(original, str):
        return not isinstance(new, str) and not (path[-1] in NUMBERS and finite)
    if path[-1] in NUMBERS:
        return not finite
    if isinstance(original, int):
        return not (isinstance(new, int) and finite and new <= scenario.MAX_WHOLE)
    return not isinstance(new, type(original))


def test_the_full_scenario_loads_and_plays(tmp_path):
    nv = Simulated.from_file(write(tmp_path, document(FULL)))
    assert len(nv.scenario.gpus) == 2 and len(nv.scenario.changes) == 4 and nv.scenario.xids[0].count == 3
    play(nv)


def test_every_field_mutated_to_any_kind_is_a_config_error_or_plays_without_a_traceback(tmp_path):
    """The property: whatever a field holds, loading gives a scenario or a ConfigError naming the file
    and field, nothing else; a value of the wrong kind is always refused; what loads, plays."""
    path = tmp_path / "scenario.toml"
    tried = refusals = 0
    for where, original in list(leaves(FULL)):
        for new in [*HOSTILE, "DELETE"]:
            data = replaced(where, new)
            if new == "DELETE":
                container = data
                for step in where[:-1]:
                    container = container[step]
                del container[where[-1]]
            path.write_text(document(data))
            tried += 1
            try:
                nv = Simulated.from_file(path)
            except ConfigError as err:
                refusals += 1
                assert str(path) in str(err), err
                continue
            assert new == "DELETE" or not must_refuse(where, original, new), (where, new)
            play(nv)
    for where in tables(FULL):  # and a key no table knows
        data = copy.deepcopy(FULL)
        target = data
        for step in where:
            target = target[step]
        target["bogus"] = 1
        path.write_text(document(data))
        with pytest.raises(ConfigError, match="bogus"):
            Simulated.from_file(path)
    assert tried > 1000 and refusals > tried // 2  # the walk reached every field


AFTER = '[[gpus]]\n[[changes]]\nafter = "matmul"\n'


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[gpus]]\ntemperature_c = "hot"\n', "gpus[0].temperature_c"),
        ("[[gpus]]\ntemperature_c = 93.5\n", "gpus[0].temperature_c"),
        ("[[gpus]]\n[[gpus]]\n[[gpus]]\nmemory_temperature_c = true\n", "gpus[2].memory_temperature_c"),
        ('[[gpus]]\necc = { volatile_uncorrected = "2" }\n', "gpus[0].ecc.volatile_uncorrected"),
        ("[[gpus]]\necc = { volatile_uncorrected = -2 }\n", "gpus[0].ecc.volatile_uncorrected"),
        ('[[gpus]]\nmemory_bytes = "80 GB"\n', "gpus[0].memory_bytes"),
        ("[[gpus]]\npower_w = nan\n", "gpus[0].power_w"),
        ("[[gpus]]\npower_w = inf\n", "gpus[0].power_w"),
        (f"[[gpus]]\npower_w = {'9' * 400}\n", "gpus[0].power_w"),
        ('[[gpus]]\nremap = { pending = "yes" }\n', "gpus[0].remap.pending"),
        ("[[gpus]]\nremap = 1\n", "gpus[0].remap"),
        ("[[gpus]]\npcie = { width = 8.0 }\n", "gpus[0].pcie.width"),
        ("[[gpus]]\nname = 5\n", "gpus[0].name"),
        ('[[gpus]]\nname = ""\n', "gpus[0].name"),
        ('[[gpus]]\npci_bus_id = "here"\n', "gpus[0].pci_bus_id"),
        ('[[gpus]]\nuuid = "GPU-a"\n[[gpus]]\nuuid = "GPU-a"\n', "gpus[1].uuid"),
        ("[[gpus]]\nindex = 1\n", "gpus[0].index"),
        ('[[gpus]]\nclock_events = "hw_slowdown"\n', "gpus[0].clock_events"),
        ('[[gpus]]\nclock_events = ["fast"]\n', "gpus[0].clock_events"),
        ('[[gpus]]\nunsupported = ["warp_drive"]\n', "gpus[0].unsupported"),
        ('[[gpus]]\nnvlinks = [{ link = 0, crc_errors = "7" }]\n', "gpus[0].nvlinks[0].crc_errors"),
        ("[[gpus]]\nnvlinks = [{ link = 3 }]\n", "gpus[0].nvlinks[0].link"),
        ("[[gpus]]\nnvlinks = [1]\n", "gpus[0].nvlinks[0]"),
        ("[[gpus]]\ncolour = 1\n", "gpus[0].colour"),
        ('gpus = "two"\n', "gpus"),
        ("gpus = [1]\n", "gpus[0]"),
        ("[[gpus]]\nsurprise = 1\n", "gpus[0].surprise"),
        ("colour = 1\n[[gpus]]\n", "colour"),
        ("cuda = 13.0\n[[gpus]]\n", "cuda"),
        ('cuda = "thirteen"\n[[gpus]]\n', "cuda"),
        ('driver = ""\n[[gpus]]\n', "driver"),
        ('expect = ["XID"]\n[[gpus]]\n', "expect[0]"),
        ('expect = ["XID:fatal:0"]\n[[gpus]]\n', "expect[0]"),
        ('expect = ["XID:fail:3"]\n[[gpus]]\n', "expect[0]"),
        ("[[gpus]]\n[[xids]]\ngpu = -1\nxid = 79\n", "xids[0].gpu"),
        ("[[gpus]]\n[[xids]]\ngpu = true\nxid = 79\n", "xids[0].gpu"),
        ('[[gpus]]\n[[xids]]\ngpu = "0"\nxid = 79\n', "xids[0].gpu"),
        ('[[gpus]]\n[[xids]]\nxid = "79"\n', "xids[0].xid"),
        ("[[gpus]]\n[[xids]]\nxid = 0\n", "xids[0].xid"),
        ("[[gpus]]\n[[xids]]\ngpu = 0\n", "xids[0].xid"),
        ("[[gpus]]\n[[xids]]\nxid = 79\ncount = 1e9\n", "xids[0].count"),
        ("[[gpus]]\n[[xids]]\nxid = 79\ncount = 1000000000\n", "xids[0].count"),
        ("[[gpus]]\n[[xids]]\nxid = 79\nat = inf\n", "xids[0].at"),
        ("[[gpus]]\n[[xids]]\nxid = 79\nat = nan\n", "xids[0].at"),
        ("[[gpus]]\n[[xids]]\nxid = 79\nat = -5\n", "xids[0].at"),
        (f'[[gpus]]\n[[xids]]\nxid = 79\nat = "{"9" * 400}s"\n', "xids[0].at"),
        ("[[gpus]]\n[[xids]]\nxid = 79\nafter = 3\n", "xids[0].after"),
        ("[[gpus]]\n[[xids]]\nxid = 79\nwhen = 3\n", "xids[0].when"),
        ('[[gpus]]\n[[xids]]\nxid = 79\nduring = "matmull"\n', "xids[0].during"),
        ('[[gpus]]\n[[xids]]\nxid = 79\nduring = "matmul"\nat = 5\n', "xids[0]"),
        ('[[gpus]]\n[[changes]]\nafter = "matmull"\nlost = true\n', "changes[0].after"),
        (AFTER + 'lost = "yes"\n', "changes[0].lost"),
        (AFTER + "gpu = true\nlost = true\n", "changes[0].gpu"),
        (AFTER, "changes[0]"),
        (AFTER + 'set = { temperature_c = "hot" }\n', "changes[0].set.temperature_c"),
        (AFTER + 'set = { "ecc.volatile_corrected" = 1.5 }\n', "ecc.volatile_corrected"),
        (AFTER + 'set = { "ecc.fresh" = 1 }\n', "changes[0].set.ecc.fresh"),
        (AFTER + "set = { index = 1 }\n", "changes[0].set.index"),
        (AFTER + "set = { remap = { pending = 1 } }\n", "changes[0].set.remap.pending"),
        (AFTER + "set = 3\n", "changes[0].set"),
        (AFTER + 'lost = true\nby = "me"\n', "changes[0].by"),
        ("[[gpus]]\nchanges = [1]\n", "gpus[0].changes"),
        ("[[gpus]]\n[[changes]]\nat = 10\nuntil = 5\nlost = true\n", "changes[0].until"),
    ],
)
def test_a_bad_field_is_one_error_naming_the_file_and_the_field(tmp_path, text, field):
    assert field in refused(write(tmp_path, text))


def test_a_file_that_is_not_a_scenario_is_one_error_naming_it(tmp_path):
    path = tmp_path / "scenario.toml"
    path.write_bytes(b'[[gpus]]\nname = "\xff"\n')
    assert "UTF-8" in refused(path)
    path.write_text("a = " + "9" * 5000 + "\n")  # tomllib: ValueError, not TOMLDecodeError
    assert "not valid TOML" in refused(path)
    path.write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")  # RecursionError in tomllib
    assert "not valid TOML" in refused(path)
    path.write_text("[[gpus]]\n" + "#" * scenario.MAX_BYTES + "\n")
    assert f"over the limit of {scenario.MAX_BYTES}" in refused(path)
    assert "not a regular file" in refused(tmp_path)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo)  # never opened: reading it would wait for a writer


def test_a_section_set_whole_is_merged_over_the_gpus(tmp_path):
    text = '[[gpus]]\nremap = { uncorrected = 1 }\n[[changes]]\nafter = "matmul"\nset = { remap = { pending = true } }'
    nv = Simulated.from_file(write(tmp_path, text))
    nv.nvmlInit()
    assert nv.nvmlDeviceGetRemappedRows(0) == (0, 1, 0, 0)
    nv.finished = {"matmul"}
    assert nv.nvmlDeviceGetRemappedRows(0) == (0, 1, 1, 0)  # the count stays: `set` said only pending


def test_every_field_of_a_gpus_health_can_be_given():
    """A field added to the snapshot is read from scenarios too, or the loader is told its kind."""
    import dataclasses

    assert set(scenario.FIELDS) == {f.name for f in dataclasses.fields(GpuHealth)} | {"memory_bytes", "unsupported"}


@pytest.mark.parametrize("path", sorted([*SCENARIOS.glob("*.toml"), *WATCH.glob("*.toml")]), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads_and_plays(path):
    play(Simulated.from_file(path))


def test_an_xid_during_a_burn_comes_from_its_start_on(tmp_path):
    nv = Simulated.from_file(write(tmp_path, '[[gpus]]\n[[xids]]\nxid = 79\nduring = "matmul"\n'))
    nv.nvmlInit()
    events = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(0, nv.nvmlEventTypeXidCriticalError, events)
    with pytest.raises(nv.NVMLError):  # a timeout: not before the burn
        nv.nvmlEventSetWait_v2(events, 0)
    nv.running = {"matmul"}
    assert nv.nvmlEventSetWait_v2(events, 0).eventData == 79
