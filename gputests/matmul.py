"""The matmul burn, worker side: the measuring code, which runs inside a device worker.

`burn()` multiplies two fixed matrices over and over for a set time, times each
window of products, and compares every product bitwise with the first one. It is
a plain function: the test runs it in one worker per GPU (`worker`), and
bench/matmul_overhead.py calls it directly. How the product is made bitwise
reproducible is in docs/determinism.md. The parent side is gputests/matmul_run.py.
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

from harness.devicetest import Context, NotSupported
from harness.workers import Message

DEFAULT_SEED = 20261127
MIN_WINDOWS = 3
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

    With a `context` (in a worker) it reports progress and marks its fault points."""
    multiply, ref = _operands(device, dtype, size, seed, context)
    multiply(ref)
    outs = [torch.empty_like(ref) for _ in range(ring)]
    ref_bits = ref.view(_BITS[ref.dtype])
    bad_elements = torch.zeros((), dtype=torch.int64, device=device)
    bad_results = torch.zeros((), dtype=torch.int64, device=device)
    clock = _CudaClock() if device.type == "cuda" else _CpuClock()
    flops = 2.0 * size**3 * ring

    windows: list[float] = []
    warm = 0
    pending: collections.deque[tuple[Any, Any, bool]] = collections.deque()
    began = time.monotonic()
    timed_from = began + warmup_s
    last_report = began
    count = 0
    while True:
        now = time.monotonic()
        timed = now >= timed_from
        if timed and now - timed_from >= duration_s and len(windows) + sum(w[2] for w in pending) >= MIN_WINDOWS:
            break
        start = clock.mark()
        for out in outs:
            multiply(out)
        end = clock.mark()
        if context is not None:
            context.fault_point(outs[0])
        for out in outs:
            differ = torch.ne(out.view(ref_bits.dtype), ref_bits).sum()
            bad_elements += differ
            bad_results += differ > 0
        pending.append((start, end, timed))
        count += 1
        while len(pending) > 1:
            warm += _settle(clock, pending.popleft(), windows, flops)
        if context is not None and now - last_report >= report_s:
            context.progress(f"{dtype} window {count}")
            last_report = now
    while pending:
        warm += _settle(clock, pending.popleft(), windows, flops)
    wall = time.monotonic() - max(timed_from, began)
    result = BurnResult(
        dtype=dtype,
        size=size,
        flops_per_window=flops,
        windows=windows,
        warmup_windows=warm,
        results_checked=count * ring,
        bad_results=int(bad_results.item()),
        bad_elements=int(bad_elements.item()),
        ref_nonfinite=int((~torch.isfinite(ref)).sum().item()),
        wall_s=wall,
        fingerprints=row_fingerprints(ref),
    )
    return result, ref


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


def configure(device: torch.device) -> None:
    """Settings that make every product bitwise reproducible (docs/determinism.md)."""
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):  # the two deterministic settings
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
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
    """e4m3 inputs, bf16 output, unit scales; the second operand column-major as cuBLASLt wants."""
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        raise NotSupported(f"torch {torch.__version__} has no float8 matmul")
    a8 = a.to(torch.float8_e4m3fn)
    b8 = b.t().contiguous().to(torch.float8_e4m3fn).t()
    one = torch.ones((), dtype=torch.float32, device=device)
    out = torch.empty(a.shape[0], b.shape[1], dtype=torch.bfloat16, device=device)

    def multiply(target: torch.Tensor) -> Any:
        return torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, out=target)

    if device.type == "cpu":
        try:
            multiply(out)
        except (RuntimeError, NotImplementedError) as err:
            raise NotSupported(f"torch {torch.__version__} has no float8 matmul on the CPU: {err}") from err
    return multiply, out


def _settle(clock: Any, window: tuple[Any, Any, bool], windows: list[float], flops: float) -> int:
    """Wait for a window to finish and keep its figure; returns 1 for a warm-up window."""
    start, end, timed = window
    clock.sync(end)
    if not timed:
        return 1
    windows.append(flops / max(clock.seconds(start, end), 1e-9) / 1e12)
    return 0


class _CudaClock:
    def mark(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def sync(self, event: Any) -> None:
        event.synchronize()

    def seconds(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end)) / 1000.0


class _CpuClock:
    def mark(self) -> float:
        return time.perf_counter()

    def sync(self, mark: float) -> None:
        pass

    def seconds(self, start: float, end: float) -> float:
        return end - start
