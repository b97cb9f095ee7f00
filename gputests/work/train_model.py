"""The training test's model, data and optimizer: a small decoder-only transformer, torch only.

RMSNorm, causal attention through `scaled_dot_product_attention`, a SwiGLU MLP, AdamW
and gradient clipping: the kernels a real training job runs. Every parameter lives in
one flat float32 buffer, grouped (the embedding, each layer, the head), with its
gradient in a second one: a checksum of the whole model or of each group is then one
reduction, the optimizer is a handful of elementwise kernels over the buffers (so its
state can be saved and restored for a second run of a step), and clipping is one norm.
Weights and batches come from an integer hash of their index, not from a random
generator, so every device starts from the same bits (docs/determinism.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from gputests.work.matmul import pattern
from harness.groups import TrainSection

DEFAULT_SEED = 20261207
EPS = 1e-5
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1
ADAM_EPS = 1e-8
POOL = 4
"""Distinct batches, used in turn: the task is learnable and the batches can be memorised, so the loss falls."""


def ffn(shape: TrainSection) -> int:
    """The SwiGLU hidden size: 8/3 of d_model, rounded up to a multiple of 64."""
    return -(-8 * shape.d_model // 3 // 64) * 64


def tokens_per_step(shape: TrainSection) -> int:
    """Tokens trained on per step."""
    return shape.batch * shape.seq


def flops_per_token(shape: TrainSection) -> float:
    """Training FLOPs per token, as model-FLOP utilisation counts them (PaLM, appendix B):
    6 per weight of every matrix multiply, plus 12 x layers x d_model x seq for attention."""
    d, f = shape.d_model, ffn(shape)
    weights = shape.layers * (4 * d * d + 3 * d * f) + shape.vocab * d
    return 6.0 * weights + 12.0 * shape.layers * d * shape.seq


class Model:
    """The transformer over flat buffers: `params` and `grads`, float32, cut into `groups`."""

    def __init__(self, shape: TrainSection, device: torch.device, seed: int = DEFAULT_SEED):
        self.shape = shape
        d, f, v = shape.d_model, ffn(shape), shape.vocab
        layer = [("attn_norm", (d,)), ("qkv", (3 * d, d)), ("out", (d, d)), ("mlp_norm", (d,))]
        layer += [("gate_up", (2 * f, d)), ("down", (d, f))]
        plan: list[tuple[str, list[tuple[str, tuple[int, ...]]]]] = [("embed", [("embed", (v, d))])]
        plan += [(f"layers.{i}", layer) for i in range(shape.layers)]
        plan += [("head", [("norm", (d,)), ("lm_head", (v, d))])]
        total = sum(math.prod(size) for _, tensors in plan for _, size in tensors)
        self.params = torch.empty(total, dtype=torch.float32, device=device)
        self.grads = torch.zeros_like(self.params)
        self.names = self.group_names(shape)
        self.spans: list[tuple[int, int]] = []
        self.weights: list[dict[str, torch.nn.Parameter]] = []
        at = 0
        for g, (_, tensors) in enumerate(plan):
            start = at
            group: dict[str, torch.nn.Parameter] = {}
            for t, (name, size) in enumerate(tensors):
                count = math.prod(size)
                view = self.params[at : at + count].view(size)
                view.copy_(_initial(name, size, shape, seed, g * 16 + t, device))
                weight = torch.nn.Parameter(view)
                weight.grad = self.grads[at : at + count].view(size)
                group[name] = weight
                at += count
            self.spans.append((start, at))
            self.weights.append(group)
        self.layer_span = (self.spans[1][0], self.spans[-1][0])
        """Where the layers lie in `params`: equal sizes, so their checksums are one reduction."""

    @staticmethod
    def group_names(shape: TrainSection) -> tuple[str, ...]:
        """The tensor groups, in order: the embedding, each layer, the head (final norm and output)."""
        return ("embed", *(f"layers.{i}" for i in range(shape.layers)), "head")

    def group_params(self, group: int) -> torch.Tensor:
        """One group's parameters, as a view of the flat buffer."""
        start, end = self.spans[group]
        return self.params[start:end]

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of predicting each next token of a batch of sequences."""
        shape = self.shape
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        autocast = torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=shape.dtype == "bf16")
        with autocast:
            x = F.embedding(inputs, self.weights[0]["embed"])
            for layer in self.weights[1:-1]:
                x = _block(x, layer, shape)
            head = self.weights[-1]
            logits = F.linear(_rms_norm(x, head["norm"]), head["lm_head"])
        return F.cross_entropy(logits.float().reshape(-1, shape.vocab), targets.reshape(-1))

    def checksums(self, out: torch.Tensor) -> None:
        """Each group's checksum into `out` (int64, one per group): the sum, wrapping, of the bit
        patterns of its parameters read as 32-bit integers. Order-free and exact: any flipped
        bit changes its group's sum."""
        words = self.params.view(torch.int32)
        (e0, e1), (h0, h1) = self.spans[0], self.spans[-1]
        l0, l1 = self.layer_span
        torch.sum(words[e0:e1].view(1, -1), dim=1, dtype=torch.int64, out=out[:1])
        torch.sum(words[l0:l1].view(self.shape.layers, -1), dim=1, dtype=torch.int64, out=out[1:-1])
        torch.sum(words[h0:h1].view(1, -1), dim=1, dtype=torch.int64, out=out[-1:])


class AdamW:
    """AdamW over the flat buffers (decoupled weight decay, bias correction), with gradient
    clipping by the global norm: elementwise kernels and one norm, all deterministic."""

    def __init__(self, model: Model):
        self.model = model
        self.exp_avg = torch.zeros_like(model.params)
        self.exp_avg_sq = torch.zeros_like(model.params)
        self.steps = 0

    def step(self) -> torch.Tensor:
        """Clip the gradients and update the parameters; returns the norm before clipping."""
        shape, params, grads = self.model.shape, self.model.params, self.model.grads
        norm: torch.Tensor = torch.linalg.vector_norm(grads)
        grads.mul_(torch.clamp(shape.clip / (norm + 1e-6), max=1.0))
        self.steps += 1
        b1, b2 = BETAS
        self.exp_avg.lerp_(grads, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grads, grads, value=1 - b2)
        params.mul_(1 - shape.lr * WEIGHT_DECAY)
        denominator = (self.exp_avg_sq / (1 - b2**self.steps)).sqrt_().add_(ADAM_EPS)
        params.addcdiv_(self.exp_avg, denominator, value=-shape.lr / (1 - b1**self.steps))
        return norm

    def state(self) -> list[torch.Tensor]:
        """What a step changes, to save before a step and restore for a second run of it."""
        return [self.model.params, self.exp_avg, self.exp_avg_sq]


def train_step(model: Model, optimizer: AdamW, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: forward, backward, clip, update. Returns the loss and the gradient norm, on the device."""
    model.grads.zero_()
    loss = model.loss(tokens)
    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it untyped
    return loss.detach(), optimizer.step()


def batches(shape: TrainSection, device: torch.device, seed: int = DEFAULT_SEED) -> torch.Tensor:
    """The copy task: POOL batches of sequences whose second half repeats the first, from a hash."""
    half = shape.seq // 2 + 1
    words = pattern(POOL * shape.batch, half, seed, 7, device)
    symbols = ((words + 1.0) * 0.5 * shape.vocab).to(torch.int64).clamp_(0, shape.vocab - 1)
    return torch.cat([symbols, symbols[:, : shape.seq + 1 - half]], dim=1).view(POOL, shape.batch, shape.seq + 1)


def _block(x: torch.Tensor, w: dict[str, Any], shape: TrainSection) -> torch.Tensor:
    batch, seq, d = x.shape
    heads = shape.heads
    qkv = F.linear(_rms_norm(x, w["attn_norm"]), w["qkv"]).view(batch, seq, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + F.linear(attended.transpose(1, 2).reshape(batch, seq, d), w["out"])
    gate, up = F.linear(_rms_norm(x, w["mlp_norm"]), w["gate_up"]).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, w["down"])


def _rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * weight.to(x.dtype)


def _initial(name: str, size: tuple[int, ...], shape: TrainSection, seed: int, salt: int, device: torch.device) -> Any:
    """A weight's first value: norms 1; matrices uniform with variance 1/fan-in (the layers'
    output projections smaller, by 1/sqrt(2 x layers), as GPT-2 does); the embedding variance 1."""
    if len(size) == 1:
        return 1.0
    rows, cols = size
    scale = math.sqrt(3.0) if name == "embed" else math.sqrt(3.0 / cols)
    if name in ("out", "down"):
        scale /= math.sqrt(2.0 * shape.layers)
    return pattern(rows, cols, seed, salt, device) * scale
