"""A toy device test on the scaffolding, worker and parent side, for tests/test_devicetest.py.

It has the shape of the memory test to come: fill a buffer, check it, report a
figure per phase, and count bad words; nothing in it deals with processes,
limits or faults beyond marking its fault points.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from harness.records import Code, Direction, Remediation, Severity
from harness.workers import Message
from harness.workers.devicetest import Context, DeviceRun, NotSupported, Outcome, Scope

FILL = 0x5A5A5A5A


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    phases: tuple[str, ...]
    words: int = 4096
    windows: int = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Figure(Message):
    phase: str
    windows: tuple[float, ...]
    bad_words: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checked(Message):
    pass


def worker(context: Context, job: Job) -> None:
    for phase in job.phases:
        with context.phase(phase, metric=f"memory.{phase}.gbps"):
            if phase == "unsupported":
                raise NotSupported("this toy device has no such mode")
            if phase == "broken":
                raise ValueError("a CUDA error, say")
            data = torch.full((job.words,), FILL, dtype=torch.int32, device=context.torch_device)
            context.fault_input(data)
            windows, bad = [], 0
            for n in range(job.windows):
                began = time.perf_counter()
                data.fill_(FILL)
                context.fault_point(data)
                bad += int((data != FILL).sum())
                windows.append(data.numel() * 4 / max(time.perf_counter() - began, 1e-9) / 1e9)
                context.progress(f"{phase} window {n}", gbps=windows[-1])
            context.send(Figure(phase=phase, windows=tuple(windows), bad_words=bad))
    context.send(Checked())


def run(scope: Scope, job: Job) -> Outcome:
    with DeviceRun(scope, worker, [job] * len(scope.devices), busy_s=1.0) as device_run:
        figures = [(d, m) for d, m in device_run.messages(until=Checked) if isinstance(m, Figure)]
    for device, figure in figures:
        metric = f"memory.{figure.phase}.gbps"
        device_run.measure(device, metric, figure.windows, "GB/s", Direction.HIGHER)
        if figure.bad_words:
            text = f"{figure.bad_words} bad words in {figure.phase}"
            device_run.finding(device, Code.DATA_MISMATCH, Severity.FAIL, text, Remediation.REPLACE_GPU, metric=metric)
    return device_run.outcome


# -- turns: one device at a time, the others waiting (DeviceRun.ask) ------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurnJob:
    hold_s: float
    out_of_turn: bool = False
    """Send a result before being asked: a bug the scaffolding must name."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Waiting(Message):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class Go(Message):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class Took(Message):
    started: float
    ended: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finished(Message):
    pass


def turn_worker(context: Context, job: TurnJob) -> None:
    context.send(Waiting())
    if job.out_of_turn:  # once the parent has moved on to the first device's turn
        time.sleep(1.0)
        context.send(Took(started=0.0, ended=0.0))
    context.recv(Go, waiting="waiting for its turn")
    started = time.time()
    while time.time() - started < job.hold_s:
        context.progress("holding")
        time.sleep(0.2)
    context.fault_point()
    context.send(Took(started=started, ended=time.time()))
    context.send(Finished())


def run_turns(scope: Scope, jobs: list[TurnJob]) -> tuple[list[tuple[str, Message]], Outcome]:
    """Each device's turn in order; returns what each sent back, by UUID."""
    answers: list[tuple[str, Message]] = []
    with DeviceRun(scope, turn_worker, jobs, busy_s=sum(j.hold_s for j in jobs)) as device_run:
        for _ in device_run.messages(until=Waiting):
            pass
        for device in scope.devices:
            answers += [(device.uuid, m) for m in device_run.ask(device, Go(), until=Finished)]
    return answers, device_run.outcome
