"""The memory test, parent side: what it asks each device and what it makes of the answers.

Every device takes its share of memory and runs the patterns at once
(gputests/work/memory.py is the worker side). Per device it records the coverage (bytes
verified over the device's memory), each pattern's verify bandwidth (the median of its
passes' windows, `memory.<pattern>.verify.gbps`), the whole round's (bytes verified by
every pass of a complete round over their verify time, a window per round:
`memory.verify.gbps`; a slow pattern weighs in it by the time it takes) and the bad
words (exact, judged against a ceiling of 0), and a DATA_MISMATCH finding that
describes the bad words. A device that hangs, crashes or
raises becomes a finding through the scaffolding (harness/workers/devicetest.py); the
others' figures stay.
"""

from __future__ import annotations

import collections
import dataclasses

from gputests.work import memory
from harness.devices import Device
from harness.groups import MemorySection
from harness.profiles import Profile
from harness.records import Code, Direction, Remediation, Severity
from harness.workers.devicetest import DeviceRun, Outcome, Scope

COVERAGE = "memory.coverage"
VERIFY = memory.METRIC
BAD_WORDS = "memory.bad_words"
MAX_DETAILS = 64
"""Bad words described in a finding's details; the count is exact whatever their number."""
ROUND_S = 30.0
"""Allowance for work past the duration (every pattern runs once whatever the duration, and a
pattern started before the end finishes). An estimate, not yet measured on a GPU: a round is 73
verify passes and about as many write passes over the memory held, all at memory bandwidth
(about 60 ms a pass, write and verify, for 120 GB at 4 TB/s): under 5 s."""
COMPILE_S = 120.0
"""Allowance on a GPU for compiling the fused kernels before the burn (an estimate: two Triton
kernels per chunk size, seconds each; a warm inductor cache makes it faster)."""


@dataclasses.dataclass(kw_only=True)
class _Tally:
    """What one device's pattern results add up to."""

    windows: dict[str, list[float]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    """Per pattern, its passes' verify GB/s."""
    rounds: dict[int, dict[str, tuple[int, float]]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(dict)
    )
    """Per round, per pattern: bytes verified and verify seconds."""
    bad_words: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    mismatches: list[memory.Mismatch] = dataclasses.field(default_factory=list)
    described_all: bool = True

    def add(self, result: memory.PatternResult) -> None:
        self.windows[result.pattern].extend(result.windows)
        self.rounds[result.round][result.pattern] = (result.bytes_verified, result.seconds)
        self.bad_words[result.pattern] += result.bad_words
        room = memory.MAX_RECORDS - len(self.mismatches)
        self.mismatches.extend(result.mismatches[:room])
        self.described_all &= len(result.mismatches) == result.bad_words and room >= len(result.mismatches)

    def round_windows(self, patterns: tuple[str, ...]) -> list[float]:
        """GB/s of each round in which every pattern ran: its bytes verified over its verify time."""
        complete = [done for _, done in sorted(self.rounds.items()) if set(done) >= set(patterns)]
        return [
            sum(b for b, _ in done.values()) / max(sum(s for _, s in done.values()), 1e-12) / 1e9 for done in complete
        ]


def run(scope: Scope) -> Outcome:
    jobs = [_job(device, scope.profile) for device in scope.devices]
    tallies = {device.uuid: _Tally() for device in scope.devices}
    checked: dict[str, memory.Checked] = {}
    compiling = COMPILE_S if any(d.kind == "cuda" for d in scope.devices) else 0.0
    busy_s = scope.profile.duration_s + ROUND_S + compiling
    with DeviceRun(scope, memory.worker, jobs, busy_s=busy_s) as device_run:
        for device, message in device_run.messages(until=memory.Checked):
            if isinstance(message, memory.PatternResult):
                tallies[device.uuid].add(message)
            elif isinstance(message, memory.Checked):
                checked[device.uuid] = message

    for device in scope.devices:
        tally, done = tallies[device.uuid], checked.get(device.uuid)
        if done is not None and tally.windows:  # figures only from a worker that finished
            total = device.memory_bytes or done.total_bytes
            device_run.measure(device, COVERAGE, [done.bytes_verified / total], "fraction", Direction.HIGHER)
            rounds = tally.round_windows(jobs[0].patterns)
            if rounds:  # a pattern that failed leaves no complete round: its error stops the pass
                device_run.measure(device, VERIFY, rounds, "GB/s", Direction.HIGHER)
            for pattern, windows in tally.windows.items():
                device_run.measure(device, memory.metric_name(pattern), windows, "GB/s", Direction.HIGHER)
            device_run.measure(device, BAD_WORDS, [float(sum(tally.bad_words.values()))], "words", Direction.LOWER)
        if sum(tally.bad_words.values()):  # a bad word seen before a hang is still a bad word
            _mismatch(device_run, device, tally)
    return device_run.outcome


def _job(device: Device, profile: Profile) -> memory.Job:
    section = profile.section(MemorySection)
    return memory.Job(
        fraction=section.fraction,
        chunk_bytes=section.chunk_mib << 20,
        max_bytes=section.max_mib << 20 if section.max_mib is not None else None,
        duration_s=profile.duration_s,
    )


def _mismatch(device_run: DeviceRun[memory.Job], device: Device, tally: _Tally) -> None:
    """One DATA_MISMATCH per device: the bad words per pattern, the first one described, and the
    bits that flipped with their class, judged over every bad word of the device described."""
    total = sum(tally.bad_words.values())
    patterns = ", ".join(f"{pattern} {count}" for pattern, count in tally.bad_words.items() if count)
    records = memory.classify(tally.mismatches)
    text = f"{total} bad words ({patterns})"
    if records:
        text += f"; first: {records[0].describe()}"
        if len(records) > 1:
            text += f"; bits flipped: {_bits(records)}"
    device_run.finding(
        device,
        Code.DATA_MISMATCH,
        Severity.FAIL,
        text,
        Remediation.REPLACE_GPU,
        metric=BAD_WORDS,
        bad_words=total,
        by_pattern={pattern: count for pattern, count in tally.bad_words.items() if count},
        described=len(records),
        described_all=tally.described_all and len(records) <= MAX_DETAILS,
        mismatches=[m.to_dict() for m in records[:MAX_DETAILS]],
    )


def _bits(records: list[memory.Mismatch]) -> str:
    """Each bit position that flipped, with how many described words it flipped in and their classes."""
    seen: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for m in records:
        for bit in m.bits:
            seen[bit][m.kind] += 1
    return ", ".join(
        f"bit {bit} ({', '.join(f'{kind} x{n}' for kind, n in sorted(kinds.items()))})"
        for bit, kinds in sorted(seen.items())
    )
