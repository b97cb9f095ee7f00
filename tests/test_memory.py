"""The memory test's worker functions, called directly on the CPU (a few MiB), and its bench script."""

import subprocess
import sys
import time

import pytest
import torch

from gputests.work import memory, memory_patterns
from gputests.work.memory_patterns import RANDOM_PASSES, passes
from harness.workers import Progress
from harness.workers.devicetest import FaultFired, PhaseFailed
from tests.helpers import REPO, local_context

CPU = torch.device("cpu")
MIB = 1 << 20
PASSES = {
    "zeros": 1,
    "ones": 1,
    "checkerboard": 2,
    "walking-ones": 32,
    "moving-inversions": 3,
    "random": RANDOM_PASSES["cpu"],
    "address": 2,
}
PLAIN = [pattern for pattern in memory.PATTERNS if pattern != "moving-inversions"]


def chunks(count: int = 3, mib: int = 1) -> list[torch.Tensor]:
    return memory.allocate(CPU, fraction=0.9, chunk_bytes=mib * MIB, max_bytes=count * mib * MIB).chunks


def flip(chunk: torch.Tensor, offset: int, bit: int) -> None:
    chunk[offset] = chunk[offset].item() ^ (1 << bit if bit < 31 else -(1 << 31))


def test_the_pattern_list_and_its_passes_are_as_documented():
    assert set(PASSES) == set(memory.PATTERNS)
    for pattern in PLAIN:
        assert len(passes(pattern, seed=1, round_=0, random_passes=RANDOM_PASSES["cpu"])) == PASSES[pattern]
    walking = passes("walking-ones", seed=1, round_=0)
    assert [fill.low for fill in walking] == [1 << bit for bit in range(32)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("pattern", memory.PATTERNS)
def test_every_pattern_writes_and_verifies_clean(pattern):
    held = chunks()
    context, sent = local_context()
    result = memory.run_pattern(held, pattern, context=context)
    assert (result.pattern, result.bad_words, result.mismatches) == (pattern, 0, ())
    assert len(result.windows) == PASSES[pattern] and all(w > 0 for w in result.windows)
    assert result.bytes_verified == PASSES[pattern] * 3 * MIB
    assert not [m for m in sent.sent if isinstance(m, FaultFired)]


@pytest.mark.parametrize("pattern", PLAIN)
def test_each_pass_writes_what_its_verify_expects_word_for_word(pattern):
    held = chunks(2)
    for fill in passes(pattern, seed=5, round_=1, random_passes=3):
        memory.write_pass(fill, held)
        for index, chunk in enumerate(held):
            assert torch.equal(chunk.long(), fill.expected(index, 0, chunk.numel(), CPU)), fill.name


def test_the_checkerboard_alternates_words_and_its_inverse_swaps_them():
    held = chunks(1)
    board, inverse = passes("checkerboard", seed=0, round_=0)
    memory.write_pass(board, held)
    assert [w & 0xFFFFFFFF for w in held[0][:4].tolist()] == [0x55555555, 0xAAAAAAAA] * 2
    memory.write_pass(inverse, held)
    assert [w & 0xFFFFFFFF for w in held[0][:4].tolist()] == [0xAAAAAAAA, 0x55555555] * 2


def _hash(seed: int, round_: int, pass_: int, chunk: int, index: int) -> int:
    """The random pattern's word, in Python's exact integers, independent of torch."""
    x = (index + memory_patterns.key(seed, round_, pass_, chunk)) & 0xFFFFFFFF
    for _ in range(2):
        x ^= x >> 16
        x = x * 0x45D9F3B & 0xFFFFFFFF
    return x ^ x >> 16


def test_the_random_pattern_is_reproducible_from_its_seed_alone_and_differs_between_seeds_chunks_and_rounds():
    random_words = memory_patterns.random_words
    words = random_words(7, 0, 1, 2, 1000, 5000, CPU)
    assert words.dtype == torch.int32 and torch.equal(words, random_words(7, 0, 1, 2, 1000, 5000, CPU))
    assert torch.equal(words[10:20], random_words(7, 0, 1, 2, 1010, 1020, CPU))  # any slice regenerates alike
    assert [w & 0xFFFFFFFF for w in words[:50].tolist()] == [_hash(7, 0, 1, 2, 1000 + i) for i in range(50)]
    for other in (
        random_words(8, 0, 1, 2, 1000, 5000, CPU),
        random_words(7, 0, 1, 3, 1000, 5000, CPU),
        random_words(7, 1, 1, 2, 1000, 5000, CPU),
        random_words(7, 0, 2, 2, 1000, 5000, CPU),
    ):
        assert (words != other).float().mean() > 0.99
    assert bool((words < 0).any()) and bool((words > 0).any())  # every bit, the sign bit too
    bits = torch.stack([(words >> bit) & 1 for bit in range(32)]).float().mean(dim=1)
    assert ((bits > 0.45) & (bits < 0.55)).all(), bits


def test_address_in_address_catches_a_swapped_pair_of_words():
    held = chunks(2)
    fill = passes("address", seed=0, round_=0)[0]
    memory.write_pass(fill, held)
    a, b = held[1][100].item(), held[1][70000].item()
    held[1][100], held[1][70000] = b, a
    verified = memory.verify_pass(fill, held, pattern="address")
    assert verified.bad_words == 2
    assert [(m.chunk, m.offset, m.expected, m.found) for m in verified.mismatches] == [
        (1, 100, a & 0xFFFFFFFF, b & 0xFFFFFFFF),
        (1, 70000, b & 0xFFFFFFFF, a & 0xFFFFFFFF),
    ]


def test_address_in_address_catches_a_chunk_that_reads_another():
    held = chunks(2)
    fill = passes("address", seed=0, round_=0)[1]
    memory.write_pass(fill, held)
    held[1].copy_(held[0])  # chunk 1's addresses decode to chunk 0
    assert memory.verify_pass(fill, held).bad_words == held[1].numel()


@pytest.mark.parametrize("pattern", memory.PATTERNS)
def test_an_injected_flip_is_found_with_its_chunk_offset_mask_and_class(pattern):
    held = chunks()
    context, sent = local_context("corrupt")
    result = memory.run_pattern(held, pattern, context=context)
    assert [m for m in sent.sent if isinstance(m, FaultFired)] == [FaultFired(kind="corrupt")]
    assert result.bad_words == 1
    (found,) = result.mismatches
    assert (found.pattern, found.chunk, found.offset, found.xor, found.bits) == (pattern, 2, 0, 1, (0,))
    assert found.kind == ("stuck-at-1" if found.expected & 1 == 0 else "stuck-at-0")
    assert found.kind == ("stuck-at-1" if found.flip(0) == "0->1" else "stuck-at-0")


@pytest.mark.parametrize("pattern", PLAIN)
def test_a_flipped_high_bit_anywhere_is_found_where_it_is(pattern):
    held = chunks()
    fill = passes(pattern, seed=3, round_=0, random_passes=2)[-1]
    memory.write_pass(fill, held)
    flip(held[1], 123457, 31)
    verified = memory.verify_pass(fill, held, pattern=pattern)
    assert verified.bad_words == 1
    (found,) = verified.mismatches
    assert (found.chunk, found.offset, found.xor, found.bits) == (1, 123457, 1 << 31, (31,))
    assert found.found == found.expected ^ (1 << 31)


def test_bad_words_are_counted_exactly_and_described_up_to_the_cap_per_chunk():
    held = chunks()
    fill = passes("zeros", seed=0, round_=0)[0]
    memory.write_pass(fill, held)
    held[0][1000:1100] = 4
    held[2][5] = -1
    verified = memory.verify_pass(fill, held)
    assert verified.bad_words == 101
    assert len(verified.mismatches) == memory.MAX_PER_CHUNK + 1
    assert [m.offset for m in verified.mismatches[:3]] == [1000, 1001, 1002]
    assert (verified.mismatches[-1].chunk, verified.mismatches[-1].xor) == (2, 0xFFFFFFFF)


def test_bad_words_past_the_first_block_of_a_slice_are_found_where_they_are():
    held = chunks(1, mib=8)  # 2M words: two blocks of the CPU's 1M-word slices
    fill = passes("ones", seed=0, round_=0)[0]
    memory.write_pass(fill, held)
    held[0][1_500_000:] = 0
    count, described = memory.describe(fill, held[0], 0, limit=3)
    assert count == held[0].numel() - 1_500_000
    assert [(m.offset, m.found, m.kind) for m in described] == [(1_500_000 + i, 0, "") for i in range(3)]


def test_moving_inversions_marches_up_then_down_the_chunks(monkeypatch):
    seen = []
    probe = memory_patterns.Constant.probe

    def recording(self, chunk, index):
        seen.append((self.name, index))
        return probe(self, chunk, index)

    monkeypatch.setattr(memory_patterns.Constant, "probe", recording)
    memory.run_pattern(chunks(3), "moving-inversions")
    up, down, final = "moving-inversions up", "moving-inversions down", "moving-inversions final"
    assert seen == [(up, 0), (up, 1), (up, 2), (down, 2), (down, 1), (down, 0), (final, 0), (final, 1), (final, 2)]


def test_moving_inversions_leaves_every_chunk_as_it_began():
    held = chunks()
    context, _ = local_context()
    result = memory.run_pattern(held, "moving-inversions", context=context)
    assert result.bad_words == 0 and all(bool((chunk == 0).all()) for chunk in held)  # ends as it began: P everywhere


def mismatch(offset: int, expected: int, found: int, chunk: int = 0) -> memory.Mismatch:
    return memory.Mismatch(pattern="p", pass_name="p", chunk=chunk, offset=offset, expected=expected, found=found)


def test_stuck_at_classification_judges_each_cell_over_every_report():
    reports = [
        mismatch(1, 0xFFFFFFFF, 0xFFFFFFFB),  # word 1 bit 2 reads 0 under ones
        mismatch(1, 0x00000004, 0x00000000),  # ... and under walking-ones bit 2: stuck-at-0
        mismatch(2, 0x00000000, 0x00000100),  # word 2 bit 8 reads 1 under zeros
        mismatch(2, 0x55555455, 0x55555555),  # ... and under a checkerboard: stuck-at-1
        mismatch(3, 0x00000000, 0x00000001),  # word 3 bit 0 flips both ways: random
        mismatch(3, 0xFFFFFFFF, 0xFFFFFFFE),
        mismatch(4, 0x0000000F, 0x000000F0),  # four bits down, four up, in one word: random
        mismatch(1, 0x00000000, 0x00000004, chunk=1),  # the same word and bit in another chunk: its own cell
    ]
    kinds = [m.kind for m in memory.classify(reports)]
    assert kinds == ["stuck-at-0"] * 2 + ["stuck-at-1"] * 2 + ["random"] * 3 + ["stuck-at-1"]
    assert memory.classify([mismatch(5, 0xFFFFFFFF, 0x0000FFFF)])[0].kind == "stuck-at-0"  # 16 bits, all down
    assert mismatch(0, 0x0F, 0xF0).to_dict() == {
        "pattern": "p",
        "pass": "p",
        "chunk": 0,
        "offset": 0,
        "expected": 0x0F,
        "found": 0xF0,
        "xor": 0xFF,
        "bits": [0, 1, 2, 3, 4, 5, 6, 7],
        "kind": "",
    }


def test_allocation_respects_max_bytes_in_whole_chunks_and_whole_mib():
    held = memory.allocate(CPU, fraction=0.9, chunk_bytes=2 * MIB, max_bytes=7 * MIB + 12345)
    assert [c.numel() * 4 for c in held.chunks] == [2 * MIB, 2 * MIB, 2 * MIB, MIB]
    assert held.nbytes == 7 * MIB and all(c.dtype == torch.int32 for c in held.chunks) and held.note == ""
    assert held.total_bytes > held.nbytes
    assert memory.chunk_sizes(3 * MIB, 16 * MIB) == [3 * MIB]
    assert memory.chunk_sizes(5 * MIB // 2, 1000) == [MIB, MIB]  # chunks are at least, and whole, MiB
    assert memory.chunk_sizes(10 << 30, (8 << 30) + 5) == [4 << 30, 4 << 30, 2 << 30]  # int32 indices: 2**30 words
    default = memory.allocate(CPU, fraction=0.9, chunk_bytes=16 * MIB, max_bytes=None)
    assert default.nbytes == memory.CPU_DEFAULT_BYTES
    more = memory.allocate(CPU, fraction=0.9, chunk_bytes=16 * MIB, max_bytes=memory.CPU_DEFAULT_BYTES + 16 * MIB)
    assert more.nbytes == memory.CPU_DEFAULT_BYTES + 16 * MIB  # on the CPU the cap is what it takes


def test_an_allocation_that_fails_near_the_end_keeps_what_it_took(monkeypatch):
    real, made = torch.empty, []

    def empty(*args, **kwargs):
        if len(made) == 2:
            raise RuntimeError("DefaultCPUAllocator: not enough memory")
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(torch, "empty", empty)
    held = memory.allocate(CPU, fraction=0.9, chunk_bytes=MIB, max_bytes=4 * MIB)
    assert held.nbytes == 2 * MIB and "allocation stopped at" in held.note and "not enough memory" in held.note
    monkeypatch.setattr(torch, "empty", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("none at all")))
    with pytest.raises(RuntimeError, match="could not allocate any memory"):
        memory.allocate(CPU, fraction=0.9, chunk_bytes=MIB, max_bytes=4 * MIB)


def test_a_burn_runs_every_pattern_once_however_short_and_repeats_while_time_remains():
    held = chunks(1)
    results: list[memory.PatternResult] = []
    assert memory.burn(held, ("zeros", "random"), duration_s=0.0, on_result=results.append) == MIB
    assert [(r.pattern, r.round) for r in results] == [("zeros", 0), ("random", 0)]
    results.clear()
    memory.burn(held, ("zeros", "ones"), duration_s=0.3, on_result=results.append)
    assert len({r.round for r in results}) > 1 and results[0].pattern == "zeros"


def test_a_pattern_that_raises_is_reported_and_the_others_go_on():
    held = chunks(1)
    context, sent = local_context("error")
    results: list[memory.PatternResult] = []
    memory.burn(held, ("zeros", "ones"), duration_s=0.2, context=context, on_result=results.append)
    failed = [m for m in sent.sent if isinstance(m, PhaseFailed)]
    assert [(m.phase, m.metric) for m in failed] == [("zeros", "memory.zeros.verify.gbps")]  # once: left out after
    assert {r.pattern for r in results} == {"ones"}


def test_the_worker_reports_every_pattern_then_what_it_held_and_verified():
    context, sent = local_context()
    job = memory.Job(fraction=0.9, chunk_bytes=MIB, max_bytes=2 * MIB, duration_s=0.0)
    memory.worker(context, job)
    results = [m for m in sent.sent if isinstance(m, memory.PatternResult)]
    assert [r.pattern for r in results] == list(memory.PATTERNS)
    checked = sent.sent[-1]
    assert isinstance(checked, memory.Checked)
    assert (checked.bytes_held, checked.bytes_verified) == (2 * MIB, 2 * MIB)
    assert 0 < checked.coverage < 1 and checked.total_bytes > 2 * MIB
    assert any(isinstance(m, Progress) for m in sent.sent)


def test_memory_bandwidth_bench_prints_every_figure_and_the_ratios():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "memory_bandwidth.py"),
            "--device",
            "cpu",
            "--mib",
            "2",
            "--chunk-mib",
            "1",
            "--rounds",
            "2",
            "--seconds",
            "0.05",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for text in ("one round of every pattern over 2 MiB: ", "median GB/s: verify ", "ratio verify/copy: "):
        assert text in done.stdout, done.stdout
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}
    assert rows["pattern"] == ["verify", "v/copy", "v/read", "(median", "GB/s", "of", "its", "passes)"]
    for pattern in memory.PATTERNS:  # each pattern's verify, and its ratios to the copy's and the read's
        assert len(rows[pattern]) == 3 and all(float(x) > 0 for x in rows[pattern]), done.stdout


# -- the generated patterns on a GPU: more random passes, fused kernels ------------------------


def test_a_gpu_round_spends_as_many_passes_on_random_data_as_on_walking_ones():
    gpu = passes("random", seed=1, round_=0)  # the default is a GPU's count
    assert len(gpu) == RANDOM_PASSES["cuda"] == len(passes("walking-ones", seed=1, round_=0)) == 32
    for chunk in (0, 5):
        assert len({tuple(fill.params(chunk)) for fill in gpu}) == 32  # every pass writes its own data


@pytest.fixture
def fused_here(monkeypatch: pytest.MonkeyPatch) -> memory_patterns.Fused:
    """The fused kernels compiled for the CPU (inductor's C++ backend), as they are for a GPU (Triton)."""
    fused = memory_patterns.Fused()
    monkeypatch.setattr(memory_patterns, "FUSED", fused)
    monkeypatch.setattr(memory_patterns, "FUSED_ON", frozenset({"cpu", "cuda"}))
    return fused


@pytest.mark.slow
def test_the_fused_kernels_write_and_count_exactly_what_the_plain_path_and_the_reference_do(fused_here):
    held = memory.allocate(CPU, fraction=0.9, chunk_bytes=2 * MIB, max_bytes=5 * MIB).chunks  # two sizes of chunk
    assert len({c.numel() for c in held}) == 2
    fused_here.warm(held)  # once warm, a call that would compile again raises
    for fill in passes("random", seed=9, round_=4, random_passes=2) + passes("address", seed=9, round_=4):
        memory.write_pass(fill, held)  # fused
        for index, chunk in enumerate(held):
            assert torch.equal(chunk.long(), fill.expected(index, 0, chunk.numel(), CPU)), fill.name  # plain
        if fill.name.startswith("random"):
            first = [w & 0xFFFFFFFF for w in held[2][:20].tolist()]
            assert first == [_hash(9, 4, int(fill.name[-1]), 2, i) for i in range(20)]
        assert memory.verify_pass(fill, held).bad_words == 0
        flip(held[2], 54321, 31)
        held[0][7] = held[0][8]
        verified = memory.verify_pass(fill, held, pattern="p")  # fused counts, plain describes
        assert verified.bad_words == 2, fill.name
        assert [(m.chunk, m.offset, m.bits) for m in verified.mismatches][1] == (2, 54321, (31,))
        assert verified.mismatches[0].chunk == 0 and verified.mismatches[0].offset == 7


def test_kernels_that_do_not_compile_fail_the_generated_patterns_by_name_while_the_others_run(fused_here, monkeypatch):
    def broken(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("Failed to find C compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    context, sent = local_context()
    memory.worker(context, memory.Job(fraction=0.9, chunk_bytes=MIB, max_bytes=2 * MIB, duration_s=0.0))
    failed = {m.phase: m for m in sent.sent if isinstance(m, PhaseFailed)}
    assert list(failed) == [memory.COMPILING, "random", "address"]
    assert "Failed to find C compiler" in failed[memory.COMPILING].error
    assert all("failed on their first call" in failed[p].error for p in ("random", "address"))
    assert failed["random"].metric == "memory.random.verify.gbps"
    done = [m.pattern for m in sent.sent if isinstance(m, memory.PatternResult)]
    assert done == ["zeros", "ones", "checkerboard", "walking-ones", "moving-inversions"]


def test_a_long_compile_keeps_the_worker_alive(fused_here, monkeypatch):
    context, sent = local_context()

    def said() -> int:
        return sum(isinstance(m, Progress) and m.phase.startswith("compiling") for m in sent.sent)

    def slow(fn, **kwargs):
        def compiled(*args):
            deadline = time.monotonic() + 30
            while said() < 3 and time.monotonic() < deadline:  # as long as it takes to hear from the keepalive
                time.sleep(0.01)
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", slow)
    fused_here.warm(chunks(1), context.progress)
    assert said() >= 3
