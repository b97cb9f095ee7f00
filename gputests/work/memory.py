"""The memory test, worker side: the pattern code, which runs inside a device worker.

The worker takes its share of the device's memory as chunks of int32 words
(`allocate`), then writes and verifies patterns over all of it, on the device, for
the test's duration (`burn`): every pattern once, then the set again while time
remains. Each pass writes every chunk, then verifies every chunk with one exact
reduction per chunk (one read of it); only a chunk that fails it is read word by word,
to describe its bad words (`Mismatch`). Nothing is verified against a copy: every
expected value is either a constant or regenerated from its word's address. The
patterns, their passes and the fused kernels of the generated ones are in
gputests/work/memory_patterns.py.

Each pass's verify is timed (CUDA events around its kernels): bytes verified over that
time is the pass's window, and each pattern's windows make its own figure
(`metric_name`), so a pattern that verifies slowly shows in its own figure instead of
hiding in the median of all passes.

It is plain functions of tensors: the test runs it in one worker per device
(`worker`), bench/memory_bandwidth.py and tests/test_memory.py call it directly.
The parent side is gputests/work/memory_run.py.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from gputests.work import memory_patterns
from gputests.work.memory_patterns import PATTERNS, RANDOM_PASSES, Constant, Fill, passes, slices
from harness.workers import Message
from harness.workers.devicetest import Context

DEFAULT_SEED = 20261129
METRIC = "memory.verify.gbps"
"""The whole round's figure: bytes verified by every pass of a round over their verify time."""
MAX_PER_CHUNK = 64
"""Bad words described per chunk and pass; the rest are counted, not described."""
MAX_RECORDS = 256
"""Bad words described per pattern result (message)."""
REPORT_S = 0.5
"""Progress at least this often while chunks complete: a silent worker is killed as hung."""
WORD_BYTES = 4
ALIGN_BYTES = 1 << 20
"""Chunks are whole MiB: a last, partial chunk is rounded down to one (and holds an even number of words)."""
MAX_CHUNK_BYTES = 1 << 32
"""Chunks hold at most 2**30 words, whatever the profile asks: the generated patterns index and count
their words in int32."""
WORKSPACE_BYTES = 1 << 30
"""Left free on a GPU beside the chunks, for workspace (reductions, describing bad words), whatever
the fraction asks."""
CPU_DEFAULT_BYTES = 64 << 20
"""What the test takes on the CPU when the profile sets no cap: it never takes a share of host memory."""
CPU_THREADS = 1
"""Threads of a CPU worker, whatever share of the host it is given: the self-test's small tensors gain
little from more, and on a busy host OpenMP threads that wait on each other at every one of the many
small operations made a round six times slower (2 threads on 2 busy vCPUs, torch 2.13.0+cpu)."""
_M32 = 0xFFFFFFFF


GENERATED = frozenset({"random", "address"})
"""The patterns computed from each word's index, by fused kernels on a GPU."""
COMPILING = "compiling the fused memory kernels"


def metric_name(pattern: str) -> str:
    """A pattern's own verify figure: `memory.walking_ones.verify.gbps`."""
    return f"memory.{pattern.replace('-', '_')}.verify.gbps"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    fraction: float
    """Of the device's free memory, the share to take (CUDA)."""
    chunk_bytes: int
    max_bytes: int | None
    """A cap on what to take; on the CPU, what to take."""
    duration_s: float
    """Seconds the patterns share: the set repeats while they remain, and always runs once in full."""
    seed: int = DEFAULT_SEED
    patterns: tuple[str, ...] = PATTERNS


# -- messages ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mismatch:
    """One word that read back other than written. Values are unsigned 32-bit."""

    pattern: str
    pass_name: str
    chunk: int
    offset: int
    """The word's index in its chunk."""
    expected: int
    found: int
    kind: str = ""
    """stuck-at-0, stuck-at-1 or random: see `classify`."""

    @property
    def xor(self) -> int:
        return self.expected ^ self.found

    @property
    def bits(self) -> tuple[int, ...]:
        """The bits that flipped, lowest first."""
        return tuple(bit for bit in range(32) if self.xor >> bit & 1)

    def flip(self, bit: int) -> str:
        return "0->1" if self.found >> bit & 1 else "1->0"

    def describe(self) -> str:
        flips = ", ".join(f"bit {bit} {self.flip(bit)}" for bit in self.bits)
        kind = f" ({self.kind})" if self.kind else ""
        return (
            f"{self.pattern} ({self.pass_name}) chunk {self.chunk} word {self.offset}: expected 0x{self.expected:08x}, "
            f"read 0x{self.found:08x}, xor 0x{self.xor:08x}: {flips}{kind}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain ints and strings."""
        return {
            "pattern": self.pattern,
            "pass": self.pass_name,
            "chunk": self.chunk,
            "offset": self.offset,
            "expected": self.expected,
            "found": self.found,
            "xor": self.xor,
            "bits": list(self.bits),
            "kind": self.kind,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatternResult(Message):
    """One pattern's passes in one round."""

    pattern: str
    round: int
    windows: tuple[float, ...]
    """Verify GB/s of each pass: bytes verified over the verify kernels' time."""
    bytes_verified: int
    """Over all its passes."""
    seconds: float
    """The verify kernels' time, over all its passes."""
    bad_words: int
    """Exact, over all its passes; only the first `MAX_RECORDS` are described."""
    mismatches: tuple[Mismatch, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checked(Message):
    """The worker is done."""

    bytes_held: int
    total_bytes: int
    """The device's memory, as the worker sees it (CUDA's total, or the host's physical memory)."""
    bytes_verified: int
    """Bytes read back by at least one complete verify pass: all it held, or 0 when no pass completed."""
    note: str = ""
    """Why less than asked was taken, when it was (an allocation that failed near the end)."""

    @property
    def coverage(self) -> float:
        return self.bytes_verified / self.total_bytes if self.total_bytes else 0.0


# -- allocation ---------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Held:
    """The memory the test holds, as chunks of int32 words."""

    chunks: list[torch.Tensor]
    total_bytes: int
    note: str = ""

    @property
    def nbytes(self) -> int:
        return _nbytes(self.chunks)


def allocate(
    device: torch.device,
    *,
    fraction: float,
    chunk_bytes: int,
    max_bytes: int | None,
    context: Context | None = None,
) -> Held:
    """Take `fraction` of the GPU's free memory (at most `max_bytes`, and leaving `WORKSPACE_BYTES`
    free), or `max_bytes` of the host's, in chunks of `chunk_bytes`.

    An allocation that fails near the end keeps what was taken and says so in `note` (on a
    GPU it also gives back chunks until the workspace is free again); taking nothing raises."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        want = min(int(free * fraction), free - WORKSPACE_BYTES, max_bytes if max_bytes is not None else free)
        out_of_memory: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
    else:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        want = max_bytes if max_bytes is not None else CPU_DEFAULT_BYTES
        out_of_memory = (RuntimeError, MemoryError)  # torch's CPU allocator raises RuntimeError
    held = Held(chunks=[], total_bytes=int(total))
    last_report = time.monotonic()
    for size in chunk_sizes(want, chunk_bytes):
        try:
            held.chunks.append(torch.empty(size // WORD_BYTES, dtype=torch.int32, device=device))
        except out_of_memory as err:
            held.note = f"allocation stopped at {held.nbytes / 2**30:.2f} of {want / 2**30:.2f} GiB: {err}"
            _give_back_workspace(held, device)
            break
        if context is not None and time.monotonic() - last_report >= REPORT_S:
            context.progress(f"allocating {held.nbytes / 2**30:.1f} GiB")
            last_report = time.monotonic()
    if not held.chunks:
        raise RuntimeError(f"could not allocate any memory on {device}: {held.note or 'nothing to take'}")
    if held.note and context is not None:
        context.progress(held.note)
    return held


def chunk_sizes(want: int, chunk_bytes: int) -> list[int]:
    """Byte sizes of the chunks that make up `want`: whole chunks, then the rest in whole MiB."""
    chunk_bytes = min(chunk_bytes, MAX_CHUNK_BYTES)
    chunk_bytes = max(ALIGN_BYTES, chunk_bytes - chunk_bytes % ALIGN_BYTES)
    whole, rest = divmod(max(0, want), chunk_bytes)
    rest -= rest % ALIGN_BYTES
    return [chunk_bytes] * whole + ([rest] if rest else [])


def _give_back_workspace(held: Held, device: torch.device) -> None:
    if device.type != "cuda":
        return
    torch.cuda.empty_cache()
    while len(held.chunks) > 1 and torch.cuda.mem_get_info(device)[0] < WORKSPACE_BYTES:
        held.chunks.pop()
        torch.cuda.empty_cache()


# -- writing and verifying ----------------------------------------------------------------


class _Clock:
    """Sums the time of the spans it times: CUDA events on a GPU (the kernels' time), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: list[tuple[Any, Any]] = []

    @contextlib.contextmanager
    def span(self) -> Iterator[None]:
        start = self._mark()
        yield
        self.spans.append((start, self._mark()))

    def seconds(self) -> float:
        if not self.cuda:
            return float(sum(end - start for start, end in self.spans))
        if self.spans:
            self.spans[-1][1].synchronize()
        return sum(float(start.elapsed_time(end)) for start, end in self.spans) / 1000.0

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped
        event.record()
        return event


class _Reporter:
    """Progress, at most every `REPORT_S`, from a context when there is one."""

    def __init__(self, context: Context | None):
        self.context = context
        self.last = time.monotonic()
        self.gbps = 0.0
        self.bad = 0

    def done(self, verified: Verified) -> None:
        self.gbps, self.bad = verified.gbps, self.bad + verified.bad_words
        self.tick(verified.name)

    def tick(self, phase: str) -> None:
        if self.context is not None and time.monotonic() - self.last >= REPORT_S:
            self.context.progress(phase, gbps=self.gbps, bad=float(self.bad))
            self.last = time.monotonic()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verified:
    """One verify pass over every chunk."""

    name: str
    nbytes: int
    seconds: float
    bad_words: int
    mismatches: tuple[Mismatch, ...]

    @property
    def gbps(self) -> float:
        return self.nbytes / max(self.seconds, 1e-9) / 1e9


def write_pass(fill: Fill, chunks: Sequence[torch.Tensor], reporter: _Reporter | None = None) -> None:
    fill.prepare(len(chunks), chunks[0].device)
    for index, chunk in enumerate(chunks):
        fill.write(chunk, index)
        if reporter is not None:
            reporter.tick(f"{fill.name} write")


def verify_pass(
    fill: Fill, chunks: Sequence[torch.Tensor], *, pattern: str = "", reporter: _Reporter | None = None
) -> Verified:
    """Probe every chunk (timed), read the flags back once, then describe the chunks that failed."""
    fill.prepare(len(chunks), chunks[0].device)
    clock = _Clock(chunks[0].device)
    probes = []
    with clock.span():
        for index, chunk in enumerate(chunks):
            probes.append(fill.probe(chunk, index))
            if reporter is not None:
                reporter.tick(f"{fill.name} verify")
    flags = torch.stack(probes).tolist()
    seconds = clock.seconds()
    bad, found = 0, list[Mismatch]()
    for index, flag in enumerate(flags):
        if flag:
            count, described = describe(fill, chunks[index], index, pattern=pattern, limit=MAX_RECORDS - len(found))
            bad += count
            found.extend(described)
    return Verified(name=fill.name, nbytes=_nbytes(chunks), seconds=seconds, bad_words=bad, mismatches=tuple(found))


def describe(
    fill: Fill, chunk: torch.Tensor, index: int, *, pattern: str = "", limit: int = MAX_PER_CHUNK
) -> tuple[int, list[Mismatch]]:
    """The exact count of a chunk's bad words, and the first `min(limit, MAX_PER_CHUNK)` of them described.

    The slow path, for a chunk whose probe failed: it regenerates what each slice should
    hold and compares word by word."""
    limit = max(0, min(limit, MAX_PER_CHUNK))
    count, found = 0, list[Mismatch]()
    for start, stop in slices(chunk.numel()):
        expected = fill.expected(index, start, stop, chunk.device)
        wrong = torch.ne(chunk[start:stop], expected)
        bad = int(wrong.sum().item())
        count += bad
        if bad and len(found) < limit:
            for offset, want, read in _first(wrong, expected, chunk[start:stop], limit - len(found)):
                found.append(
                    Mismatch(
                        pattern=pattern or fill.name,
                        pass_name=fill.name,
                        chunk=index,
                        offset=start + offset,
                        expected=want & _M32,
                        found=read & _M32,
                    )
                )
    return count, found


def _first(
    wrong: torch.Tensor, expected: torch.Tensor, words: torch.Tensor, limit: int
) -> Iterator[tuple[int, int, int]]:
    """(offset, expected, read) of the first `limit` wrong words, looked for a block at a time, so
    that a slice where every word is wrong costs a block's indices, not the slice's."""
    block = 1 << 20
    for start in range(0, wrong.numel(), block):
        where = wrong[start : start + block].nonzero().flatten()[:limit] + start
        yield from zip(where.tolist(), expected[where].tolist(), words[where].tolist(), strict=True)
        limit -= where.numel()
        if limit <= 0:
            return


def classify(mismatches: Iterable[Mismatch]) -> list[Mismatch]:
    """The mismatches with their class, judged per cell (chunk, word, bit) over every report given.

    A cell that only ever flipped 1->0 is stuck-at-0, one that only flipped 0->1 is stuck-at-1,
    one seen flipping both ways is random. A word's class is its cells' class when they agree,
    else random. One report is weak evidence (a lone flip is called stuck-at-something): the
    more passes report a cell, the more its class means; pass every report of a device at once."""
    mismatches = list(mismatches)
    seen: dict[tuple[int, int, int], set[str]] = collections.defaultdict(set)
    for m in mismatches:
        for bit in m.bits:
            seen[(m.chunk, m.offset, bit)].add(m.flip(bit))

    def cell(m: Mismatch, bit: int) -> str:
        ways = seen[(m.chunk, m.offset, bit)]
        return "random" if len(ways) > 1 else "stuck-at-0" if ways == {"1->0"} else "stuck-at-1"

    classified = []
    for m in mismatches:
        kinds = {cell(m, bit) for bit in m.bits}
        classified.append(dataclasses.replace(m, kind=kinds.pop() if len(kinds) == 1 else "random"))
    return classified


# -- patterns -----------------------------------------------------------------------------


def run_pattern(
    chunks: Sequence[torch.Tensor],
    pattern: str,
    *,
    seed: int = DEFAULT_SEED,
    round_: int = 0,
    random_passes: int | None = None,
    context: Context | None = None,
) -> PatternResult:
    """Every pass of one pattern over every chunk: write, the fault point, verify. `random_passes`:
    the random pattern's passes (default: `RANDOM_PASSES` for the chunks' device)."""
    reporter = _Reporter(context)
    if pattern == "moving-inversions":
        return _result(pattern, round_, _moving_inversions(chunks, context, reporter))
    if random_passes is None:
        random_passes = RANDOM_PASSES.get(chunks[0].device.type, RANDOM_PASSES["cuda"])
    verified = []
    for fill in passes(pattern, seed=seed, round_=round_, random_passes=random_passes):
        write_pass(fill, chunks, reporter)
        if context is not None:
            context.fault_point(chunks[-1])
        verified.append(verify_pass(fill, chunks, pattern=pattern, reporter=reporter))
        reporter.done(verified[-1])
    return _result(pattern, round_, verified)


def _result(pattern: str, round_: int, verified: Sequence[Verified]) -> PatternResult:
    described = [m for v in verified for m in v.mismatches][:MAX_RECORDS]
    return PatternResult(
        pattern=pattern,
        round=round_,
        windows=tuple(v.gbps for v in verified),
        bytes_verified=sum(v.nbytes for v in verified),
        seconds=sum(v.seconds for v in verified),
        bad_words=sum(v.bad_words for v in verified),
        mismatches=tuple(classify(described)),
    )


def _moving_inversions(chunks: Sequence[torch.Tensor], context: Context | None, reporter: _Reporter) -> list[Verified]:
    """A March test over the chunks, memtest86's moving inversions with P = 0x00000000: write P
    everywhere; up the chunks, verify P and write ~P in each; down the chunks, verify ~P and
    write P; verify P everywhere. Three verify passes.

    The order is the chunks' (their index); within a chunk the device's kernels choose it.
    Each chunk is checked before it is overwritten (one sync per chunk), so its bad words are
    still there to describe."""
    name = "moving-inversions"
    fill = Constant(name, 0)
    up, down = Constant(f"{name} up", fill.low), fill.inverse(f"{name} down")
    write_pass(fill, chunks, reporter)
    verified = []
    for expect, then, order in (
        (up, down, range(len(chunks))),
        (down, up, range(len(chunks) - 1, -1, -1)),
    ):
        if context is not None:
            context.fault_point(chunks[-1])
        verified.append(_march(chunks, order, expect, then, reporter))
        reporter.done(verified[-1])
    if context is not None:
        context.fault_point(chunks[-1])
    verified.append(verify_pass(Constant(f"{name} final", fill.low), chunks, pattern=name, reporter=reporter))
    reporter.done(verified[-1])
    return verified


def _march(
    chunks: Sequence[torch.Tensor], order: Iterable[int], expect: Constant, then: Constant, reporter: _Reporter
) -> Verified:
    """One March element: in `order`, verify a chunk holds `expect` (timed), describe it if not, write `then`."""
    clock = _Clock(chunks[0].device)
    bad, found = 0, list[Mismatch]()
    for index in order:
        with clock.span():
            probe = expect.probe(chunks[index], index)
        if probe.item():
            count, described = describe(
                expect, chunks[index], index, pattern="moving-inversions", limit=MAX_RECORDS - len(found)
            )
            bad += count
            found.extend(described)
        then.write(chunks[index], index)
        reporter.tick(expect.name)
    return Verified(
        name=expect.name, nbytes=_nbytes(chunks), seconds=clock.seconds(), bad_words=bad, mismatches=tuple(found)
    )


def _nbytes(chunks: Iterable[torch.Tensor]) -> int:
    return sum(chunk.numel() for chunk in chunks) * WORD_BYTES


# -- the worker ---------------------------------------------------------------------------


def burn(
    chunks: Sequence[torch.Tensor],
    patterns: Sequence[str],
    *,
    duration_s: float,
    seed: int = DEFAULT_SEED,
    context: Context | None = None,
    on_result: Callable[[PatternResult], None] = lambda result: None,
) -> int:
    """Run the patterns, in order, round after round, until `duration_s` has passed and
    every pattern has run once; returns the bytes read back by complete verify passes.

    With a `context`, each pattern runs in its own phase: one that raises is reported and
    left out of later rounds, and the others go on. Without one, errors propagate."""
    deadline = time.monotonic() + duration_s
    failed: set[str] = set()
    verified = 0
    round_ = 0
    while True:
        for pattern in patterns:
            if pattern in failed or (round_ and time.monotonic() >= deadline):
                continue
            done = False
            phase = context.phase(pattern, metric=metric_name(pattern)) if context else contextlib.nullcontext()
            with phase:
                on_result(run_pattern(chunks, pattern, seed=seed, round_=round_, context=context))
                done = True
            if done:
                verified = _nbytes(chunks)
            else:
                failed.add(pattern)
        round_ += 1
        if time.monotonic() >= deadline or failed.issuperset(patterns):
            return verified


def worker(context: Context, job: Job) -> None:
    """Runs in one worker per device: take the memory, burn the patterns, say what was covered."""
    if context.torch_device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)
    held = allocate(
        context.torch_device,
        fraction=job.fraction,
        chunk_bytes=job.chunk_bytes,
        max_bytes=job.max_bytes,
        context=context,
    )
    if context.torch_device.type in memory_patterns.FUSED_ON and GENERATED.intersection(job.patterns):
        with context.phase(COMPILING):  # fails alone: the generated patterns then fail at once, named
            memory_patterns.FUSED.warm(held.chunks, context.progress)
    verified = burn(
        held.chunks, job.patterns, duration_s=job.duration_s, seed=job.seed, context=context, on_result=context.send
    )
    context.send(Checked(bytes_held=held.nbytes, total_bytes=held.total_bytes, bytes_verified=verified, note=held.note))
