"""Read nccl-tests' `all_reduce_perf` output: one row per size, out-of-place and in-place figures.

Both layouts nccl-tests has printed are read: with a `root` column (2.13 and later) and
without (older), and `N/A` in `#wrong` when validation was off (`-c 0`). Used by
bench/nccl_compare.sh to set our all-reduce's figures beside nccl-tests' at the same sizes.

    python bench/nccl_tests.py all_reduce_perf.log              # size, busbw out of place and in place
    python bench/nccl_tests.py compare all_reduce_perf.log RESULT.json   # ours beside it, and the ratio
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

GOAL = 0.97
"""Our busbw at 8 GiB over nccl-tests': at least this."""
GOAL_SIZE = 8 << 30


@dataclasses.dataclass(frozen=True, kw_only=True)
class Row:
    size: int
    """Bytes per rank."""
    count: int
    dtype: str
    redop: str
    time_us: float
    algbw: float
    busbw: float
    wrong: int | None
    """None where validation was off."""
    in_place_time_us: float
    in_place_algbw: float
    in_place_busbw: float
    in_place_wrong: int | None


def parse(text: str) -> list[Row]:
    """Every result row of the output, in order (a size printed twice is kept twice, as printed)."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.lstrip().startswith("#") or not fields[0].isdigit():
            continue
        if len(fields) == 13:  # size count type redop root | time algbw busbw wrong | the same in place
            fields = fields[:4] + fields[5:]
        if len(fields) != 12:
            continue
        rows.append(
            Row(
                size=int(fields[0]),
                count=int(fields[1]),
                dtype=fields[2],
                redop=fields[3],
                time_us=float(fields[4]),
                algbw=float(fields[5]),
                busbw=float(fields[6]),
                wrong=_wrong(fields[7]),
                in_place_time_us=float(fields[8]),
                in_place_algbw=float(fields[9]),
                in_place_busbw=float(fields[10]),
                in_place_wrong=_wrong(fields[11]),
            )
        )
    return rows


def _wrong(text: str) -> int | None:
    return None if text == "N/A" else int(text)


def best_busbw(rows: list[Row]) -> dict[int, float]:
    """Per size, the better of out-of-place and in-place busbw (ours is in place)."""
    found: dict[int, float] = {}
    for row in rows:
        found[row.size] = max(found.get(row.size, 0.0), row.busbw, row.in_place_busbw)
    return found


def ours(result: dict) -> dict[int, float]:
    """Per size in bytes, the median over ranks of our all-reduce's busbw in a result document."""
    figures: dict[int, list[float]] = {}
    for m in result["measurements"]:
        parts = m["metric"].split(".")
        if len(parts) == 4 and parts[:2] == ["nccl", "allreduce"] and parts[3] == "busbw":
            label = parts[2]
            size = int(label[:-3]) << (30 if label.endswith("gib") else 20)
            figures.setdefault(size, []).append(m["value"])
    return {size: statistics.median(values) for size, values in figures.items()}


def compare(perf: list[Row], result: dict) -> list[tuple[int, float, float, float]]:
    """(size, nccl-tests busbw, ours, ours / theirs) at every size both measured."""
    theirs = best_busbw(perf)
    mine = ours(result)
    return [(size, theirs[size], mine[size], mine[size] / theirs[size]) for size in sorted(mine) if size in theirs]


def _compare(log: str, result_path: str) -> int:
    rows = compare(parse(Path(log).read_text()), json.loads(Path(result_path).read_text()))
    if not rows:
        print("no size measured by both", file=sys.stderr)
        return 1
    print(f"{'size':>12} {'nccl-tests':>10} {'ours':>8} {'ratio':>6}")
    for size, theirs, mine, ratio in rows:
        print(f"{size:>12} {theirs:>10.2f} {mine:>8.2f} {ratio:>6.3f}")
    at_goal = [ratio for size, _, _, ratio in rows if size == GOAL_SIZE]
    if not at_goal:
        print(f"no figure at {GOAL_SIZE} B: the goal is not judged", file=sys.stderr)
        return 1
    met = at_goal[0] >= GOAL
    print(f"at 8 GiB: {at_goal[0]:.3f} of nccl-tests' busbw (goal {GOAL}): {'met' if met else 'MISSED'}")
    return 0 if met else 1


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "compare":
        return _compare(argv[1], argv[2])
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 4
    rows = parse(Path(argv[0]).read_text())
    if not rows:
        print(f"{argv[0]}: no all_reduce_perf result rows", file=sys.stderr)
        return 1
    for row in rows:
        print(f"{row.size:>12} {row.busbw:>8.2f} {row.in_place_busbw:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
