"""What the memory test writes: its patterns, their passes, and the fused kernels of the generated ones.

A pass (`Fill`) writes every chunk of int32 words and says how to verify it:

- `Constant`: every even word one value, every odd word another (equal for a uniform
  fill); written with `fill_`, verified with the chunk's minimum and maximum
  (`torch.aminmax`, one read of the chunk, no workspace);
- `Generated`: word i computed from its index alone (`words`), so a verify regenerates
  it instead of keeping a copy. On a GPU the write and the verify are each one fused
  kernel (torch.compile, Triton): the words are computed in registers from the index in
  32-bit arithmetic and written, or compared with what memory holds and the differences
  counted, reading each word once. On the CPU stand-in the same function runs as plain
  torch operations, a slice at a time.

The patterns (`PATTERNS`), with their passes per round:

- zeros, ones: 1 pass each, every word 0x00000000 / 0xFFFFFFFF;
- checkerboard: 2 passes, words alternating 0x55555555 / 0xAAAAAAAA, then the inverse;
- walking-ones: 32 passes, one per bit: pass k sets bit k, and only bit k, in every word;
- moving-inversions: a March test at chunk granularity (memory.py), 3 verify passes;
- random: `RANDOM_PASSES` passes on a GPU, each a counter-based hash of (seed, round,
  pass, chunk, word index): the pattern most like real data and the only one that
  changes every pass, so it has as many passes as walking-ones;
- address: 2 passes, every word its own address (plus the chunk's offset), then the inverse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

PATTERNS = ("zeros", "ones", "checkerboard", "walking-ones", "moving-inversions", "random", "address")
RANDOM_PASSES = {"cuda": 32, "cpu": 2}
"""Random passes per round: on a GPU as many as walking-ones; on the CPU stand-in, whose plain
torch operations make a generated pass slow, two (the self-test checks the pipeline, not the CPU)."""
SLICE_WORDS = 1 << 20
"""Words per slice of a chunk for a generated pass on the CPU, and for describing bad words: a slice's
temporaries (a few int32 words per word) stay small."""
FUSED_ON = frozenset({"cuda"})
"""Device types whose generated passes run as fused kernels; elsewhere, plain torch a slice at a time."""
ADDRESS_STRIDE = 0x9E3779B1
"""Chunk c's address words start at c times this (mod 2**32): an odd stride spreads the chunks' ranges."""
REPORT_S = 0.5
_M32 = 0xFFFFFFFF
_HASH_MULTIPLIER = 0x45D9F3B


def signed32(value: int) -> int:
    value &= _M32
    return value - (1 << 32) if value >> 31 else value


def _signed64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def key(*parts: int) -> int:
    """A 32-bit key from some integers, mixed on the host in the manner of splitmix64, exact."""
    mixed = 0
    for part in parts:
        mixed = (mixed ^ (part & (1 << 64) - 1)) * 0x9E3779B97F4A7C15 & (1 << 64) - 1
        mixed ^= mixed >> 30
        mixed = mixed * 0xBF58476D1CE4E5B9 & (1 << 64) - 1
        mixed ^= mixed >> 27
    return mixed >> 32


# -- generated words ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mixer:
    """Word i of a generated pass, in 32-bit arithmetic that wraps: x = i + base; twice
    x ^= x >> 16 (logical) and x *= multiplier; once more x ^= x >> 16; then x ^ invert.

    The random pattern is this hash (Wellons' lowbias32 shape, with a 0x45D9F3B multiplier)
    of its index plus a key; the address pattern is the identity (mask 0, multiplier 1), so
    one kernel of the same cost serves both. The logical shift is an arithmetic one masked
    to 16 bits, as torch has no unsigned 32-bit arithmetic."""

    mask: int
    multiplier: int

    def params(self, base: int, *, invert: bool = False) -> list[int]:
        """The kernel's four int32 parameters: base, mask, multiplier, invert."""
        return [signed32(base), self.mask, signed32(self.multiplier), -1 if invert else 0]


RANDOM = Mixer(mask=0xFFFF, multiplier=_HASH_MULTIPLIER)
ADDRESS = Mixer(mask=0, multiplier=1)


def words(index: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The int32 words at `index` (int32) of the pass with int32 `params` (see `Mixer`)."""
    x = index + params[0]
    for _ in range(2):
        x = x ^ ((x >> 16) & params[1])
        x = x * params[2]
    x = x ^ ((x >> 16) & params[1])
    return x ^ params[3]


def write_words(chunk: torch.Tensor, params: torch.Tensor) -> None:
    """Fill a whole chunk (at most 2**31 words) with its words: fused into one kernel by `Fused`."""
    chunk.copy_(words(torch.arange(chunk.numel(), dtype=torch.int32, device=chunk.device), params))


def count_wrong(chunk: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """How many of a whole chunk's words differ from what the pass wrote (int32 scalar, exact):
    one read of the chunk once fused by `Fused`."""
    expected = words(torch.arange(chunk.numel(), dtype=torch.int32, device=chunk.device), params)
    return torch.ne(chunk, expected).sum(dtype=torch.int32)


def random_words(
    seed: int, round_: int, pass_: int, chunk: int, start: int, stop: int, device: torch.device
) -> torch.Tensor:
    """Words [start, stop) of a chunk's random pattern in a pass, as int32 (the plain path)."""
    params = torch.tensor(RANDOM.params(key(seed, round_, pass_, chunk)), dtype=torch.int32, device=device)
    return words(torch.arange(start, stop, dtype=torch.int32, device=device), params)


def address_words(chunk: int, start: int, stop: int, device: torch.device, *, invert: bool = False) -> torch.Tensor:
    """Words [start, stop) of `chunk`'s address pattern, as int32: each word holds its own index in
    the chunk plus `ADDRESS_STRIDE` times the chunk's index, mod 2**32 (inverted, for `invert`).

    Within a chunk every word's value is its own, so a misdecoded or aliased address reads a
    word that is not the one expected; across chunks the 32-bit values can coincide (a GPU
    has more than 2**32 words), so aliasing between chunks is caught at all but those offsets."""
    params = torch.tensor(ADDRESS.params(chunk * ADDRESS_STRIDE, invert=invert), dtype=torch.int32, device=device)
    return words(torch.arange(start, stop, dtype=torch.int32, device=device), params)


class Fused:
    """`write_words` and `count_wrong` compiled (torch.compile: Triton kernels on a GPU, C++ on the
    CPU), one graph each per chunk size, static. Once `warm`, a call that would compile again
    raises instead of falling back to slow plain torch (a slow fallback would read as slow memory)."""

    def __init__(self) -> None:
        self.error = ""
        """Why compiling failed, once it has: the generated passes then fail at once, named."""
        self._write: Callable[[torch.Tensor, torch.Tensor], None] | None = None
        self._count: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self._compiled: set[tuple[str, torch.device, int]] = set()
        """(kernel, device, chunk size) compiled: calls for them must not compile again."""

    def write(self, chunk: torch.Tensor, params: torch.Tensor) -> None:
        with self._calling("write", chunk):
            assert self._write is not None
            self._write(chunk, params)

    def count(self, chunk: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        with self._calling("count", chunk):
            assert self._count is not None
            return self._count(chunk, params)

    def warm(self, chunks: Sequence[torch.Tensor], progress: Callable[[str], None] | None = None) -> None:
        """Compile for every chunk size now, with `progress` said meanwhile (a compile takes seconds
        to minutes, and a silent worker is declared hung). Leaves the chunks' contents undefined."""
        sizes = {chunk.numel(): chunk for chunk in chunks}
        with _keepalive(progress, f"compiling the fused memory kernels for {len(sizes)} chunk sizes"):
            for chunk in sizes.values():
                params = torch.tensor(RANDOM.params(0), dtype=torch.int32, device=chunk.device)
                self.write(chunk, params)
                self.count(chunk, params).item()

    @contextlib.contextmanager
    def _calling(self, kernel: str, chunk: torch.Tensor) -> Iterator[None]:
        if self.error:
            raise RuntimeError(f"the fused memory kernels failed on their first call: {self.error}")
        if self._write is None:
            _set_up_inductor()
            self._write = torch.compile(write_words, dynamic=False, fullgraph=True)
            self._count = torch.compile(count_wrong, dynamic=False, fullgraph=True)
        compiled = (kernel, chunk.device, chunk.numel())
        new = compiled not in self._compiled
        try:
            with contextlib.nullcontext() if new else _no_recompile():
                yield
        except Exception as err:
            if new:  # compiling (or the kernel's first run) failed: say so, and do not try again
                self.error = f"{type(err).__name__}: {err}"
            raise
        self._compiled.add(compiled)


FUSED = Fused()
"""The worker process's compiled kernels (compiled once, on first use or `warm`)."""


def _set_up_inductor() -> None:
    # One worker per GPU compiles at once: each compiling in its own process, not a pool per worker.
    config = getattr(getattr(torch, "_inductor", None), "config", None)
    if config is not None and hasattr(config, "compile_threads"):
        config.compile_threads = 1


def _no_recompile() -> contextlib.AbstractContextManager[Any]:
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    return set_stance("fail_on_recompile") if set_stance is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _keepalive(progress: Callable[[str], None] | None, phase: str) -> Iterator[None]:
    """Say `phase` every `REPORT_S` from a thread while the block runs (it sends nothing itself)."""
    if progress is None:
        yield
        return
    done = threading.Event()

    def beat() -> None:
        while not done.wait(REPORT_S):
            progress(phase)

    progress(phase)
    thread = threading.Thread(target=beat, name="memory-compile-keepalive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# -- passes -----------------------------------------------------------------------------------


class Fill:
    """What one pass writes into every chunk, and what each word must read back."""

    name: str

    def prepare(self, count: int, device: torch.device) -> None:
        """Called before a pass over `count` chunks: set up what its chunks' writes and verifies need."""

    def write(self, chunk: torch.Tensor, index: int) -> None:
        raise NotImplementedError

    def probe(self, chunk: torch.Tensor, index: int) -> torch.Tensor:
        """A device scalar that is 0 exactly when the chunk reads back as written: one read of it."""
        raise NotImplementedError

    def expected(self, index: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Words [start, stop) of chunk `index`, as int64 holding int32 values: to describe bad words."""
        raise NotImplementedError


class Constant(Fill):
    """Every even word `low`, every odd word `high` (equal for a uniform fill).

    Written and verified as one 64-bit value (or one 32-bit value when uniform); the verify
    is the chunk's minimum and maximum: a chunk holds only the written value exactly when
    both are that value."""

    def __init__(self, name: str, low: int, high: int | None = None):
        self.name = name
        self.low = low & _M32
        self.high = self.low if high is None else high & _M32
        self.uniform = self.low == self.high
        self.value = signed32(self.low) if self.uniform else _signed64(self.high << 32 | self.low)

    def _words(self, chunk: torch.Tensor) -> torch.Tensor:
        return chunk if self.uniform else chunk.view(torch.int64)  # little-endian: word 0 is the low half

    def write(self, chunk: torch.Tensor, index: int) -> None:
        self._words(chunk).fill_(self.value)

    def probe(self, chunk: torch.Tensor, index: int) -> torch.Tensor:
        return torch.stack(torch.aminmax(self._words(chunk))).ne(self.value).sum()

    def expected(self, index: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
        odd = torch.arange(start, stop, dtype=torch.int64, device=device).bitwise_and_(1).bool()
        return torch.where(odd, signed32(self.high), signed32(self.low))

    def inverse(self, name: str) -> Constant:
        return Constant(name, ~self.low, ~self.high)


class Generated(Fill):
    """Words from their index (`words`), with per-chunk parameters `params(chunk)`: fused kernels
    over whole chunks where `FUSED_ON`, else plain torch a slice at a time. The verify counts the
    words that differ: exact, and the count is the probe's result."""

    def __init__(self, name: str, params: Callable[[int], list[int]]):
        self.name = name
        self.params = params
        self._table: dict[torch.device, list[torch.Tensor]] = {}

    def prepare(self, count: int, device: torch.device) -> None:
        rows = self._table.get(device, [])
        if len(rows) < count:
            table = torch.tensor([self.params(i) for i in range(count)], dtype=torch.int32).to(device)
            self._table[device] = [row.clone() for row in table]  # each its own tensor: no view offsets

    def _row(self, index: int, device: torch.device) -> torch.Tensor:
        self.prepare(index + 1, device)
        return self._table[device][index]

    def write(self, chunk: torch.Tensor, index: int) -> None:
        params = self._row(index, chunk.device)
        if chunk.device.type in FUSED_ON:
            FUSED.write(chunk, params)
            return
        for start, stop in slices(chunk.numel()):
            chunk[start:stop].copy_(words(_index(start, stop, chunk.device), params))

    def probe(self, chunk: torch.Tensor, index: int) -> torch.Tensor:
        params = self._row(index, chunk.device)
        if chunk.device.type in FUSED_ON:
            return FUSED.count(chunk, params)
        bad = torch.zeros((), dtype=torch.int32, device=chunk.device)
        for start, stop in slices(chunk.numel()):
            bad += torch.ne(chunk[start:stop], words(_index(start, stop, chunk.device), params)).sum(dtype=torch.int32)
        return bad

    def expected(self, index: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
        return words(_index(start, stop, device), self._row(index, device)).long()


def _index(start: int, stop: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, stop, dtype=torch.int32, device=device)


def slices(numel: int) -> Iterator[tuple[int, int]]:
    for start in range(0, numel, SLICE_WORDS):
        yield start, min(start + SLICE_WORDS, numel)


def passes(pattern: str, *, seed: int, round_: int, random_passes: int = RANDOM_PASSES["cuda"]) -> list[Fill]:
    """The passes of a pattern in a round (all but moving-inversions, which memory.py runs).

    Walking ones is one pass per bit, all 32 bits every round: pass k writes 1 << k to every
    word, so each bit of each word is set alone, with every other bit of the device clear."""
    if pattern == "zeros":
        return [Constant("zeros", 0)]
    if pattern == "ones":
        return [Constant("ones", _M32)]
    if pattern == "checkerboard":
        board = Constant("checkerboard", 0x55555555, 0xAAAAAAAA)
        return [board, board.inverse("checkerboard inverted")]
    if pattern == "walking-ones":
        return [Constant(f"walking-ones bit {bit}", 1 << bit) for bit in range(32)]
    if pattern == "moving-inversions":
        raise ValueError("moving-inversions is a March test, not a list of passes: memory.run_pattern runs it")
    if pattern == "random":
        return [Generated(f"random round {round_} pass {p}", _random(seed, round_, p)) for p in range(random_passes)]
    if pattern == "address":
        return [
            Generated("address", lambda c: ADDRESS.params(c * ADDRESS_STRIDE)),
            Generated("address inverted", lambda c: ADDRESS.params(c * ADDRESS_STRIDE, invert=True)),
        ]
    raise ValueError(f"unknown memory pattern {pattern!r}; expected one of {PATTERNS}")


def _random(seed: int, round_: int, pass_: int) -> Callable[[int], list[int]]:
    """A random pass's parameters for chunk c: its key mixes the seed, round, pass and chunk."""
    return lambda chunk: RANDOM.params(key(seed, round_, pass_, chunk))
