"""The pairwise search: which member (node, or GPU of one node) makes a collective slow.

An all-reduce is as fast as its slowest member, so a slow job's figure blames every
member alike. The search measures the members in pairs, all pairs at once, then
pairs each member of a slow pair with a member a fast pair cleared: a member whose
every pair was slow, one of them with a cleared member, is named. A member never
paired with a cleared one stays unresolved. A pair is slow below `tolerance` times
the median pair, which one pair fast or slow by chance does not move; when most
pairs are slow, the fault is the fabric or all of them, and no one is named.

Pure: `measure` is given disjoint sets of members to time at once and returns each
set's bus bandwidth; gputests/work/nccl_run.py times them as subgroups of its ranks.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence

Pair = tuple[int, int]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    pair: Pair
    busbw: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Search:
    culprits: tuple[int, ...]
    cleared: tuple[int, ...]
    unresolved: tuple[int, ...]
    trials: tuple[Trial, ...]
    reference: float
    """The median pair's figure: a pair below `tolerance` times it is slow."""
    tolerance: float

    def slow(self, trial: Trial) -> bool:
        return trial.busbw < self.tolerance * self.reference

    def describe(self, member: Callable[[int], str]) -> str:
        """One line per trial, for a finding's message."""
        return "; ".join(
            f"{member(t.pair[0])}+{member(t.pair[1])} {t.busbw:.3g} GB/s{' (slow)' if self.slow(t) else ''}"
            for t in self.trials
        )


def search(count: int, measure: Callable[[Sequence[Pair]], Sequence[float]], *, tolerance: float) -> Search:
    """Name the slow members among `count`; a pair below `tolerance` (0 to 1) times the median
    pair is slow."""
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be between 0 and 1, got {tolerance}")
    trials: list[Trial] = []
    rounds = [[(i, i + 1) for i in range(0, count - 1, 2)]]
    while rounds[-1]:
        pairs = rounds[-1]
        trials += [Trial(pair=p, busbw=float(b)) for p, b in zip(pairs, measure(pairs), strict=True)]
        rounds.append(_next_round(count, trials, tolerance))
    return _judge(count, trials, tolerance)


def _judge(count: int, trials: Sequence[Trial], tolerance: float) -> Search:
    reference = statistics.median(t.busbw for t in trials) if trials else 0.0
    result = Search(
        culprits=(), cleared=(), unresolved=(), trials=tuple(trials), reference=reference, tolerance=tolerance
    )
    cleared = {m for t in trials if not result.slow(t) for m in t.pair}
    culprits = {
        m
        for t in trials
        if result.slow(t)
        for m in t.pair
        if m not in cleared and any(other in cleared for other in t.pair if other != m)
    }
    unresolved = set(range(count)) - cleared - culprits
    return dataclasses.replace(
        result, culprits=tuple(sorted(culprits)), cleared=tuple(sorted(cleared)), unresolved=tuple(sorted(unresolved))
    )


def _next_round(count: int, trials: Sequence[Trial], tolerance: float) -> list[Pair]:
    """Disjoint pairs that can still tell something: each undecided member with a cleared one
    (or, with none cleared yet, with an undecided member it has not been paired with)."""
    state = _judge(count, trials, tolerance)
    tried = {frozenset(t.pair) for t in trials}
    undecided = [m for m in state.unresolved]
    helpers = list(state.cleared)
    busy: set[int] = set()
    pairs: list[Pair] = []
    for m in undecided:
        if m in busy:
            continue
        partners = helpers or [o for o in undecided if o != m]
        partner = next((o for o in partners if o not in busy and frozenset((m, o)) not in tried), None)
        if partner is not None:
            pairs.append((m, partner))
            busy |= {m, partner}
    return pairs
