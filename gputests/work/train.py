"""The training test, worker side: train the small transformer, fingerprint every step.

`train()` runs steps for a set time in windows of a few steps. After each step the
device reduces what it produced to a fingerprint (the loss, the gradient norm and a
checksum of the updated parameters per tensor group: gputests/work/train_vote.py),
written into a row of a device buffer; a window's rows reach the host through pinned
memory while the next window computes, so fingerprinting never stalls the device.
With `rerun` (a GPU with no peer of its model in the node) each step runs twice from
the same saved state, and the two fingerprints must be equal. `train()` is a plain
function: the test runs it in one worker per device (`worker`), which after training
may be asked to replay the run up to a step (`Replay`: how a tie between two devices
that disagree is broken), and bench/train_overhead.py calls it directly. The model is
gputests/work/train_model.py; the parent side is gputests/work/train_run.py.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

from gputests.work import matmul
from gputests.work.train_model import AdamW, Model, batches, flops_per_token, tokens_per_step, train_step
from gputests.work.train_vote import Print
from harness.groups import TrainSection
from harness.workers import Message
from harness.workers.devicetest import Context

MIN_WINDOWS = 3
"""Timed windows at the least, however short the duration."""
METRIC = "train.tokens_per_s"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    shape: TrainSection
    """The model, the batch, the optimizer, the window: the profile's section of the test."""
    duration_s: float
    """Timed seconds, after the warm-up."""
    warmup_s: float
    rerun: bool = False
    """Run every step twice from the same state and compare (a GPU with no peer of its model)."""
    fingerprints: bool = True
    """False only for bench/train_overhead.py's bare side."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Started(Message):
    groups: tuple[str, ...]
    """The tensor groups, in the order of each fingerprint's group sums."""
    flops_per_token: float
    tokens_per_step: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rerun(Message):
    """A step whose second run, from the same state, gave another fingerprint."""

    step: int
    """Counted from 1."""
    first: Print
    second: Print


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window(Message):
    first_step: int
    """The step (counted from 1) of the first fingerprint."""
    prints: tuple[Print, ...]
    seconds: float
    """Device time of the window's steps (and their second runs, with `rerun`)."""
    tokens: int
    """Tokens trained on in the window, second runs included."""
    timed: bool
    """False for a warm-up window: its time is not a figure."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trained(Message):
    """Training is over; the worker now waits for a Replay."""

    steps: int
    wall_s: float
    complete: bool = True
    """False when training raised (a PhaseFailed says why): its steps are too few to judge progress."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Replay(Message):
    """Train again from the start up to `step` and send its fingerprint; 0: nothing to replay, finish."""

    step: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Replayed(Message):
    step: int
    print: Print | None
    """The replayed step's fingerprint; None when nothing was asked."""


def configure(device: torch.device) -> None:
    """Deterministic kernels, and attention backends that are deterministic in backward
    (docs/determinism.md): the matmul test's settings, with cuDNN attention off."""
    matmul.configure(device)
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)  # not deterministic; torch skips it in this mode anyway
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(True)
        torch.backends.cuda.matmul.allow_tf32 = False


def train(
    device: torch.device,
    job: Job,
    context: Context | None = None,
    on_window: Callable[[Message], None] | None = None,
    *,
    steps: int | None = None,
    data: torch.Tensor | None = None,
) -> int:
    """Train for the job's time, or exactly `steps` steps (a replay), from the model's fixed start;
    hands each settled window (and each step whose second run differed) to `on_window`.
    `data`: the batches (`batches()` when not given). Returns the number of steps."""
    model = Model(job.shape, device)
    optimizer = AdamW(model)
    stepper = _Stepper(model, optimizer, batches(job.shape, device) if data is None else data, job, context)
    clock = matmul.clock_for(device)
    timed_from = time.monotonic() + job.warmup_s
    pending: list[_Pending] = []
    timed_windows = 0
    step = 0
    while True:
        now = time.monotonic()
        timed = now >= timed_from
        if steps is not None:
            if step >= steps:
                break
        elif timed and now - timed_from >= job.duration_s and timed_windows >= MIN_WINDOWS:
            break
        count = job.shape.window_steps if steps is None else min(job.shape.window_steps, steps - step)
        window = _Pending(first=step, count=count, start=clock.mark(), timed=timed)
        for _ in range(count):
            stepper.step(step)
            step += 1
        window.end = clock.mark()
        stepper.prints.send_to_host(window.first)
        pending.append(window)
        timed_windows += timed
        if len(pending) > 1:  # settle the previous window while this one runs
            _settle(pending.pop(0), clock, stepper.prints, job, on_window)
        if context is not None:
            context.progress(f"step {step}", steps=float(step))
    while pending:
        _settle(pending.pop(0), clock, stepper.prints, job, on_window)
    return step


class _Stepper:
    """One training step and its fingerprint; with `rerun`, the step again from the same state."""

    def __init__(self, model: Model, optimizer: AdamW, data: torch.Tensor, job: Job, context: Context | None):
        self.model, self.optimizer, self.data, self.job, self.context = model, optimizer, data, job, context
        self.prints = _Prints(model, job)
        self.saved = [torch.empty_like(t) for t in optimizer.state()] if job.rerun else []
        self.middle = len(model.names) // 2
        """The group the fault point hands over: a layer in the middle of the model."""

    def step(self, step: int) -> None:
        model, optimizer, context = self.model, self.optimizer, self.context
        if context is not None:
            context.fault_pace()
        tokens = self.data[step % len(self.data)]
        if self.job.rerun:
            torch._foreach_copy_(self.saved, optimizer.state())
            steps_before = optimizer.steps
        loss, norm = train_step(model, optimizer, tokens)
        if context is not None:
            context.fault_point(model.group_params(self.middle))  # after the update, before its fingerprint
        self.prints.record(step, 0, loss, norm)
        if self.job.rerun:
            torch._foreach_copy_(optimizer.state(), self.saved)
            optimizer.steps = steps_before
            loss, norm = train_step(model, optimizer, tokens)
            self.prints.record(step, 1, loss, norm)


@dataclasses.dataclass(kw_only=True)
class _Pending:
    """A window of steps enqueued on the device, not yet read."""

    first: int
    count: int
    start: Any
    timed: bool
    end: Any = None


def _settle(
    window: _Pending, clock: Any, prints: _Prints, job: Job, on_window: Callable[[Message], None] | None
) -> None:
    clock.sync(window.end)
    runs = 2 if job.rerun else 1
    found, reruns = prints.read(window.first, window.count)
    if on_window is None:
        return
    for message in reruns:
        on_window(message)
    on_window(
        Window(
            first_step=window.first + 1,
            prints=found,
            seconds=clock.seconds(window.start, window.end),
            tokens=window.count * runs * tokens_per_step(job.shape),
            timed=window.timed,
        )
    )


class _Prints:
    """Fingerprint rows on the device, two windows of them, read on the host a window later."""

    def __init__(self, model: Model, job: Job):
        self.model = model
        self.job = job
        self.width = 2 + len(model.names)
        runs = 2 if job.rerun else 1
        device = model.params.device
        self.rows = torch.zeros((2, job.shape.window_steps, runs, self.width), dtype=torch.int64, device=device)
        pinned = device.type == "cuda"
        self.host = torch.zeros((2, job.shape.window_steps, runs, self.width), dtype=torch.int64, pin_memory=pinned)
        self.copied: list[Any] = [None, None]

    def record(self, step: int, run: int, loss: torch.Tensor, norm: torch.Tensor) -> None:
        if not self.job.fingerprints:
            return
        row = self.rows[(step // self.job.shape.window_steps) % 2, step % self.job.shape.window_steps, run]
        row[0] = loss.float().view(torch.int32)
        row[1] = norm.float().view(torch.int32)
        self.model.checksums(row[2:])

    def send_to_host(self, first: int) -> None:
        k = (first // self.job.shape.window_steps) % 2
        self.host[k].copy_(self.rows[k], non_blocking=True)
        if self.rows.device.type == "cuda":
            self.copied[k] = torch.cuda.Event()  # type: ignore[no-untyped-call]  # torch leaves it untyped
            self.copied[k].record()

    def read(self, first: int, count: int) -> tuple[tuple[Print, ...], list[Rerun]]:
        k = (first // self.job.shape.window_steps) % 2
        if self.copied[k] is not None:
            self.copied[k].synchronize()
        if not self.job.fingerprints:
            return (), []
        values = self.host[k].tolist()
        prints, reruns = [], []
        for i in range(count):
            runs = [_print(row) for row in values[i]]
            prints.append(runs[0])
            if len(runs) > 1 and runs[1] != runs[0]:
                reruns.append(Rerun(step=first + i + 1, first=runs[0], second=runs[1]))
        return tuple(prints), reruns


def _print(row: list[int]) -> Print:
    return Print(loss_bits=row[0] & 0xFFFFFFFF, grad_norm_bits=row[1] & 0xFFFFFFFF, groups=tuple(row[2:]))


def worker(context: Context, job: Job) -> None:
    """Runs in one worker per device: train, sending the fingerprints a window at a time."""
    device = context.torch_device
    configure(device)
    shape = job.shape
    context.send(
        Started(
            groups=Model.group_names(shape),
            flops_per_token=flops_per_token(shape),
            tokens_per_step=tokens_per_step(shape),
        )
    )
    data = batches(shape, device)
    context.fault_input(data)  # `skew`: a consistently wrong input, so this device trains differently, replays too
    began = time.monotonic()
    steps, complete = 0, False
    with context.phase("train", metric=METRIC):  # an error (out of memory, no kernel) is named, and the replay goes on
        steps = train(device, job, context, on_window=context.send, data=data)
        complete = True
    context.send(Trained(steps=steps, wall_s=time.monotonic() - began, complete=complete))
    request = context.recv(Replay)
    if request.step < 1:
        context.send(Replayed(step=0, print=None))
        return
    # Two devices that disagree with no majority: train again up to the step where they parted. A device
    # whose second run differs from its first has an intermittent fault, and the tie is broken.
    got: list[Message] = []
    with context.phase("replay", metric=METRIC):
        train(
            device, dataclasses.replace(job, warmup_s=0.0), context, on_window=got.append, steps=request.step, data=data
        )
    prints = [p for m in got if isinstance(m, Window) for p in m.prints]
    context.send(Replayed(step=request.step, print=prints[request.step - 1] if len(prints) >= request.step else None))
