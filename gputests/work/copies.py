"""Timed, verified copies between two memories: what the PCIe and NVLink tests share (worker side).

A `Lane` copies one way, on `streams` streams at once (one copy engine's copy between
two GPUs does not fill their NVLink links, and a link or two lost would then not show
in the figure): from two source buffers, filled with different patterns, into a ring of
2 x streams + 1 destination buffers, copy k taking source k % 2 into destination
k % ring on stream k % streams. The ring is odd, so each destination receives the two
patterns in turn: a copy that skipped a block leaves the other pattern's bytes behind,
and a check that reads the destination tells the two apart. The check is the sum of
the destination's 32-bit words as an int64 (exact, and every word positive, so a lost
or changed word changes it), compared with the sum of the source it came from.
Every copy is checked:

- into device memory, on a side stream of the destination GPU after its copy,
  overlapping the next copies; a copy waits only for the check of the copy a ring
  before it into the same buffer (a read at memory speed, several times shorter than a
  copy over PCIe or NVLink, so on a healthy GPU the wait is empty). Between two GPUs
  that side stream is also the destination's current stream while the copy is issued:
  torch orders a copy between GPUs after the destination's current stream and that
  stream after the copy, and with the destination's default stream there every copy
  into a GPU would wait for the one before, whatever its stream;
- into host memory, on the host: summing host memory is slower than the copy, so a
  window runs in bursts of one ring of copies, timed, and the host checks each copy
  of a burst between bursts, outside the time.

The lanes of a window (both ways at once) are issued in turn, copy by copy, so that
they start together and share the window: issued one lane after the other, the first
lane would run alone while the second was still being issued, and both ways would
read low. Copies run on the source GPU's streams (as torch runs copies between GPUs),
else on the one GPU's. A window is timed with CUDA events from its start to the end of
its last copy in every lane.

`measure` sizes windows from warm copies: the first copies between two GPUs enable
peer access, and the first into pinned memory fault its pages in.

On the CPU stand-in the same code runs with the host's clock and no streams: copies
happen as issued, and every copy is checked on the host between bursts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

SOURCES = 2
_WORD_MASK = (1 << 30) - 1

Fault = Callable[[torch.Tensor], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window:
    seconds: float
    """Time of the window's copies (CUDA events, or the wall clock on the CPU), checks on the host left out."""
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

    def __init__(self, source: torch.device, destination: torch.device, nbytes: int, *, seed: int, streams: int = 1):
        if nbytes % 4:
            raise ValueError(f"copies are whole 32-bit words; {nbytes} bytes is not")
        if streams < 1:
            raise ValueError(f"a lane needs at least one stream, not {streams}")
        self.nbytes = nbytes
        self.on_gpu = "cuda" in (source.type, destination.type)
        self.sources = [_buffer(source, nbytes, pinned=self.on_gpu) for _ in range(SOURCES)]
        self.ring = [_buffer(destination, nbytes, pinned=self.on_gpu) for _ in range(2 * streams + 1)]
        for i, buffer in enumerate(self.sources):
            fill(buffer, seed + i)
        self.expected = [int(checksum(s).item()) for s in self.sources]
        for buffer in self.ring:
            buffer.zero_()
        self.in_host = destination.type != "cuda"
        """Checked on the host, between bursts; else on the destination GPU, beside the copies."""
        self.between_gpus = source.type == destination.type == "cuda"
        """Its side streams are the destination's current streams while copies are issued."""
        clock = _clock(self.on_gpu)
        self.copy_streams = [clock.stream(_gpu_of(source, destination)) for _ in range(streams)]
        self.side_streams = [None if self.in_host else clock.stream(destination) for _ in range(streams)]
        self.checked_events: list[Any] = [None] * len(self.ring)
        """Per destination, its last check's end: the next copy into it waits for it."""
        self.count = 0
        for device in {source, destination}:  # the fills and zeroing ran on the default streams: done before copies
            clock.settle(device)

    @property
    def streams(self) -> int:
        return len(self.copy_streams)


def window(lanes: Sequence[Lane], copies: int, *, fault: Fault | None = None) -> Window:
    """`copies` copies in every lane, issued in turn and timed together, every one checked.

    `fault` (the test's fault point) is called with the destination of the first
    lane's first copy, after the copy and before its check.
    """
    clock = _clock(lanes[0].on_gpu)
    burst = min((len(lane.ring) for lane in lanes if lane.in_host), default=copies)
    seconds, bad, done = 0.0, 0, 0
    on_device: list[tuple[Lane, int, torch.Tensor]] = []
    while done < copies:
        count = min(burst, copies - done)
        span, in_host = _burst(clock, lanes, count, fault if done == 0 else None, on_device)
        seconds += span
        for lane, k, hit in in_host:
            destination = lane.ring[k % len(lane.ring)]
            if hit is not None:
                hit(destination)
            bad += int(checksum(destination).item()) != lane.expected[k % SOURCES]
        done += count
    for lane in lanes:
        for side in lane.side_streams:
            clock.synchronize(side)
    found = torch.stack([s.cpu() for _, _, s in on_device]).tolist() if on_device else []
    bad += sum(value != lane.expected[k % SOURCES] for (lane, k, _), value in zip(on_device, found, strict=True))
    made = copies * len(lanes)
    nbytes = copies * sum(lane.nbytes for lane in lanes)
    return Window(seconds=max(seconds, 1e-9), copies=made, nbytes=nbytes, checked=made, bad=bad)


def _burst(
    clock: _Clock,
    lanes: Sequence[Lane],
    count: int,
    fault: Fault | None,
    on_device: list[tuple[Lane, int, torch.Tensor]],
) -> tuple[float, list[tuple[Lane, int, Fault | None]]]:
    """`count` copies in every lane, issued in turn, timed from the first to the last: their seconds,
    and the copies into host memory, to check. Checks of copies into device memory are queued."""
    lead = lanes[0].copy_streams[0]
    start = clock.mark(lead)
    for lane in lanes:
        for stream in lane.copy_streams:
            clock.wait(stream, start)
    in_host: list[tuple[Lane, int, Fault | None]] = []
    for n in range(count):
        for lane in lanes:
            hit = fault if n == 0 and lane is lanes[0] else None
            k = _issue(clock, lane)
            if lane.in_host:
                in_host.append((lane, k, hit))
            else:
                on_device.append((lane, k, _check_on_side(clock, lane, k, hit)))
    for lane in lanes:
        for stream in lane.copy_streams:
            clock.wait(lead, clock.mark(stream))
    stop = clock.mark(lead)
    return clock.seconds(start, stop), in_host


def _issue(clock: _Clock, lane: Lane) -> int:
    """Queue copy k of the lane, after the last check of its destination; returns k."""
    k = lane.count
    lane.count += 1
    s, d = k % lane.streams, k % len(lane.ring)
    stream, side = lane.copy_streams[s], lane.side_streams[s]
    if lane.checked_events[d] is not None:
        clock.wait(stream, lane.checked_events[d])
    with clock.using(stream, side if lane.between_gpus else None):
        lane.ring[d].copy_(lane.sources[k % SOURCES], non_blocking=True)
    return k


def _check_on_side(clock: _Clock, lane: Lane, k: int, fault: Fault | None) -> torch.Tensor:
    """The checksum of copy k's destination, on its side stream, after the copy just queued."""
    s, d = k % lane.streams, k % len(lane.ring)
    side = lane.side_streams[s]
    clock.wait(side, clock.mark(lane.copy_streams[s]))
    with clock.using(side):
        if fault is not None:
            fault(lane.ring[d])
        found = checksum(lane.ring[d])
    lane.checked_events[d] = clock.mark(side)
    return found


# -- sizing and timing windows ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measured:
    windows: tuple[Window, ...]
    """The timed windows."""
    checked: int
    """Every copy checked, the untimed ones (warm-up, calibration) too."""
    bad: int

    @property
    def gbps(self) -> tuple[float, ...]:
        return tuple(round(w.gbps, 3) for w in self.windows)

    @property
    def copies(self) -> int:
        return sum(w.copies for w in self.windows)


def per_window(lanes: Sequence[Lane], window_s: float) -> tuple[int, list[Window]]:
    """Copies per lane for a window of about `window_s`, from a window of warm copies; and the
    untimed windows it ran (a warm-up, which enables peer access and faults pinned pages in,
    then the calibration), whose checks still count."""
    ring = max(len(lane.ring) for lane in lanes)
    warm = window(lanes, ring)
    calibration = window(lanes, ring)
    per_copy = calibration.seconds / ring
    return max(1, round(window_s / max(per_copy, 1e-9))), [warm, calibration]


def measure(
    lanes: Sequence[Lane],
    *,
    seconds: float,
    warmup_s: float,
    window_s: float,
    min_windows: int,
    fault: Fault | None = None,
    progress: Callable[[Window, int], None] = lambda found, bad: None,
) -> Measured:
    """Windows of about `window_s` for `seconds` (at least `min_windows`), after the sizing and
    `warmup_s` of untimed ones; `fault` goes into the first timed window, `progress` hears of each."""
    count, untimed = per_window(lanes, window_s)
    began = time.monotonic()
    while time.monotonic() - began < warmup_s:
        untimed.append(window(lanes, count))
    timed: list[Window] = []
    began = time.monotonic()
    while len(timed) < min_windows or time.monotonic() - began < seconds:
        timed.append(window(lanes, count, fault=None if timed else fault))
        progress(timed[-1], sum(w.bad for w in untimed + timed))
    every = untimed + timed
    return Measured(windows=tuple(timed), checked=sum(w.checked for w in every), bad=sum(w.bad for w in every))


# -- the clocks ------------------------------------------------------------------------------


class _Clock:
    """Streams and their marks: CUDA streams and events on a GPU (`_Cuda`); on the CPU stand-in
    (`_Host`), none, and the wall clock."""

    def stream(self, device: torch.device) -> Any:
        return None

    def mark(self, stream: Any) -> Any:
        return time.perf_counter()

    def wait(self, stream: Any, mark: Any) -> None:
        pass

    @contextlib.contextmanager
    def using(self, *streams: Any) -> Iterator[None]:
        yield

    def synchronize(self, stream: Any) -> None:
        pass

    def settle(self, device: torch.device) -> None:
        """Wait for everything queued on the device."""

    def seconds(self, start: Any, stop: Any) -> float:
        return float(stop - start)


_Host = _Clock


class _Cuda(_Clock):
    def stream(self, device: torch.device) -> Any:
        return torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped

    def mark(self, stream: Any) -> Any:
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped
        stream.record_event(event)
        return event

    def wait(self, stream: Any, mark: Any) -> None:
        stream.wait_event(mark)

    @contextlib.contextmanager
    def using(self, *streams: Any) -> Iterator[None]:
        """Each stream current on its own GPU for the block."""
        with contextlib.ExitStack() as stack:
            for stream in streams:
                if stream is not None:
                    stack.enter_context(torch.cuda.stream(stream))
            yield

    def synchronize(self, stream: Any) -> None:
        if stream is not None:
            stream.synchronize()

    def settle(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def seconds(self, start: Any, stop: Any) -> float:
        stop.synchronize()
        return float(start.elapsed_time(stop)) / 1000.0


def _clock(on_gpu: bool) -> _Clock:
    return _Cuda() if on_gpu else _Host()


def _buffer(device: torch.device, nbytes: int, *, pinned: bool) -> torch.Tensor:
    if device.type == "cpu":
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    return torch.empty(nbytes, dtype=torch.uint8, device=device)


def _gpu_of(source: torch.device, destination: torch.device) -> torch.device:
    """Copies run on the source GPU's stream (as torch runs copies between GPUs), else the destination's."""
    return source if source.type == "cuda" else destination
