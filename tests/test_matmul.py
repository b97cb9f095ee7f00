"""The measuring code, called directly on the CPU (small sizes)."""

import numpy as np
import pytest
import torch

from gputests.work import matmul
from gputests.work.matmul_run import dtypes_for
from harness.devices import Device
from harness.workers.devicetest import FaultFired, NotSupported
from tests.helpers import local_context

CPU = torch.device("cpu")


def burn(dtype: str = "fp32", fault: str = "", **kwargs):
    settings = {"size": 64, "ring": 2, "duration_s": 0.05, "warmup_s": 0.02} | kwargs
    return matmul.burn(CPU, dtype, context=local_context(fault)[0], **settings)


def test_pattern_is_fixed_by_its_seed_and_spread_over_minus_one_to_one():
    a = matmul.pattern(64, 64, seed=7, salt=1, device=CPU)
    assert torch.equal(a, matmul.pattern(64, 64, seed=7, salt=1, device=CPU))
    assert not torch.equal(a, matmul.pattern(64, 64, seed=8, salt=1, device=CPU))
    assert a.dtype == torch.float32 and a.min() >= -1.0 and a.max() < 1.0
    assert a.std() > 0.5  # not a constant, not a ramp: the tensor cores get real data
    assert torch.linalg.matrix_rank(a.double()) == 64


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "fp8"])
def test_a_clean_burn_measures_every_window_and_finds_nothing(dtype):
    result, ref = burn(dtype)
    assert len(result.windows) >= matmul.MIN_WINDOWS
    assert all(w > 0 for w in result.windows)
    assert result.tflops == pytest.approx(sorted(result.windows)[len(result.windows) // 2], rel=0.5)
    assert result.results_checked >= (len(result.windows) + result.warmup_windows) * 2
    assert (result.bad_results, result.bad_elements, result.ref_nonfinite) == (0, 0, 0)
    assert ref.shape == (64, 64)


def test_the_first_product_is_the_exact_product_of_the_fixed_inputs():
    result, ref = burn("fp32")
    a = matmul.pattern(64, 64, matmul.DEFAULT_SEED, 1, CPU).double()
    b = matmul.pattern(64, 64, matmul.DEFAULT_SEED, 2, CPU).double()
    assert torch.allclose(ref.double(), a @ b, rtol=1e-5, atol=1e-4)


def test_the_product_is_bitwise_reproducible():
    first, _ = burn("bf16")
    second, _ = burn("bf16")
    assert first.digest == second.digest


def test_one_flipped_bit_in_one_product_is_counted_exactly():
    context, sent = local_context("corrupt")
    result, _ = matmul.burn(CPU, "bf16", size=64, ring=2, duration_s=0.05, warmup_s=0.02, context=context)
    assert (result.bad_results, result.bad_elements) == (1, 1)
    assert FaultFired(kind="corrupt") in sent.sent


def test_progress_is_reported_while_burning():
    context, sent = local_context()
    matmul.burn(CPU, "fp32", size=64, ring=2, duration_s=0.3, warmup_s=0.0, context=context, report_s=0.05)
    assert any(m.phase.startswith("fp32 window") for m in sent.sent)


def test_a_skewed_input_changes_the_product_but_not_its_consistency():
    clean, clean_ref = burn("fp32")
    skewed, skewed_ref = burn("fp32", fault="skew")
    assert skewed.bad_elements == 0  # consistently wrong: only a comparison across devices sees it
    assert skewed.digest != clean.digest
    rows = np.frombuffer(skewed.fingerprints, np.int64) != np.frombuffer(clean.fingerprints, np.int64)
    assert list(np.flatnonzero(rows)) == [0]
    assert not torch.equal(skewed_ref[0], clean_ref[0]) and torch.equal(skewed_ref[1:], clean_ref[1:])


def test_row_bits_are_the_raw_bits_of_the_requested_rows():
    _, ref = burn("bf16")
    data = np.frombuffer(matmul.row_bits(ref, [3, 5]), np.int16).reshape(2, 64)
    assert np.array_equal(data, ref[[3, 5]].view(torch.int16).numpy())


def test_an_injected_error_is_raised():
    with pytest.raises(RuntimeError, match="injected fault"):
        burn(fault="error")


def test_tf32_is_not_a_cpu_mode():
    with pytest.raises(NotSupported):
        burn("tf32")


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ("9.0", ["bf16", "fp16", "fp8", "tf32", "fp32"]),
        ("8.9", ["bf16", "fp16", "fp8", "tf32", "fp32"]),
        ("8.0", ["bf16", "fp16", "tf32", "fp32"]),
        ("7.0", ["fp16", "fp32"]),
    ],
)
def test_dtypes_follow_the_compute_capability(capability, expected):
    device = Device(index=0, kind="cuda", name="x", uuid="u", compute_capability=capability)
    assert dtypes_for(device) == tuple(expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_check_finds_any_flipped_bit_and_counts_elements_exactly(dtype):
    generator = torch.Generator().manual_seed(5)
    ref = torch.randn(48, 40, generator=generator).to(dtype)  # 40 bf16 = 80 bytes a row: 64-bit words
    checker = matmul._Checker(ref, ring=3)
    for out in checker.outputs(0):
        out.copy_(ref)
    flat = checker.outputs(0)[2].view(-1).view(torch.uint8)
    for byte in torch.randint(0, flat.numel(), (5,), generator=generator).unique().tolist():
        flat[byte] ^= 1 << int(torch.randint(0, 8, (1,), generator=generator))
    checker.check(0)
    bad_rows = checker.bad_rows_of(0)
    assert bad_rows[:2] == [0, 0] and bad_rows[2] >= 1
    width = ref.element_size()
    expected = int(
        (checker.outputs(0)[2].view(-1).view(torch.uint8) != ref.view(-1).view(torch.uint8))
        .view(-1, width)
        .any(dim=1)
        .sum()
    )
    assert checker.bad_elements(0, 2) == expected > 0


def test_windows_alternate_between_two_sets_of_outputs():
    checker = matmul._Checker(torch.zeros(8, 8), ring=2)
    assert checker.outputs(0) is checker.outputs(2) and checker.outputs(1) is not checker.outputs(0)
    assert matmul._word_type(torch.zeros(4, 3, dtype=torch.bfloat16)) is torch.int16
    assert matmul._word_type(torch.zeros(4, 6, dtype=torch.bfloat16)) is torch.int32
