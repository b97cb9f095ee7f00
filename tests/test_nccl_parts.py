"""The all-reduce's parts that need no ranks of their own: bandwidth as nccl-tests defines it,
the exact check, the pairwise search as a pure function, NCCL's log, the process group's
settings, the subgroups `Measure` makes, and the baselines' all-reduce sections."""

import datetime as dt

import pytest
import torch
import torch.distributed as dist

from gputests.work import nccl, nccl_log, nccl_run, pairwise
from harness import baselines, distributed
from harness import team as teams
from harness.profiles import quick
from harness.records import Code, Remediation, Severity
from harness.workers.devicetest import Outcome, Scope
from tests.helpers import gpus, local_context

# -- bandwidth as nccl-tests defines it ------------------------------------------------------


def test_busbw_matches_a_line_of_nccl_tests_output():
    # ../shared/data/nccl-tests/a3mega_2node_16xH100_all_reduce_perf.txt, 16 ranks:
    # 8589934592 B in 47535 us: algbw 180.71 GB/s, busbw 338.82 GB/s (= 180.71 x 2 x 15 / 16).
    algbw, busbw = nccl_run.bandwidth(8589934592, 47535e-6, 16)
    assert algbw == pytest.approx(180.71, abs=0.01)
    assert busbw == pytest.approx(338.82, abs=0.01)


def test_one_rank_has_no_bus():
    assert nccl_run.bandwidth(1 << 20, 1e-3, 1)[1] == 0.0


def test_metric_names_carry_the_size_and_say_whether_they_span_nodes():
    assert nccl_run.metric_name(8192) == "nccl.allreduce.8gib.busbw"
    assert nccl_run.metric_name(512) == "nccl.allreduce.512mib.busbw"
    assert nccl_run.metric_name(8192, across=True) == "nccl.allreduce.multinode.8gib.busbw"


# -- the exact check -------------------------------------------------------------------------


def _table():
    return torch.tensor([nccl._h(i) for i in range(nccl.PERIOD)], dtype=torch.float32)


def _inputs(world, length):
    table = _table()
    inputs = []
    for position in range(world):
        buf = torch.empty(length)
        nccl.fill(buf, table, position, world)
        inputs.append(buf)
    return inputs


@pytest.mark.parametrize("world", [1, 2, 3, 7, 8])
def test_a_window_stays_exactly_zero_through_many_all_reduces_in_place(world):
    """Every window's result is checked, so it must be exact however many all-reduces run in place:
    the inputs sum to exactly 0 in any order, and zeros sum to zeros (the old inputs grew by a
    factor of `world` with each all-reduce and reached +inf after about 40 with 8 ranks)."""
    inputs = _inputs(world, 3 * nccl.PERIOD + 11)
    for order in (inputs, inputs[::-1]):
        total = torch.zeros_like(order[0])
        for buf in order:
            total += buf
        assert nccl.mismatches(total) == (0, -1)
    held = [buf.clone() for buf in inputs]
    for _ in range(64):  # each all-reduce in place: every rank then holds the sum
        total = torch.stack(held).sum(0)
        held = [total.clone() for _ in held]
    assert nccl.mismatches(held[0]) == (0, -1)
    assert all(buf.abs().max() < 64 for buf in inputs)  # every partial sum is an integer far below 2^24


def test_the_inputs_differ_by_rank_and_position():
    inputs = _inputs(4, 2 * nccl.PERIOD)
    assert all((buf != 0).float().mean() > 0.9 for buf in inputs)
    assert all(not torch.equal(inputs[0], other) for other in inputs[1:])


def test_a_wrong_element_a_lost_rank_and_a_misplaced_block_are_caught():
    inputs = _inputs(3, 2 * nccl.PERIOD + 5)
    total = sum(inputs[1:], inputs[0].clone())
    wrong = total.clone()
    wrong[77] += 1
    assert nccl.mismatches(wrong) == (1, 77)
    lost = inputs[0] + inputs[1]  # rank 2's contribution missing
    bad, _ = nccl.mismatches(lost)
    assert bad > 0.9 * lost.numel()
    shifted = [buf.clone() for buf in inputs]
    shifted[1][100:200] = inputs[1][101:201]  # one rank's block one element off
    bad, first = nccl.mismatches(sum(shifted[1:], shifted[0].clone()))
    assert bad > 50 and first >= 100
    negative_zero = total.clone()
    negative_zero[5] = -0.0
    assert nccl.mismatches(negative_zero) == (1, 5)


# -- the pairwise search, as a pure function -------------------------------------------------


def _measure_with(slow: set[int], fast: float = 10.0, slowed: float = 4.0):
    calls = []

    def measure(pairs):
        calls.append(list(pairs))
        return [slowed if set(p) & slow else fast for p in pairs]

    return measure, calls


@pytest.mark.parametrize(("count", "slow"), [(4, {2}), (4, {0}), (5, {4}), (8, {3, 6}), (3, {1})])
def test_the_search_names_exactly_the_slow_members(count, slow):
    measure, calls = _measure_with(slow)
    found = pairwise.search(count, measure, tolerance=0.8)
    assert set(found.culprits) == slow
    assert set(found.cleared) == set(range(count)) - slow
    assert not found.unresolved
    assert all(len({m for p in pairs for m in p}) == 2 * len(pairs) for pairs in calls)  # disjoint at once


def test_a_uniformly_slow_fabric_names_no_one():
    measure, _ = _measure_with(set(), fast=3.0)
    assert pairwise.search(6, measure, tolerance=0.8).culprits == ()


def test_two_members_cannot_tell_which_one_is_slow():
    measure, _ = _measure_with({1})
    found = pairwise.search(2, measure, tolerance=0.8)
    assert found.culprits == ()


def test_the_tolerance_must_be_a_share():
    with pytest.raises(ValueError):
        pairwise.search(4, lambda pairs: [1.0] * len(pairs), tolerance=1.5)


# -- NVLS, from NCCL's own log ---------------------------------------------------------------

# Real lines. The set-up lines of NCCL 2.27/2.28 (github.com/NVIDIA/nccl issues, 8x H100 and 8x H200
# nodes) say only that multicast is available, and a set-up with NCCL_ALGO=ring,tree still logs
# NVLS buffers; the TUNING lines (rank 0 of a communicator) name the algorithm of each all-reduce
# (8x H100, NCCL 2.30.7; 8x H200).
INIT_AVAILABLE = (
    "gpu49:65234:65290 [0] NCCL INFO NVLS multicast support is available on dev 0 (NVLS_NCHANNELS 16)\n"
    "gpu49:65234:65290 [0] NCCL INFO comm 0x55d0c8a3e2f0 rank 0 nRanks 8 nNodes 1 localRanks 8 localRank 0 MNNVL 0\n"
)
INIT_BUFFERS_ONLY = (
    "gpu-dev-b5985af4:1796:1796 [0] NCCL INFO NVLS comm 0x5586728a4850 headRank 0 nHeads 8 nvlsRanks 8 "
    "buffSize 1048576 nvlsPerRankSize 33554432 nvlsTotalSize 268435456\n"
    "gpu-dev-b5985af4:1796:1796 [0] NCCL INFO NCCL_ALGO set by environment to ring,tree\n"
)
TUNING_RING = (
    "NCCL INFO AllReduce: 4096 Bytes -> Algo RING proto LL channel{Lo..Hi}={0..0}\n"
    "NCCL INFO AllReduce: 8388608 Bytes -> Algo Ring proto LL128 channel{Lo..Hi}={0..15}\n"
)
TUNING_NVLS = "NCCL INFO AllReduce: 2097152 Bytes -> Algo NVLS proto SIMPLE channel{Lo..Hi}={0..15}\n"
NOT_AVAILABLE = (
    "ip-172-31-3-153:35115:35469 [2] NCCL INFO NVLS multicast support is not available on dev 2 (NVLS_NCHANNELS 0)\n"
)


@pytest.mark.parametrize(
    ("log", "said"),
    [
        (INIT_AVAILABLE + TUNING_RING + TUNING_NVLS, "yes"),
        (INIT_AVAILABLE + TUNING_RING, "no"),  # available, never chosen: NVLS not in use
        (INIT_BUFFERS_ONLY + TUNING_RING, "no"),  # buffers set up are not buffers used
        (NOT_AVAILABLE + TUNING_RING, "no"),
        (INIT_AVAILABLE, "unknown"),  # at the join, or on a rank other than its communicator's rank 0
        (INIT_BUFFERS_ONLY, "unknown"),
        ("NCCL INFO AllReduce: 64 Bytes -> Algo 4 proto 0 time 25.207382\n", "yes"),  # older, numbered form
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_nvls_use_is_read_from_the_algorithm_nccl_chose(log, said):
    assert nccl_log.nvls_use(log) == said


class _Run:
    """Stands in for the parent's DeviceRun where only findings and facts are recorded."""

    def __init__(self, backend):
        self.outcome = Outcome(facts={"nccl.backend": backend})

    def finding(self, device, code, severity, text, remediation=Remediation.NONE, *, metric="", **details):
        found = device.finding(code, severity, text, remediation, test="t", metric=metric, **details)
        self.outcome.findings.append(found)


def _after_sweep(nvls, busbw, backend="nccl"):
    """The node's state after an 8 GiB sweep on 8 H100s at `busbw`, NCCL's log saying `nvls`."""
    devices = tuple(gpus(8))
    model = baselines.load_file(baselines.default_dir() / "h100-sxm-80gb.toml")
    scope = Scope(devices=devices, profile=quick(), test="t", group="nccl", baselines={d.uuid: model for d in devices})
    team = teams.Team(
        rendezvous=distributed.Rendezvous(host="", port=0, prefix=""),
        first_rank=0,
        world=8,
        nodes=(("node-a", 8),),
        share=lambda v: [v],
    )
    seconds = nccl_run.bandwidth(8 << 30, 1.0, 8)[1] / busbw  # the time that gives `busbw`
    answer = nccl.Swept(nbytes=8 << 30, seconds=(seconds,) * 5, nvls=nvls)
    state = nccl_run._State(scope=scope, run=_Run(backend), team=team)
    nccl_run._record_nvls(state, {(False, 8192): {d: answer for d in devices}})
    return state.run.outcome


def test_a_board_that_misses_its_floor_without_nvls_is_told_why():
    outcome = _after_sweep("no", busbw=368.0)  # Ring's figure on 8 H100s
    assert outcome.facts["nccl.nvls"] == "no"
    told = [(f.code, f.severity) for f in outcome.findings]
    assert told == [(Code.LOW_THROUGHPUT, Severity.INFO)] * 8
    assert all("NVLink SHARP" in f.message and "fabricmanager" in f.message for f in outcome.findings)


@pytest.mark.parametrize(("nvls", "busbw"), [("yes", 368.0), ("no", 470.0), ("unknown", 368.0)])
def test_nothing_to_say_where_nvls_ran_or_the_floor_was_met(nvls, busbw):
    outcome = _after_sweep(nvls, busbw)
    assert outcome.findings == [] and outcome.facts["nccl.nvls"] == nvls


def test_gloo_has_no_nvls_to_report():
    outcome = _after_sweep("unknown", busbw=1.0, backend="gloo")
    assert outcome.findings == [] and "nccl.nvls" not in outcome.facts


# -- the process group's settings ------------------------------------------------------------


def test_our_limits_decide_before_torchs_and_a_peers_nccl_error_does_not_abort_the_process():
    # torch's default (3) tears a rank down with SIGABRT when NCCL reports a peer's error: the
    # healthy node would read CRASHED. 2 aborts the communicator and raises where the rank waits.
    assert distributed.NCCL_ENV == {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}
    join_limit, limit = 70.0, 120.0
    assert distributed.group_timeout_s(join_limit, limit) >= limit + 30
    assert distributed.group_timeout_s(limit, join_limit) >= limit + 30
    assert distributed.POLL_S[1] <= 1e-3


# -- the subgroups of the pairwise search ------------------------------------------------------


@pytest.fixture
def one_rank_world(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=dt.timedelta(seconds=30))
    yield
    dist.destroy_process_group()


def test_measure_frees_the_groups_it_makes(one_rank_world):
    ctx, sent = local_context()
    job = nccl.Job(
        rendezvous=distributed.Rendezvous(host="", port=0, prefix=""),
        rank=0,
        world=1,
        iterations=2,
        windows=2,
        join_limit_s=30.0,
        limit_s=30.0,
    )
    table = torch.tensor([nccl._h(i) for i in range(nccl.PERIOD)], dtype=torch.float32)
    groups_before = len(dist.distributed_c10d._world.pg_map)
    for _ in range(3):
        timed = nccl._measure(ctx, job, table, nccl.Measure(sets=((0,),), nbytes=1 << 16))
        assert timed.ranks == (0,) and len(timed.seconds) == 2 and timed.bad == 0
        assert timed.checked == 3 * (1 << 14)  # every window, the warm-up's too
    assert len(dist.distributed_c10d._world.pg_map) == groups_before


# -- the packaged baselines' all-reduce sections ---------------------------------------------------


PACKAGED = sorted(baselines.default_dir().glob("*.toml"))


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.name)
def test_no_all_reduce_figure_is_judged_against_the_nodes_best(path):
    """Every rank records the team's one figure: a node tolerance could only fail the healthy
    ranks beside a slow one, which the pairwise search names by itself."""
    model = baselines.load_file(path)
    nccl_specs = [spec for name, spec in model.metrics.items() if name.startswith("nccl.")]
    assert nccl_specs or model.gpus == 1  # a file for lone GPUs has no all-reduce to judge
    assert [spec.name for spec in nccl_specs if spec.node_tolerance is not None] == []


@pytest.mark.parametrize("name", ["h100-sxm-80gb.toml", "h200-141gb.toml"])
def test_an_nvswitch_boards_floors_need_nvls_and_near_its_published_figure(name):
    """~480 GB/s busbw with NVLS on one 8-GPU Hopper node, 365-370 without it (Ring): the floors sit
    between, at 0.85 of the published figure, so a node whose NCCL runs no NVLS fails them."""
    model = baselines.load_file(baselines.default_dir() / name)
    for mib in (4096, 8192):
        spec = model.metrics[nccl_run.metric_name(mib)]
        assert spec.required and 370 < spec.limit <= 0.86 * 480
        assert "github.com/NVIDIA" in spec.provenance.source
    across = [spec for n, spec in model.metrics.items() if ".multinode." in n]
    assert across and not any(spec.required for spec in across)
