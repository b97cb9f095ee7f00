"""The baseline files made from others, so that no copy is ever edited by hand.

- `*-1gpu.toml`: a lone GPU of a model shipped for 8-GPU boards (a VM with one GPU passed
  through). Its single-GPU figures and health limits are the 8-GPU file's; what needs peers
  (NVLink, the all-reduce, the NVLink link count) is left out.
- `deploy/baselines/*.toml`: byte-for-byte copies of every packaged file, for kustomize's
  configMapGenerator (kustomize reads no file outside deploy/).

    python -m baselines.generate          # write them
    python -m baselines.generate --check  # exit 1, naming each, if any is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from harness import baselines
from harness.groups import GROUPS
from reports import tomlfile

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent / "deploy" / "baselines"
SINGLE = {
    "h100-sxm-80gb.toml": ("h100-sxm-80gb-1gpu.toml", "H100 SXM 80GB, 1 GPU", "One H100 SXM5 80GB HBM3"),
    "h200-141gb.toml": ("h200-141gb-1gpu.toml", "H200 141GB, 1 GPU", "One H200 SXM 141GB HBM3e"),
}
BETWEEN_GPUS = tuple(f"{group.name}." for group in GROUPS.values() if group.between_gpus)
"""The metrics a lone GPU has nothing to measure for: those of the groups between GPUs."""


def single_gpu(source: Path, model: str, what: str) -> str:
    """The 1-GPU variant of an 8-GPU file, as text."""
    board = baselines.load_file(source)
    metrics = {name: spec for name, spec in board.metrics.items() if not name.startswith(BETWEEN_GPUS)}
    health = dataclasses.replace(
        board.health,
        nvlink_links=None,
        nvlink_recovery_delta_max=None,
        nvlink_replay_delta_max=None,
        nvlink_crc_per_s_max=None,
    )
    one = dataclasses.replace(
        board,
        model=model,
        description=f"{what} on its own (a VM with one GPU passed through): no NVLink peer, no all-reduce",
        metrics=metrics,
        health=health,
        gpus=1,
    )
    header = (
        f"NVIDIA {model}. Format: docs/baselines.md.\n"
        f"Generated from {source.name} by `python -m baselines.generate`: do not edit, edit that file.\n"
        "The same GPU alone on a node: its figures are judged alike, and what needs another GPU\n"
        "(NVLink, the all-reduce, the NVLink link count) is not asked for."
    )
    return tomlfile.dumps(one, header)


def wanted() -> dict[Path, bytes]:
    """Every generated file and what it must hold."""
    found = {
        HERE / target: single_gpu(HERE / source, model, what).encode()
        for source, (target, model, what) in SINGLE.items()
    }
    packaged = {path: path.read_bytes() for path in sorted(HERE.glob("*.toml")) if path not in found}
    for path, content in {**packaged, **found}.items():
        found[DEPLOY / path.name] = content
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m baselines.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    stale = [path for path, content in wanted().items() if not path.is_file() or path.read_bytes() != content]
    extra = sorted(set(DEPLOY.glob("*.toml")) - {DEPLOY / p.name for p in HERE.glob("*.toml")} - set(wanted()))
    if args.check:
        for path in [*stale, *extra]:
            print(f"{path}: out of date; run python -m baselines.generate", file=sys.stderr)
        return 1 if stale or extra else 0
    for path, content in wanted().items():
        if path in stale:
            path.write_bytes(content)
            print(f"wrote {path}")
    for path in extra:
        path.unlink()
        print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
