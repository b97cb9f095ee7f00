"""The matmul burn, worker side: the measuring code, which runs inside a device worker.

`burn()` multiplies two fixed matrices over and over for a set time, times each
window of products, and compares every product bitwise with the first one. It is
a plain function: the test runs it in one worker per GPU (`worker`), and
bench/matmul_overhead.py calls it directly. How the product is made bitwise
reproducible is in docs/determinism.md. The parent side is gputests/work/matmul_run.py.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from harness.workers import Message
from harness.workers.devicetest import Context, NotSupported

DEFAULT_SEED = 20261127
MIN_WINDOWS = 3
FP8_FAST_ACCUM = True
_BITS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    dtypes: tuple[str, ...]
    size: int
    ring: int
    duration_s: float
    """Timed seconds per dtype, after its warm-up."""
    warmup_s: float
    seed: int = DEFAULT_SEED


@dataclasses.dataclass(frozen=True, kw_only=True)
class Burned(Message):
    """Every dtype is done; the worker now waits for a RowsRequest."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowsRequest(Message):
    rows: Mapping[str, Sequence[int]]
    """Per dtype, the rows of the first product the parent wants, to count differences exactly."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rows(Message):
    rows: Mapping[str, bytes]


def metric_name(dtype: str) -> str:
    return f"matmul.{dtype}.tflops"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BurnResult(Message):
    dtype: str
    size: int
    flops_per_window: float
    windows: list[float]
    """TFLOP/s of each timed window, in order; warm-up windows are not included."""
    warmup_windows: int
    results_checked: int
    """Products compared with the first one, warm-up included."""
    bad_results: int
    bad_elements: int
    ref_nonfinite: int
    """NaN or Inf elements in the first product (inputs are finite and small)."""
    wall_s: float
    """Wall time of the timed phase, verification included."""
    fingerprints: bytes
    """Per-row int64 fingerprints of the first product, for comparison across GPUs."""

    @property
    def tflops(self) -> float:
        return statistics.median(self.windows)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.fingerprints).hexdigest()


def burn(
    device: torch.device,
    dtype: str,
    *,
    size: int,
    ring: int,
    duration_s: float,
    warmup_s: float,
    seed: int = DEFAULT_SEED,
    context: Context | None = None,
    report_s: float = 0.5,
) -> tuple[BurnResult, torch.Tensor]:
    """Burn one dtype; returns the result and the first product (the reference).

    Windows of `ring` products alternate between two sets of outputs, so a window's
    products are still there when its check is read, one window later, while the
    next window computes: the check never stalls the GPU. With a `context` (in a
    worker) it reports progress and marks its fault points."""
    multiply, ref = _operands(device, dtype, size, seed, context)
    multiply(ref)
    checker = _Checker(ref, ring)
    clock = clock_for(device)
    flops = 2.0 * size**3 * ring
    tally = _Tally()
    pending: collections.deque[_Window] = collections.deque()
    began = time.monotonic()
    timed_from = began + warmup_s
    last_report = began
    count = 0
    while True:
        now = time.monotonic()
        timed = now >= timed_from
        if (
            timed
            and now - timed_from >= duration_s
            and len(tally.windows) + sum(w.timed for w in pending) >= MIN_WINDOWS
        ):
            break
        outs = checker.outputs(count)
        start = clock.mark()
        for out in outs:
            multiply(out)
        end = clock.mark()
        if context is not None:
            context.fault_point(outs[0])
        checker.check(count)
        pending.append(_Window(start=start, end=end, timed=timed, number=count))
        count += 1
        while len(pending) > 1:  # settle the previous window while this one runs
            tally.settle(clock, checker, pending.popleft(), flops)
        if context is not None and now - last_report >= report_s:
            figures = {"tflops": tally.windows[-1]} if tally.windows else {}
            context.progress(f"{dtype} window {count}", **figures, bad=float(tally.bad_results))
            last_report = now
    while pending:
        tally.settle(clock, checker, pending.popleft(), flops)
    wall = time.monotonic() - max(timed_from, began)
    result = BurnResult(
        dtype=dtype,
        size=size,
        flops_per_window=flops,
        windows=tally.windows,
        warmup_windows=tally.warm,
        results_checked=count * ring,
        bad_results=tally.bad_results,
        bad_elements=tally.bad_elements,
        ref_nonfinite=int((~torch.isfinite(ref)).sum().item()),
        wall_s=wall,
        fingerprints=row_fingerprints(ref),
    )
    return result, ref


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Window:
    start: Any
    end: Any
    timed: bool
    number: int


class _Checker:
    """Checks every product against the first, on the device, for a few percent of the GEMM time.

    Each product's rows are summed as 64-bit words (one read of the product, a
    reduction that wraps exactly, so any single flipped bit changes its row's sum)
    and compared with the first product's row sums; the bad-row counts of a window
    go to host memory without stalling the stream. Only a product that disagrees is
    compared element by element, for an exact count (docs/determinism.md)."""

    def __init__(self, ref: torch.Tensor, ring: int):
        self.ref = ref
        self.word = _word_type(ref)
        self.ref_sums = self._words(ref).sum(dim=1)
        self.rings = [[torch.empty_like(ref) for _ in range(ring)] for _ in range(2)]
        self.sums = torch.empty((ring, ref.shape[0]), dtype=torch.int64, device=ref.device)
        self.bad_rows = [torch.zeros(ring, dtype=torch.int64, device=ref.device) for _ in range(2)]
        pinned = ref.device.type == "cuda"
        self.host = [torch.zeros(ring, dtype=torch.int64, pin_memory=pinned) for _ in range(2)]
        self.copied: list[Any] = [None, None]

    def outputs(self, number: int) -> list[torch.Tensor]:
        return self.rings[number % 2]

    def check(self, number: int) -> None:
        k = number % 2
        for i, out in enumerate(self.rings[k]):
            torch.sum(self._words(out), dim=1, out=self.sums[i])
        torch.sum(torch.ne(self.sums, self.ref_sums), dim=1, out=self.bad_rows[k])
        self.host[k].copy_(self.bad_rows[k], non_blocking=True)
        if self.ref.device.type == "cuda":
            self.copied[k] = torch.cuda.Event()  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped
            self.copied[k].record()

    def bad_rows_of(self, number: int) -> list[int]:
        """Per product of a checked window, how many of its rows disagree with the first product."""
        k = number % 2
        if self.copied[k] is not None:
            self.copied[k].synchronize()
        return [int(n) for n in self.host[k].tolist()]

    def bad_elements(self, number: int, product: int) -> int:
        elements = _BITS[self.ref.dtype]
        out = self.rings[number % 2][product]
        return int(torch.ne(out.view(elements), self.ref.view(elements)).sum().item())

    def _words(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(self.word)


class _Tally:
    """What the settled windows add up to."""

    def __init__(self) -> None:
        self.windows: list[float] = []
        self.warm = 0
        self.bad_results = 0
        self.bad_elements = 0

    def settle(self, clock: Any, checker: _Checker, window: _Window, flops: float) -> None:
        clock.sync(window.end)
        if window.timed:
            self.windows.append(flops / max(clock.seconds(window.start, window.end), 1e-9) / 1e12)
        else:
            self.warm += 1
        for product, rows in enumerate(checker.bad_rows_of(window.number)):
            if rows:
                self.bad_results += 1
                self.bad_elements += checker.bad_elements(window.number, product)


def _word_type(product: torch.Tensor) -> torch.dtype:
    """The widest integer word that tiles a row of the product exactly."""
    row_bytes = product.shape[1] * product.element_size()
    for word, width in ((torch.int64, 8), (torch.int32, 4)):
        if row_bytes % width == 0:
            return word
    return torch.int16


def row_fingerprints(result: torch.Tensor) -> bytes:
    """One int64 per row: the row's bit patterns weighted by column. Exact, no overflow."""
    bits = result.view(_BITS[result.dtype]).to(torch.int64)
    columns = torch.arange(result.shape[1], dtype=torch.int64, device=result.device)
    weights = (columns * 40503 + 1) % 32749 + 1
    return bytes((bits * weights).sum(dim=1).cpu().numpy().tobytes())


def row_bits(result: torch.Tensor, rows: list[int]) -> bytes:
    """The raw bits of some rows of a product, for an exact count of differences."""
    index = torch.tensor(rows, dtype=torch.int64, device=result.device)
    return bytes(result.index_select(0, index).view(_BITS[result.dtype]).cpu().numpy().tobytes())


def pattern(rows: int, cols: int, seed: int, salt: int, device: torch.device) -> torch.Tensor:
    """A fixed matrix in [-1, 1) from an integer hash: the same bits on every device."""
    x = torch.arange(rows * cols, dtype=torch.int64, device=device)
    x = (x + seed * 0x9E3779B1 + salt * 0x85EBCA6B) & 0x7FFFFFFF
    for multiplier in (0x45D9F3B, 0x3335B369):  # below 2**31: products stay below 2**62
        x = x ^ (x >> 16)
        x = (x * multiplier) & 0x7FFFFFFF
    x = x ^ (x >> 16)
    return (x.to(torch.float64) / 2**30 - 1.0).to(torch.float32).reshape(rows, cols)


CUBLAS_WORKSPACE = ":4096:8"


def configure(device: torch.device) -> None:
    """Settings that make every product bitwise reproducible (docs/determinism.md).

    The cuBLAS workspace is forced, not merely defaulted: a smaller deterministic
    setting from the environment (":16:8") can make cuBLAS pick slower kernels."""
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True)


def worker(context: Context, job: Job) -> None:
    """Runs in one worker per device: burn each dtype, report, then answer the row request."""
    device = context.torch_device
    configure(device)
    references: dict[str, torch.Tensor] = {}
    for dtype in job.dtypes:
        with context.phase(dtype, metric=metric_name(dtype)):
            result, references[dtype] = burn(
                device,
                dtype,
                size=job.size,
                ring=job.ring,
                duration_s=job.duration_s,
                warmup_s=job.warmup_s,
                seed=job.seed,
                context=context,
            )
            context.send(result)
    context.send(Burned())
    request = context.recv(RowsRequest)
    context.send(Rows(rows={dtype: row_bits(references[dtype], list(rows)) for dtype, rows in request.rows.items()}))


def _operands(
    device: torch.device, dtype: str, size: int, seed: int, context: Context | None
) -> tuple[Callable[[torch.Tensor], Any], torch.Tensor]:
    a = pattern(size, size, seed, 1, device)
    b = pattern(size, size, seed, 2, device)
    if context is not None:
        context.fault_input(a)  # `skew`: a consistently wrong input, so every product differs from the others'
    if dtype in _HALF:
        a16, b16 = a.to(_HALF[dtype]), b.to(_HALF[dtype])
        return (lambda out: torch.matmul(a16, b16, out=out)), torch.empty(size, size, dtype=_HALF[dtype], device=device)
    if dtype in ("tf32", "fp32"):
        if device.type == "cpu" and dtype == "tf32":
            raise NotSupported("tf32 is a CUDA tensor-core mode")
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        return (lambda out: torch.matmul(a, b, out=out)), torch.empty(size, size, dtype=torch.float32, device=device)
    if dtype == "fp8":
        return _fp8_operands(device, a, b)
    raise ValueError(f"unknown dtype {dtype!r}")


def _fp8_operands(
    device: torch.device, a: torch.Tensor, b: torch.Tensor
) -> tuple[Callable[[torch.Tensor], Any], torch.Tensor]:
    """e4m3 inputs, bf16 output, unit scales; the second operand column-major as cuBLASLt wants.

    Fast accumulation (FP8_FAST_ACCUM): the mode training frameworks use for the
    forward pass, so the burn runs as hot as a real job; it is as reproducible as
    the slow mode (docs/determinism.md)."""
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        raise NotSupported(f"torch {torch.__version__} has no float8 matmul")
    a8 = a.to(torch.float8_e4m3fn)
    b8 = b.t().contiguous().to(torch.float8_e4m3fn).t()
    one = torch.ones((), dtype=torch.float32, device=device)
    out = torch.empty(a.shape[0], b.shape[1], dtype=torch.bfloat16, device=device)

    def multiply(target: torch.Tensor) -> Any:
        return torch._scaled_mm(
            a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, out=target, use_fast_accum=FP8_FAST_ACCUM
        )

    if device.type == "cpu":
        try:
            multiply(out)
        except (RuntimeError, NotImplementedError) as err:
            raise NotSupported(f"torch {torch.__version__} has no float8 matmul on the CPU: {err}") from err
    return multiply, out


def clock_for(device: torch.device) -> CudaClock | CpuClock:
    """Marks and times work on the device: CUDA events on a GPU, the wall clock on the CPU."""
    return CudaClock() if device.type == "cuda" else CpuClock()


class CudaClock:
    def mark(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped
        event.record()
        return event

    def sync(self, event: Any) -> None:
        event.synchronize()

    def seconds(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end)) / 1000.0


class CpuClock:
    def mark(self) -> float:
        return time.perf_counter()

    def sync(self, mark: float) -> None:
        pass

    def seconds(self, start: float, end: float) -> float:
        return end - start
