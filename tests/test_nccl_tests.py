"""bench/nccl_tests.py reads nccl-tests' output, both layouts, as published."""

import importlib.util
import sys
from pathlib import Path

import pytest

from gputests.work import nccl_run

DATA = Path(__file__).parent / "data" / "nccl-tests"
_spec = importlib.util.spec_from_file_location("nccl_tests", Path(__file__).parent.parent / "bench" / "nccl_tests.py")
assert _spec is not None and _spec.loader is not None
nccl_tests = importlib.util.module_from_spec(_spec)
sys.modules["nccl_tests"] = nccl_tests  # dataclasses look their module up
_spec.loader.exec_module(nccl_tests)


def test_the_layout_with_a_root_column():
    rows = nccl_tests.parse((DATA / "a3mega_2node_16xH100_all_reduce_perf.txt").read_text())
    assert [r.size for r in rows] == [2**i for i in range(3, 34)]  # 8 B to 8 GiB by twos
    last = rows[-1]
    assert (last.size, last.count, last.dtype, last.redop) == (8589934592, 2147483648, "float", "sum")
    assert (last.time_us, last.algbw, last.busbw, last.wrong) == (47535.0, 180.71, 338.82, 0)
    assert (last.in_place_busbw, last.in_place_wrong) == (337.35, 0)
    # Our definition of busbw gives nccl-tests' figure from its own time, for 16 ranks.
    assert nccl_run.bandwidth(last.size, last.time_us / 1e6, 16)[1] == pytest.approx(last.busbw, abs=0.01)


def test_the_older_layout_without_validation():
    rows = nccl_tests.parse((DATA / "superbench_8xA100-40GB_all_reduce_perf.log").read_text())
    last = rows[-1]
    assert (last.size, last.busbw, last.wrong, last.in_place_wrong) == (8589934592, 235.26, None, None)
    assert nccl_tests.best_busbw(rows)[8589934592] == 235.26
    assert len(rows) == 34 and [r.size for r in rows] == sorted(r.size for r in rows)


def test_text_without_rows_is_empty():
    assert nccl_tests.parse("# nThread 1 nGpus 8\n#  Rank 0 ...\n") == []


def test_ours_beside_nccl_tests_at_the_sizes_both_measured():
    perf = nccl_tests.parse((DATA / "superbench_8xA100-40GB_all_reduce_perf.log").read_text())
    result = {
        "measurements": [{"metric": "nccl.allreduce.8gib.busbw", "value": v} for v in (230.0, 229.0, 231.0)]
        + [{"metric": "nccl.allreduce.8mib.busbw", "value": 80.0}, {"metric": "matmul.bf16.tflops", "value": 1.0}]
    }
    rows = nccl_tests.compare(perf, result)
    assert [(size, mine) for size, _, mine, _ in rows] == [(8 << 20, 80.0), (8 << 30, 230.0)]
    size, theirs, mine, ratio = rows[-1]
    assert theirs == 235.26 and ratio == pytest.approx(230.0 / 235.26)
