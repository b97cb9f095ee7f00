"""The training test's worker side, called directly on the CPU (the self-test's tiny model)."""

import dataclasses
import math

import pytest
import torch

from gputests.work import train, train_model, train_run
from gputests.work.train_model import AdamW, Model
from gputests.work.train_vote import digest
from harness.errors import ConfigError
from harness.groups import GROUPS, TrainSection
from harness.workers.devicetest import FaultFired
from tests.helpers import local_context

CPU = torch.device("cpu")
CPU_SECTION, GPU_SECTION = GROUPS["train"].cpu, GROUPS["train"].gpu
assert isinstance(CPU_SECTION, TrainSection) and isinstance(GPU_SECTION, TrainSection)
SHAPE = dataclasses.replace(CPU_SECTION, window_steps=4)
TOKENS = train_model.tokens_per_step(SHAPE)


@pytest.fixture(autouse=True)
def one_thread():
    """As a stand-in device's worker runs: one thread, deterministic mode on."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    train.configure(CPU)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def job(**changes) -> train.Job:
    settings = {"shape": SHAPE, "duration_s": 0.05, "warmup_s": 0.0} | changes
    return train.Job(**settings)


def trained(steps: int = 12, fault: str = "", **changes) -> tuple[list[train.Window], list, list]:
    """Train `steps` steps; the windows, the reruns and everything the worker context sent."""
    context, channel = local_context(fault)
    got: list = []
    train.train(CPU, job(**changes), context, on_window=got.append, steps=steps)
    windows = [m for m in got if isinstance(m, train.Window)]
    return windows, [m for m in got if isinstance(m, train.Rerun)], channel.sent


def prints_of(windows):
    return [p for w in windows for p in w.prints]


def test_the_fingerprints_of_two_runs_are_bitwise_equal():
    first, second = prints_of(trained()[0]), prints_of(trained()[0])
    assert len(first) == 12 and first == second
    assert digest(first) == digest(second)


def test_the_loss_falls_on_the_learnable_task():
    prints = prints_of(trained(steps=40)[0])
    assert prints[0].loss > 3.0 and sum(p.loss for p in prints[-8:]) / 8 < 0.5 * prints[0].loss


def test_windows_count_their_steps_and_tokens():
    windows, _, sent = trained(steps=10)
    assert [(w.first_step, len(w.prints)) for w in windows] == [(1, 4), (5, 4), (9, 2)]
    assert [w.tokens for w in windows] == [4 * TOKENS, 4 * TOKENS, 2 * TOKENS]
    assert all(w.seconds > 0 and w.tokens_per_s > 0 for w in windows)
    assert [m.phase for m in sent if hasattr(m, "phase")][-1] == "step 10"


def test_a_timed_run_has_warm_up_windows_then_at_least_the_minimum_of_timed_ones():
    got: list = []
    steps = train.train(CPU, job(duration_s=0.01, warmup_s=0.02), on_window=got.append)
    timed = [w for w in got if w.timed]
    assert len(timed) >= train.MIN_WINDOWS and steps == 4 * len(got)


def test_a_flipped_bit_changes_only_its_group_checksum():
    model = Model(SHAPE, CPU)
    sums = torch.zeros(len(model.names), dtype=torch.int64)
    model.checksums(sums)
    layer = model.group_params(2).view(torch.int32)
    layer[7] ^= 1 << 12
    flipped = torch.zeros_like(sums)
    model.checksums(flipped)
    assert [i for i in range(len(sums)) if sums[i] != flipped[i]] == [2]
    assert int(flipped[2] - sums[2]) == 1 << 12 or int(sums[2] - flipped[2]) == 1 << 12
    assert model.names == ("embed", "layers.0", "layers.1", "head")


def test_every_gradient_lives_in_the_flat_buffer():
    model = Model(SHAPE, CPU)
    optimizer = AdamW(model)
    train_model.train_step(model, optimizer, train_model.batches(SHAPE, CPU)[0])
    start, end = model.grads.data_ptr(), model.grads.data_ptr() + model.grads.numel() * 4
    weights = [w for group in model.weights for w in group.values()]
    assert all(start <= w.grad.data_ptr() < end for w in weights)
    assert sum(w.numel() for w in weights) == model.params.numel()
    assert all(w.grad.abs().sum() > 0 for w in weights)


def test_the_optimizer_is_adamw_with_clipping_as_torch_computes_them():
    model = Model(SHAPE, CPU)
    weights = [w for group in model.weights for w in group.values()]
    reference = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    torch_adamw = torch.optim.AdamW(
        reference, lr=SHAPE.lr, betas=train_model.BETAS, eps=train_model.ADAM_EPS, weight_decay=train_model.WEIGHT_DECAY
    )
    ours = AdamW(model)
    for n in range(3):
        for w, r in zip(weights, reference, strict=True):
            grad = torch.sin(torch.arange(w.numel(), dtype=torch.float32) * (n + 1)).view(w.shape) * 3
            w.grad.copy_(grad)
            r.grad = grad.clone()
        norm = ours.step()
        expected = torch.nn.utils.clip_grad_norm_(reference, SHAPE.clip)
        torch_adamw.step()
        assert torch.allclose(norm, expected, rtol=1e-5)
    assert all(torch.allclose(w, r, rtol=1e-5, atol=1e-7) for w, r in zip(weights, reference, strict=True))


def test_the_copy_task_repeats_the_first_half_of_each_sequence():
    data = train_model.batches(SHAPE, CPU)
    assert data.shape == (train_model.POOL, SHAPE.batch, SHAPE.seq + 1)
    half = SHAPE.seq // 2 + 1
    assert torch.equal(data[..., half:], data[..., : SHAPE.seq + 1 - half])
    assert data.min() >= 0 and data.max() < SHAPE.vocab and len(data[..., :half].unique()) > SHAPE.vocab // 2


def test_a_corrupted_step_differs_from_a_clean_run_from_that_step_in_the_middle_layer():
    clean = prints_of(trained()[0])
    windows, _, sent = trained(fault="corrupt@3")
    corrupt = prints_of(windows)
    assert FaultFired(kind="corrupt") in sent
    assert corrupt[:2] == clean[:2]
    assert corrupt[2].differs_from(clean[2], list(Model.group_names(SHAPE))) == (["parameters"], "layers.1")
    assert corrupt[2].loss_bits == clean[2].loss_bits  # the flip came after the step's update


def test_with_rerun_each_step_runs_twice_and_a_flip_in_one_run_is_reported():
    windows, reruns, _ = trained(rerun=True)
    assert reruns == [] and prints_of(windows) == prints_of(trained()[0])
    assert windows[0].tokens == 2 * 4 * TOKENS  # both runs trained
    _, reruns, _ = trained(fault="corrupt@5", rerun=True)
    assert [r.step for r in reruns] == [5]
    assert reruns[0].second.differs_from(reruns[0].first, Model.group_names(SHAPE)) == (["parameters"], "layers.1")


def test_without_fingerprints_the_steps_are_timed_and_nothing_is_read():
    windows, _, _ = trained(fingerprints=False)
    assert all(w.prints == () and w.seconds > 0 for w in windows)


def test_flops_per_token_count_every_matrix_multiply_and_attention():
    gpu = GPU_SECTION
    d, f, layers = gpu.d_model, train_model.ffn(gpu), gpu.layers
    assert f == 5504 and f % 64 == 0 and f >= 8 * d / 3
    weights = layers * (d * 3 * d + d * d + 3 * d * f) + gpu.vocab * d
    assert train_model.flops_per_token(gpu) == 6 * weights + 12 * layers * d * gpu.seq
    assert 2.8e9 < train_model.flops_per_token(gpu) < 3.0e9 and train_model.tokens_per_step(gpu) == 16384


@pytest.mark.parametrize(
    "change", [{"heads": 3}, {"seq": 31}, {"dtype": "fp8"}, {"lr": 0.0}, {"lr": math.inf}, {"layers": 0}, {"vocab": 1}]
)
def test_a_section_that_cannot_train_is_refused_naming_it(change):
    with pytest.raises(ConfigError) as caught:
        dataclasses.replace(SHAPE, **change)
    assert caught.value.field == "profile.train"


def test_a_gpu_step_is_sized_for_about_100_ms_on_an_h100_by_estimate():
    step_flops = train_model.flops_per_token(GPU_SECTION) * train_model.tokens_per_step(GPU_SECTION)
    seconds_at_40_percent = step_flops / (0.4 * train_run.PEAK_TFLOPS["NVIDIA H100 80GB HBM3"] * 1e12)
    assert 0.08 < seconds_at_40_percent < 0.15
    assert TrainSection.from_dict(GPU_SECTION.to_dict()) == GPU_SECTION
