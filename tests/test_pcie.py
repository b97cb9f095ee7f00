"""The PCIe test on the CPU stand-in: copies and their checks, the turns, faults, and NUMA placement."""

import os
import time

import pytest
import torch

from gputests.work import copies, pcie, pcie_run
from harness.devices import numa_placement
from harness.groups import PcieSection
from harness.profiles import quick
from harness.records import Code, Direction, Severity
from harness.workers.devicetest import Scope
from harness.workers.faults import parse
from tests.helpers import cpus

PROFILE = quick().for_cpu().with_overrides(duration_s=0.6).with_section(PcieSection(mib=1))
METRICS = {pcie.metric_name(d) for d in pcie.DIRECTIONS}
CPU = torch.device("cpu")


def run(devices, faults=None, profile=PROFILE):
    scope = Scope(devices=tuple(devices), profile=profile, test="t::pcie", group="pcie", faults=faults or {})
    return pcie_run.run(scope)


# -- the copies ------------------------------------------------------------------------


def test_a_clean_window_checks_every_copy_and_counts_its_bytes():
    lane = copies.Lane(CPU, CPU, 1 << 16, seed=1)
    found = copies.window([lane], 5)
    assert (found.copies, found.checked, found.bad, found.nbytes) == (5, 5, 0, 5 << 16)
    assert found.seconds > 0 and found.gbps > 0


def test_the_two_sources_differ_in_every_word_and_no_word_is_zero():
    lane = copies.Lane(CPU, CPU, 1 << 12, seed=7)
    first, second = (s.view(torch.int32) for s in lane.sources)
    assert bool((first != second).all()) and bool((first > 0).all()) and bool((second > 0).all())
    assert lane.expected == [int(copies.checksum(s)) for s in lane.sources]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda dst: dst.view(torch.int32)[5].bitwise_xor_(1 << 17), id="one flipped bit"),
        pytest.param(lambda dst: dst.view(torch.int32)[100:200].zero_(), id="a block never written"),
    ],
)
def test_a_damaged_copy_is_caught(damage):
    lane = copies.Lane(CPU, CPU, 1 << 12, seed=3)
    assert copies.window([lane], 3, fault=damage).bad == 1


def test_a_copy_that_left_the_other_patterns_bytes_behind_is_caught():
    # The ring sends each source to each buffer in turn: a block the copy skipped still holds the
    # other pattern, which the destination's sum tells apart.
    lane = copies.Lane(CPU, CPU, 1 << 12, seed=3)
    copies.window([lane], 3)  # every ring buffer has been written once

    def stale(dst):  # called after copy k = count - 1, from source k % 2; the other source is count % 2
        other = lane.sources[lane.count % copies.SOURCES]
        dst.view(torch.int32)[:64].copy_(other.view(torch.int32)[:64])

    assert copies.window([lane], 3, fault=stale).bad == 1


# -- the test, parent and workers --------------------------------------------------------


def test_every_device_reports_each_direction(cpu):
    devices = cpus(2, cpu)
    outcome = run(devices)
    assert outcome.findings == [], [f.message for f in outcome.findings]
    assert {(m.gpu, m.metric) for m in outcome.measurements} == {(d.uuid, name) for d in devices for name in METRICS}
    for m in outcome.measurements:
        assert m.value > 0 and m.unit == "GB/s" and m.direction is Direction.HIGHER
        assert m.samples >= pcie.MIN_WINDOWS and m.low <= m.value <= m.high


@pytest.mark.parametrize(("fault", "directions"), [("corrupt", {"h2d"}), ("skew", {"h2d", "bidir"})])
def test_a_bad_copy_is_a_data_mismatch_on_its_device_alone(cpu, fault, directions):
    outcome = run(cpus(2, cpu), {1: parse(f"{fault}:1")})
    found = [(f.code, f.severity, f.gpu, f.details["direction"]) for f in outcome.findings]
    assert sorted(found) == sorted((Code.DATA_MISMATCH, Severity.FAIL, "CPU-1", d) for d in directions)
    assert "copies did not match their source" in outcome.findings[0].message
    assert {m.gpu for m in outcome.measurements} == {"CPU-0", "CPU-1"}  # figures stay: the checks judge


@pytest.mark.slow
def test_a_device_that_hangs_in_its_turn_ends_as_hang_and_the_next_one_still_measures(cpu):
    began = time.monotonic()
    outcome = run(cpus(2, cpu), {0: parse("hang")}, PROFILE.with_overrides(hang_timeout_s=4.0))
    assert time.monotonic() - began < 40
    assert [(f.code, f.severity, f.gpu) for f in outcome.findings] == [(Code.HANG, Severity.FAIL, "CPU-0")]
    assert {m.metric for m in outcome.measurements if m.gpu == "CPU-1"} == METRICS


# -- NUMA placement ---------------------------------------------------------------------


def sysfs(tmp_path, node: str, cpulist: str = "0-3,8-11"):
    device = tmp_path / "bus" / "pci" / "devices" / "0000:19:00.0"
    device.mkdir(parents=True)
    (device / "numa_node").write_text(f"{node}\n")
    listing = tmp_path / "devices" / "system" / "node" / "node1"
    listing.mkdir(parents=True)
    (listing / "cpulist").write_text(f"{cpulist}\n")
    return tmp_path


def test_a_gpu_is_placed_on_its_numa_nodes_cpus_by_nvmls_bus_id(tmp_path):
    found = numa_placement("00000000:19:00.0", sysfs(tmp_path, "1"))
    assert (found.node, sorted(found.cpus)) == (1, [0, 1, 2, 3, 8, 9, 10, 11])
    assert found.describe() == "NUMA node 1 (8 CPUs)"
    assert numa_placement("0000:19:00.0", tmp_path) == found


@pytest.mark.parametrize("bus_id", ["00000000:19:00.0", "00000000:3b:00.0", "", "nonsense"])
def test_no_node_reported_is_said_not_guessed(tmp_path, bus_id):
    found = numa_placement(bus_id, sysfs(tmp_path, "-1"))
    assert found.node is None and found.describe() == "no NUMA node reported: host memory not placed"


def test_the_stand_in_is_not_placed_and_keeps_its_affinity(cpu):
    class Quiet:
        device = cpu

    before = os.sched_getaffinity(0)
    assert pcie.place(Quiet()) == "the CPU stand-in: not placed"
    assert os.sched_getaffinity(0) == before
