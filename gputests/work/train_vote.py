"""The training test's vote: GPUs of one model must agree bitwise, step by step.

Every GPU trains the same model from the same start on the same batches with
deterministic kernels, so GPUs of one model (name, SM count, compute capability;
one driver and one torch per node) must produce the same fingerprint at every step
(docs/determinism.md). This module is pure: it takes each device's fingerprints
and says who disagrees, where, and whether a majority tells which side is wrong.
It imports neither torch nor the harness, so the worker uses `Print` too.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import struct
from collections.abc import Hashable, Mapping, Sequence

MASK = (1 << 64) - 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Print:
    """One step's fingerprint on one device: what the step produced, reduced to a few words."""

    loss_bits: int
    """The bit pattern of the step's loss (float32), as an unsigned 32-bit integer."""
    grad_norm_bits: int
    """The bit pattern of the gradient norm before clipping (float32)."""
    groups: tuple[int, ...]
    """Per tensor group (embedding, each layer, head), the int64 sum, wrapping, of the
    bit patterns of its updated parameters read as 32-bit integers."""

    @property
    def loss(self) -> float:
        return _float(self.loss_bits)

    @property
    def grad_norm(self) -> float:
        return _float(self.grad_norm_bits)

    @property
    def checksum(self) -> int:
        """The 64-bit checksum of every updated parameter: the group sums added, wrapping."""
        return sum(self.groups) & MASK

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.loss_bits, self.grad_norm_bits, self.checksum)

    def hex(self) -> str:
        """As the result file shows it: loss bits, gradient-norm bits, checksum."""
        return f"{self.loss_bits:08x}:{self.grad_norm_bits:08x}:{self.checksum:016x}"

    def differs_from(self, other: Print, names: Sequence[str]) -> tuple[list[str], str]:
        """What differs from `other`: the parts (loss, gradient norm, parameters) and the first
        tensor group whose parameters differ ("" when the parameters agree)."""
        parts = []
        if self.loss_bits != other.loss_bits:
            parts.append("loss")
        if self.grad_norm_bits != other.grad_norm_bits:
            parts.append("gradient norm")
        first = next((i for i, (a, b) in enumerate(zip(self.groups, other.groups, strict=False)) if a != b), None)
        if first is None and len(self.groups) != len(other.groups):
            first = min(len(self.groups), len(other.groups))
        if first is not None:
            parts.append("parameters")
        group = (names[first] if first < len(names) else f"group {first}") if first is not None else ""
        return parts, group


def digest(prints: Sequence[Print]) -> str:
    """A short digest of a run of fingerprints, for comparing nodes in the fleet report."""
    return hashlib.sha256("\n".join(p.hex() for p in prints).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Disagreement:
    suspect: int
    """Position of the device whose fingerprint differs."""
    step: int
    """The first step (counted from 1) at which it differs."""
    reference: int
    """Position of the device it was compared with: one of the majority, or its opposite."""
    majority: bool
    """True when the reference's fingerprint is shared by a strict majority of the devices compared."""
    voters: int
    """How many devices of this model were compared at this step."""
    parts: tuple[str, ...]
    """What differs: loss, gradient norm, parameters."""
    group: str
    """The first tensor group whose parameters differ; "" when the parameters agree."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tally:
    """The vote of one run."""

    disagreements: list[Disagreement]
    compared: dict[int, int]
    """Per device position, how many of its steps were compared with another device's."""


def vote(models: Mapping[int, Hashable], prints: Mapping[int, Sequence[Print]], names: Sequence[str]) -> Tally:
    """Compare every device's fingerprints, step by step, with the other devices of its model.

    `models`: each device position's model key; `prints`: its fingerprints in step order (a device
    that reported none is left out); `names`: the tensor groups' names. A device is compared up
    to the steps every peer still in the vote reached. At the first step where fingerprints
    differ, a device against a strict majority is the suspect; with no strict majority, every
    device that disagrees with another is (none can be told right). A device leaves the vote at
    its first disagreement: from there on its training has diverged and every step differs."""
    by_model: dict[Hashable, list[int]] = collections.defaultdict(list)
    for position in sorted(prints):
        if prints[position]:
            by_model[models[position]].append(position)
    found: list[Disagreement] = []
    compared = {p: 0 for p in prints}
    for positions in by_model.values():
        found += _vote_model(positions, prints, names, compared)
    return Tally(disagreements=found, compared=compared)


def _vote_model(
    positions: list[int], prints: Mapping[int, Sequence[Print]], names: Sequence[str], compared: dict[int, int]
) -> list[Disagreement]:
    found: list[Disagreement] = []
    voting = list(positions)
    step = 0
    while len(voting) >= 2:
        reached = min(len(prints[p]) for p in voting)
        if step >= reached:
            break
        keys = {p: prints[p][step].key for p in voting}
        counts = collections.Counter(keys.values())
        if len(counts) == 1:
            for p in voting:
                compared[p] = step + 1
            step += 1
            continue
        top, votes = counts.most_common(1)[0]
        majority = votes * 2 > len(voting)
        reference = min(p for p in voting if keys[p] == top)
        if majority:
            suspects = [p for p in voting if keys[p] != top]
        else:
            suspects = list(voting)
        for p in suspects:
            other = reference if p != reference else min(q for q in voting if keys[q] != top)
            parts, group = prints[p][step].differs_from(prints[other][step], names)
            found.append(
                Disagreement(
                    suspect=p,
                    step=step + 1,
                    reference=other,
                    majority=majority,
                    voters=len(voting),
                    parts=tuple(parts),
                    group=group,
                )
            )
            compared[p] = step + 1
        for p in voting:
            if p not in suspects:
                compared[p] = step + 1
        voting = [p for p in voting if p not in suspects]
        step += 1
    return found


FLAKY = "flaky"
"""Its replay of the run up to the step differs from its first run: an intermittent fault."""
CLEARED = "cleared"
"""Its replay agrees with its first run, and so does every other device left in the tie."""
TIED = "tied"
"""Still no telling which is right: consistent devices that disagree, or a replay that never came."""


def break_tie(
    tied: Sequence[int], step: int, prints: Mapping[int, Sequence[Print]], replays: Mapping[int, Print | None]
) -> dict[int, str]:
    """Devices that disagreed at `step` with no majority, judged after each replayed its training
    from the start up to that step: one whose replay differs from its first run is FLAKY; the
    others are CLEARED if their first runs then agree, else still TIED. A device whose replay is
    missing stays TIED."""
    found: dict[int, str] = {}
    steady: list[int] = []
    for p in tied:
        again = replays.get(p)
        if again is None:
            found[p] = TIED
        elif again.key != prints[p][step - 1].key:
            found[p] = FLAKY
        else:
            steady.append(p)
    agree = len({prints[p][step - 1].key for p in steady}) == 1 and not any(v == TIED for v in found.values())
    for p in steady:
        found[p] = CLEARED if agree and FLAKY in found.values() else TIED
    return found


def progressed(prints: Sequence[Print]) -> tuple[bool, str]:
    """Whether training progressed: every loss finite, and the mean loss of the last quarter of
    the steps below that of the first quarter. Returns the judgement and a line saying why."""
    losses = [p.loss for p in prints]
    if not losses:
        return False, "no step was reported"
    bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    if bad is not None:
        return False, f"the loss is {losses[bad]} at step {bad + 1} of {len(losses)}"
    if len(losses) < 2:
        return False, f"only {len(losses)} step was reported: too few to tell whether the loss falls"
    quarter = max(1, len(losses) // 4)
    first = sum(losses[:quarter]) / quarter
    last = sum(losses[-quarter:]) / quarter
    if not last < first:
        return False, (
            f"the loss did not fall over {len(losses)} steps: {first:.4g} over the first {quarter}, "
            f"{last:.4g} over the last {quarter}"
        )
    return True, f"the loss fell from {first:.4g} to {last:.4g} over {len(losses)} steps"


def _float(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0])
