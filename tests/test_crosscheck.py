"""Cross-GPU comparison, on synthetic worker results."""

import dataclasses
import hashlib

import numpy as np

from gputests.work import crosscheck
from tests.helpers import gpus

ROWS, COLS = 4, 8


def product(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-(2**15), 2**15, size=(ROWS, COLS), dtype=np.int16)


@dataclasses.dataclass(frozen=True)
class Result:
    fingerprints: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.fingerprints).hexdigest()


def message(bits: np.ndarray) -> Result:
    weights = np.arange(COLS, dtype=np.int64) + 1
    return Result((bits.astype(np.int64) * weights).sum(axis=1).tobytes())


def replies(products: dict[int, np.ndarray], asked: dict[int, dict[str, list[int]]]) -> dict[int, dict[str, bytes]]:
    return {p: {d: products[p][rows].tobytes() for d, rows in wanted.items()} for p, wanted in asked.items()}


def test_identical_products_raise_nothing():
    devices = gpus(4)
    results = {i: {"bf16": message(product())} for i in range(4)}
    assert crosscheck.disagreements(devices, results) == []


def test_the_majority_names_the_odd_gpu_and_the_count_is_exact():
    devices = gpus(4)
    products = {i: product() for i in range(4)}
    products[2][1, 3] ^= 1
    products[2][3, 0:5] ^= 4
    results = {i: {"bf16": message(p)} for i, p in products.items()}
    found = crosscheck.disagreements(devices, results)
    assert [(d.suspect, d.reference, d.rows, d.majority, d.peers) for d in found] == [(2, 0, (1, 3), True, 4)]
    asked = crosscheck.requests(found)
    assert asked == {2: {"bf16": [1, 3]}, 0: {"bf16": [1, 3]}}
    assert crosscheck.bad_elements(found[0], asked, replies(products, asked)) == 6


def test_two_gpus_that_disagree_are_both_suspect():
    devices = gpus(2)
    products = {0: product(), 1: product()}
    products[1][0, 0] ^= 1
    found = crosscheck.disagreements(devices, {i: {"bf16": message(p)} for i, p in products.items()})
    assert [(d.suspect, d.reference, d.majority) for d in found] == [(1, 0, False)]


def test_gpus_of_different_models_are_not_compared():
    devices = gpus(1) + [gpus(2, name="NVIDIA A100-SXM4-80GB")[1]]
    results = {0: {"bf16": message(product(0))}, 1: {"bf16": message(product(1))}}
    assert crosscheck.disagreements(devices, results) == []


def test_a_gpu_that_reported_nothing_is_left_out_and_a_missing_reply_is_uncounted():
    devices = gpus(3)
    products = {0: product(), 1: product()}
    products[1][2, 2] ^= 1
    results = {0: {"bf16": message(products[0])}, 1: {"bf16": message(products[1])}, 2: {}}
    found = crosscheck.disagreements(devices, results)
    assert [(d.suspect, d.peers) for d in found] == [(1, 2)]
    asked = crosscheck.requests(found)
    partial = replies(products, asked)
    del partial[0]
    assert crosscheck.bad_elements(found[0], asked, partial) is None


def test_a_systematic_mismatch_fetches_at_most_max_rows():
    devices = gpus(3)
    wide = np.random.default_rng(1).integers(-(2**15), 2**15, size=(200, COLS), dtype=np.int16)
    other = wide.copy()
    other[:, 0] += 1  # every row differs
    products = {0: wide, 1: wide, 2: other}
    results = {p: {"bf16": message(products[p])} for p in products}
    [d] = crosscheck.disagreements(devices, results)
    assert len(d.rows) == 200 and len(d.counted_rows) == crosscheck.MAX_ROWS
    asked = crosscheck.requests([d])
    assert all(len(rows) == crosscheck.MAX_ROWS for wanted in asked.values() for rows in wanted.values())
    assert crosscheck.bad_elements(d, asked, replies(products, asked)) == crosscheck.MAX_ROWS
