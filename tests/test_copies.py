"""The timed, checked copies that the PCIe and NVLink tests share: their GPU code path, run here on
CUDA's streams and events stood in for (tests/fake_cuda.py), and how windows are sized."""

import pytest
import torch

from gputests.work import copies, nvlink, pcie
from harness.workers.devicetest import Context
from tests.fake_cuda import FakeCuda
from tests.helpers import RecordingChannel, gpus, local_context

GPU0, GPU1, HOST = torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cpu")
WORDS = 1 << 12


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    return FakeCuda(monkeypatch)


def test_both_ways_issues_the_two_lanes_copies_in_turn(fake_cuda: FakeCuda):
    there, back = copies.Lane(GPU0, GPU1, WORDS, seed=1), copies.Lane(GPU1, GPU0, WORDS, seed=2)
    fake_cuda.watch(there, "there", 0)
    fake_cuda.watch(back, "back", 1)
    found = copies.window([there, back], 4)
    assert [issued.lane for issued in fake_cuda.issued] == ["there", "back"] * 4  # both ways from the first copy
    assert (found.copies, found.checked, found.bad) == (8, 8, 0)


@pytest.mark.parametrize("count", [3, 7, 20])
def test_every_copy_into_host_memory_is_checked(fake_cuda: FakeCuda, count: int):
    lane = copies.Lane(GPU0, HOST, WORDS, seed=3)
    lane.sources[1].view(torch.int32)[7] += 1  # every copy from the second source now arrives other than expected
    found = copies.window([lane], count)  # copy k comes from source k % 2: the window's last may be a good one
    assert (found.checked, found.bad) == (count, count // 2)


def test_every_copy_between_host_and_device_is_checked_and_issued_on_its_own_stream(fake_cuda: FakeCuda):
    lanes = [copies.Lane(HOST, GPU0, WORDS, seed=4), copies.Lane(GPU0, HOST, WORDS, seed=5)]
    for lane, name in zip(lanes, ("h2d", "d2h"), strict=True):
        lane.sources[0].view(torch.int32)[0] += 1
        fake_cuda.watch(lane, name, 0)
    found = copies.window(lanes, 5)
    assert (found.copies, found.checked, found.bad) == (10, 10, 6)
    for lane, name in zip(lanes, ("h2d", "d2h"), strict=True):  # not its check's side stream, on the same GPU
        assert {id(i.stream) for i in fake_cuda.issued if i.lane == name} == {id(s) for s in lane.copy_streams}


def watch_every_lane(fake: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Lane made from now on is watched, named `source>destination` by GPU index (host: h)."""
    made = copies.Lane.__init__

    def init(self, source, destination, nbytes, **kwargs):
        made(self, source, destination, nbytes, **kwargs)
        ends = [str(d.index) if d.type == "cuda" else "h" for d in (source, destination)]
        fake.watch(self, ">".join(ends), source.index if source.type == "cuda" else destination.index)

    monkeypatch.setattr(copies.Lane, "__init__", init)


@pytest.mark.parametrize("both_ways", [False, True])
def test_a_pair_copies_on_several_streams_each_way(fake_cuda: FakeCuda, monkeypatch, both_ways):
    watch_every_lane(fake_cuda, monkeypatch)
    own, peer = gpus(2)
    context = Context(RecordingChannel(), own, None, (own, peer))  # type: ignore[arg-type]
    job = nvlink.Job(nbytes=WORDS, seconds=0.0, warmup_s=0.0)
    copied = nvlink.copy_pair(context, peer, both_ways, job, fault=False)
    assert copied.bad == 0 and copied.checked > 0
    for name, gpu in [("0>1", 0)] + ([("1>0", 1)] if both_ways else []):
        streams = {id(i.stream) for i in fake_cuda.issued if i.lane == name}
        assert 2 <= len(streams) <= 4, name  # one copy engine's copy does not fill a pair's links
        assert all(i.stream is not None and i.stream.device.index == gpu for i in fake_cuda.issued if i.lane == name)


def slow_first_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """`copies.window` made to take 1 s for the first copies on new lanes (peer access being enabled,
    pages faulted in) and 1 ms a copy after; the copies asked of each window, in order."""
    asked: list[int] = []

    def window(lanes, count, *, fault=None):
        first = all(lane.count == 0 for lane in lanes)
        for lane in lanes:
            lane.count += count
        asked.append(count)
        total = count * len(lanes)
        return copies.Window(seconds=1.0 if first else 0.001 * count, copies=total, nbytes=total, checked=total, bad=0)

    monkeypatch.setattr(copies, "window", window)
    return asked


def test_nvlink_windows_are_sized_from_warm_copies_not_the_first(monkeypatch, cpu):
    asked = slow_first_copies(monkeypatch)
    context, _ = local_context()
    peer = cpu.__class__(index=1, kind="cpu", name=cpu.name, uuid="CPU-peer", sm_count=1)
    nvlink.copy_pair(context, peer, True, nvlink.Job(nbytes=WORDS, seconds=0.0, warmup_s=0.0), fault=False)
    assert asked[-nvlink.MIN_WINDOWS :] == [round(nvlink.WINDOW_S / 0.001)] * nvlink.MIN_WINDOWS


def test_pcie_windows_are_sized_from_warm_copies_not_the_first(monkeypatch):
    asked = slow_first_copies(monkeypatch)
    lane = copies.Lane(HOST, HOST, WORDS, seed=1)
    pcie.measure("h2d", [lane], pcie.Job(nbytes=WORDS, seconds=0.0, warmup_s=0.0))
    assert asked[-pcie.MIN_WINDOWS :] == [round(pcie.WINDOW_S / 0.001)] * pcie.MIN_WINDOWS
