"""Is the GPU usable and right? Run after an injected hang, whose spinning kernel was killed with its process.

    python bench/gpu_usable.py [--index N]

A float64 product on the GPU against the same product on the CPU, then a short bf16
burn through the test's own code with its corruption check. Exit 0 when both are
right, 1 when not, 2 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from gputests.work import matmul  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    device = torch.device("cuda", args.index)
    began = time.monotonic()
    generator = torch.Generator().manual_seed(1)
    a, b = (torch.randn(2048, 2048, dtype=torch.float64, generator=generator) for _ in range(2))
    on_gpu = (a.to(device) @ b.to(device)).cpu()
    error = float((on_gpu - a @ b).norm() / (a @ b).norm())
    matmul.configure(device)
    result, _ = matmul.burn(device, "bf16", size=4096, ring=4, duration_s=2.0, warmup_s=0.5)
    ok = error < 1e-12 and result.bad_results == 0 and result.ref_nonfinite == 0
    print(
        f"{torch.cuda.get_device_name(device)}: fp64 2048^2 relative error {error:.2e}; "
        f"bf16 4096^3 {result.tflops:.1f} TFLOP/s, {result.results_checked} products checked, "
        f"{result.bad_results} bad; {time.monotonic() - began:.1f} s: {'usable' if ok else 'NOT RIGHT'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
