"""What the side-by-side benchmark scripts share: the device they run on, syncing it, and the
spread they print beside a median (the middle half of the rounds)."""

from __future__ import annotations

import argparse
import statistics

import torch


def parser(description: str, *, rounds: int) -> argparse.ArgumentParser:
    """A parser with the flags every script takes: --device, --index and --rounds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--index", type=int, default=0, help="CUDA device index")
    parser.add_argument("--rounds", type=int, default=rounds)
    return parser


def device(args: argparse.Namespace) -> torch.device:
    return torch.device("cuda", args.index) if args.device == "cuda" else torch.device("cpu")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def middle_half(values: list[float]) -> str:
    """The first to third quartile of `values`, or why there is none."""
    if len(values) < 4:
        return "n/a: fewer than 4 rounds"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.3f} to {q3:.3f}"
