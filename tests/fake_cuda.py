"""CUDA's streams and events stood in for on the CPU, so that the copies' GPU code path runs here.

Work runs when it is issued, so every stream order and event wait the code asks for
holds trivially; what the fake keeps is what the code asked for: on which stream each
copy was issued, and in which order. Buffers asked for on a GPU are host tensors,
pinned memory is plain memory, and every GPU can reach every other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch


class Event:
    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.at: float | None = None

    def record(self, stream: Stream | None = None) -> None:
        self.at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: Event) -> float:
        assert self.at is not None and end.at is not None, "an event read before it was recorded"
        return (end.at - self.at) * 1000.0


class Stream:
    def __init__(self, device: Any = None, priority: int = 0):
        self.device = torch.device(device) if device is not None else torch.device("cuda", 0)

    def record_event(self, event: Event | None = None) -> Event:
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        assert event.at is not None, "a stream waits for an event never recorded"

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class Issued:
    """One copy as the code issued it."""

    lane: str
    buffer: int
    stream: Stream | None
    """The current stream of the GPU that runs the copy (the source GPU, or the one GPU of a host copy)."""


class FakeCuda:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.current: dict[int, Stream] = {}
        self.issued: list[Issued] = []
        real_empty = torch.empty

        def empty(*args: Any, device: Any = None, pin_memory: bool = False, **kwargs: Any) -> torch.Tensor:
            return real_empty(*args, **kwargs)

        monkeypatch.setattr(torch, "empty", empty)
        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "Event", Event)
        monkeypatch.setattr(torch.cuda, "stream", self.stream)
        monkeypatch.setattr(torch.cuda, "can_device_access_peer", lambda a, b: True)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    @contextlib.contextmanager
    def stream(self, stream: Stream | None) -> Iterator[None]:
        if stream is None:
            yield
            return
        index = stream.device.index or 0
        before = self.current.get(index)
        self.current[index] = stream
        try:
            yield
        finally:
            if before is None:
                del self.current[index]
            else:
                self.current[index] = before

    def watch(self, lane: Any, name: str, gpu: int) -> None:
        """Record each copy into `lane`'s destinations, with the current stream of GPU `gpu`."""
        for i, buffer in enumerate(lane.ring):
            real = buffer.copy_

            def copy(source: torch.Tensor, non_blocking: bool = False, *, _i: int = i, _real: Any = real) -> Any:
                self.issued.append(Issued(lane=name, buffer=_i, stream=self.current.get(gpu)))
                return _real(source, non_blocking=non_blocking)

            buffer.copy_ = copy
