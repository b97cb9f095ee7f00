"""Timed, verified copies between two memories: what the PCIe and NVLink tests share (worker side).

A `Lane` copies one way: from two source buffers, filled with different patterns,
into a ring of three destination buffers, copy k taking source k % 2 into
destination k % 3. Each destination therefore receives the two patterns in turn,
so a copy that skipped a block would leave the other pattern's bytes behind, and a
check that reads the destination tells the two apart. The check is the sum of the
destination's 32-bit words as an int64 (exact, and every word positive, so a lost
or changed word changes it), compared with the sum of the source it came from.

On a GPU the copies run back to back on the copy stream and are timed with CUDA
events over a window; each copy that lands in device memory is checked on a side
stream of the destination's GPU, overlapping the next copies; a copy waits only for
the check of the copy three before it into the same buffer (a read at memory speed,
several times shorter than a copy over PCIe or NVLink, so on a healthy GPU the wait
is empty). A copy into host memory is checked on the host after its window, the
window's last copy only: summing host memory is slower than the copy itself.

On the CPU stand-in the copies are synchronous, timed one by one with the wall clock,
and every one is checked between them, outside the time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch

SOURCES = 2
RING = 3
_WORD_MASK = (1 << 30) - 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window:
    seconds: float
    """Time of the window's copies (CUDA events, or the wall clock of each copy on the CPU)."""
    copies: int
    """Copies made, in every lane."""
    nbytes: int
    """Bytes moved, every lane together."""
    checked: int
    bad: int
    """Checked copies whose destination did not match their source."""

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9


def fill(buffer: torch.Tensor, seed: int) -> None:
    """A pattern of positive 32-bit words that differs for every word and every seed."""
    words = buffer.view(torch.int32)
    step = 1 << 24
    for first in range(0, words.numel(), step):
        index = torch.arange(first, min(first + step, words.numel()), dtype=torch.int64, device=words.device)
        pattern = (index * 0x9E3779B1 + seed * 0x85EBCA77).bitwise_and_(_WORD_MASK).add_(1)
        words[first : first + index.numel()].copy_(pattern)


def checksum(buffer: torch.Tensor) -> torch.Tensor:
    """The sum of the buffer's 32-bit words as an int64 scalar tensor, where the buffer lies."""
    return buffer.view(torch.int32).sum(dtype=torch.int64)


class Lane:
    """One direction of copies: sources on one memory, a ring of destinations on another. Host
    memory (the CPU, when a GPU is the other side) is pinned, as DMA over PCIe needs."""

    def __init__(self, source: torch.device, destination: torch.device, nbytes: int, *, seed: int):
        if nbytes % 4:
            raise ValueError(f"copies are whole 32-bit words; {nbytes} bytes is not")
        self.nbytes = nbytes
        self.on_gpu = "cuda" in (source.type, destination.type)
        self.sources = [_buffer(source, nbytes, pinned=self.on_gpu) for _ in range(SOURCES)]
        self.ring = [_buffer(destination, nbytes, pinned=self.on_gpu) for _ in range(RING)]
        for i, buffer in enumerate(self.sources):
            fill(buffer, seed + i)
        self.expected = [int(checksum(s).item()) for s in self.sources]
        for buffer in self.ring:
            buffer.zero_()
        self.device_checked = destination.type == "cuda"
        self.copy_stream = torch.cuda.Stream(device=_gpu_of(source, destination)) if self.on_gpu else None
        self.check_stream = torch.cuda.Stream(device=destination) if self.device_checked else None
        self.checked_events: list[torch.cuda.Event | None] = [None] * RING
        self.count = 0


Fault = Callable[[torch.Tensor], None]


def window(lanes: Sequence[Lane], copies: int, *, fault: Fault | None = None) -> Window:
    """`copies` copies in every lane at once, timed together, then checked.

    `fault` (the test's fault point) is called with the destination of the first
    lane's first checked copy, after the copy and before its check.
    """
    if not lanes[0].on_gpu:
        return _cpu_window(lanes, copies, fault)
    first = lanes[0].copy_stream
    assert first is not None
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    first.record_event(start)
    sums: list[tuple[Lane, int, torch.Tensor]] = []
    ends = []
    for lane in lanes:
        assert lane.copy_stream is not None
        lane.copy_stream.wait_event(start)
        with torch.cuda.stream(lane.copy_stream):
            for n in range(copies):
                k = lane.count
                lane.count += 1
                waited = lane.checked_events[k % RING]
                if waited is not None:
                    lane.copy_stream.wait_event(waited)
                lane.ring[k % RING].copy_(lane.sources[k % SOURCES], non_blocking=True)
                if lane.device_checked:
                    hit = fault if lane is lanes[0] and n == 0 else None
                    sums.append((lane, k % SOURCES, _check_on_side(lane, k % RING, hit)))
            end = torch.cuda.Event()
            lane.copy_stream.record_event(end)
            ends.append(end)
    for end in ends:
        first.wait_event(end)
    first.record_event(stop)
    stop.synchronize()
    for lane in lanes:
        if lane.check_stream is not None:
            lane.check_stream.synchronize()
    bad = sum(int(found.item()) != lane.expected[s] for lane, s, found in sums)
    checked = len(sums)
    for lane in lanes:
        if not lane.device_checked:  # into host memory: the window's last copy, on the host
            k = lane.count - 1
            if fault is not None and lane is lanes[0]:
                fault(lane.ring[k % RING])
            checked += 1
            bad += int(checksum(lane.ring[k % RING]).item()) != lane.expected[k % SOURCES]
    nbytes = copies * sum(lane.nbytes for lane in lanes)
    seconds = start.elapsed_time(stop) / 1000.0
    return Window(seconds=seconds, copies=copies * len(lanes), nbytes=nbytes, checked=checked, bad=bad)


def _check_on_side(lane: Lane, d: int, fault: Fault | None) -> torch.Tensor:
    """The checksum of ring buffer `d`, on the destination's side stream, after the copy just queued."""
    assert lane.check_stream is not None and lane.copy_stream is not None
    copied = torch.cuda.Event()
    lane.copy_stream.record_event(copied)
    lane.check_stream.wait_event(copied)
    with torch.cuda.stream(lane.check_stream):
        if fault is not None:
            fault(lane.ring[d])
        found = checksum(lane.ring[d])
    done = torch.cuda.Event()
    lane.check_stream.record_event(done)
    lane.checked_events[d] = done
    return found


def _cpu_window(lanes: Sequence[Lane], copies: int, fault: Fault | None) -> Window:
    seconds, bad = 0.0, 0
    for n in range(copies):
        for lane in lanes:  # one lane after the other: the stand-in has no copy engines to overlap
            k = lane.count
            lane.count += 1
            destination = lane.ring[k % RING]
            began = time.perf_counter()
            destination.copy_(lane.sources[k % SOURCES])
            seconds += time.perf_counter() - began
            if fault is not None and lane is lanes[0] and n == 0:
                fault(destination)
            bad += int(checksum(destination).item()) != lane.expected[k % SOURCES]
    nbytes = copies * sum(lane.nbytes for lane in lanes)
    checked = copies * len(lanes)
    return Window(seconds=max(seconds, 1e-9), copies=checked, nbytes=nbytes, checked=checked, bad=bad)


def _buffer(device: torch.device, nbytes: int, *, pinned: bool) -> torch.Tensor:
    if device.type == "cpu":
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    return torch.empty(nbytes, dtype=torch.uint8, device=device)


def _gpu_of(source: torch.device, destination: torch.device) -> torch.device:
    """Copies run on the source GPU's stream (as torch runs copies between GPUs), else the destination's."""
    return source if source.type == "cuda" else destination
