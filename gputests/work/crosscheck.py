"""Compare the first product of every GPU of one model: they must be bitwise equal.

Every GPU multiplies the same inputs with the same library, so GPUs of one model
(same name, multiprocessor count and compute capability) must produce the same
bits. Workers send per-row fingerprints; where they disagree, the parent asks both
sides for the differing rows and counts the differing elements exactly. The
majority names the odd one out; without a strict majority every side is suspect.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from harness.devices import Device

MAX_ROWS = 64
"""Rows fetched per disagreement: a systematic mismatch must not ship whole matrices (GBs) to the parent."""

ELEMENT = {"bf16": np.int16, "fp16": np.int16, "fp8": np.int16, "tf32": np.int32, "fp32": np.int32}
"""The integer type with the width of each dtype's product (fp8 products are bf16)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Disagreement:
    dtype: str
    suspect: int
    """Position of the device whose product differs."""
    reference: int
    """Position of the device it was compared with."""
    rows: tuple[int, ...]
    majority: bool
    """True when the reference's product is shared by a strict majority of the model's GPUs."""
    peers: int
    """How many GPUs of this model reported a product for this dtype."""

    @property
    def counted_rows(self) -> tuple[int, ...]:
        """The rows fetched and counted: at most MAX_ROWS of them."""
        return self.rows[:MAX_ROWS]


class Fingerprinted(Protocol):
    @property
    def fingerprints(self) -> bytes: ...

    @property
    def digest(self) -> str: ...


Results = Mapping[int, Mapping[str, Fingerprinted]]
"""Per device position, per dtype: the worker's result."""


def disagreements(devices: Sequence[Device], results: Results) -> list[Disagreement]:
    models: dict[tuple[str, str, int, str], list[int]] = collections.defaultdict(list)
    for position, device in enumerate(devices):
        models[device.model_key].append(position)
    found: list[Disagreement] = []
    for positions in models.values():
        dtypes = {dtype for p in positions for dtype in results.get(p, {})}
        for dtype in sorted(dtypes):
            digests = {p: results[p][dtype].digest for p in positions if dtype in results.get(p, {})}
            counts = collections.Counter(digests.values())
            if len(counts) < 2:
                continue
            top, votes = counts.most_common(1)[0]
            reference = min(p for p, digest in digests.items() if digest == top)
            for p, digest in sorted(digests.items()):
                if digest != top:
                    found.append(
                        Disagreement(
                            dtype=dtype,
                            suspect=p,
                            reference=reference,
                            rows=_differing_rows(results[p][dtype], results[reference][dtype]),
                            majority=votes * 2 > len(digests),
                            peers=len(digests),
                        )
                    )
    return found


def requests(found: Sequence[Disagreement]) -> dict[int, dict[str, list[int]]]:
    """The rows each device must send so that every disagreement can be counted."""
    wanted: dict[int, dict[str, set[int]]] = collections.defaultdict(lambda: collections.defaultdict(set))
    for d in found:
        wanted[d.suspect][d.dtype].update(d.counted_rows)
        wanted[d.reference][d.dtype].update(d.counted_rows)
    return {p: {dtype: sorted(rows) for dtype, rows in by_dtype.items()} for p, by_dtype in wanted.items()}


def bad_elements(
    d: Disagreement, asked: Mapping[int, Mapping[str, list[int]]], replies: Mapping[int, Mapping[str, bytes]]
) -> int | None:
    """Elements that differ between the two devices in the counted rows, or None when a reply is missing."""
    try:
        suspect = _rows(d, d.suspect, asked, replies)
        reference = _rows(d, d.reference, asked, replies)
    except KeyError:
        return None
    return int(np.count_nonzero(suspect != reference))


def _rows(
    d: Disagreement,
    position: int,
    asked: Mapping[int, Mapping[str, list[int]]],
    replies: Mapping[int, Mapping[str, bytes]],
) -> Any:
    order = asked[position][d.dtype]
    data = np.frombuffer(replies[position][d.dtype], dtype=ELEMENT[d.dtype]).reshape(len(order), -1)
    index = {row: i for i, row in enumerate(order)}
    return data[[index[row] for row in d.counted_rows]]


def _differing_rows(a: Fingerprinted, b: Fingerprinted) -> tuple[int, ...]:
    left = np.frombuffer(a.fingerprints, dtype=np.int64)
    right = np.frombuffer(b.fingerprints, dtype=np.int64)
    if left.shape != right.shape:
        return tuple(range(max(left.size, right.size)))
    return tuple(int(i) for i in np.flatnonzero(left != right))
