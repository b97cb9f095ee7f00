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
