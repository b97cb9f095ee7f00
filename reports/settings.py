"""What the review and the proposal rule are told, with their defaults and bounds, declared once.

`reports.cli` builds its flags from these (defaults, bounds and help), and the dataclasses
refuse the same values when called from Python. Nothing here imports pandas, so that building
`gpu-burnin`'s parser stays light.
"""

from __future__ import annotations

import dataclasses

STALE_DAYS = 7.0
"""A node whose last run started longer ago than this many days is stale."""
MAX_STALE_DAYS = 3650.0
"""Ten years: a longer window is a typo (and past what a time span can hold, at 1e308)."""
MAX_SIGMAS = 50.0
"""No outlier threshold or proposal distance is more robust sigmas: beyond it nothing is ever an
outlier and a floor falls to zero."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    outlier_z: float = 6.0
    """A figure this many robust sigmas worse than its model's median is an outlier."""
    fell_share: float = 0.05
    """A GPU whose figure is worse than its previous run's by more than this share fell."""

    def __post_init__(self) -> None:
        if not 0 < self.outlier_z <= MAX_SIGMAS or not 0 < self.fell_share <= 1:
            raise ValueError(f"outlier_z must be above 0 and at most {MAX_SIGMAS:g}, fell_share above 0 and at most 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    """How `baseline propose` (and the report's proposals) set limits and tolerances: docs/report.md."""

    k: float = 6.0
    """Limits sit k robust sigmas from the median, on the worse side."""
    min_gpus: int = 50
    """Fewer healthy GPUs than this: the limit is kept."""
    min_nodes: int = 10
    """Fewer healthy nodes than this: the tolerance is kept."""

    def __post_init__(self) -> None:
        if not 0 < self.k <= MAX_SIGMAS or self.min_gpus < 1 or self.min_nodes < 1:
            raise ValueError(f"k must be above 0 and at most {MAX_SIGMAS:g}, min_gpus and min_nodes at least 1")

    def describe(self) -> str:
        from reports import sensitivity  # numpy and pandas: only when a rule is applied, not for --help

        return (
            f"limit = median {chr(0x2213)} {self.k:g} x 1.4826 x MAD of the latest passing figure per GPU "
            f"(at least {self.min_gpus} GPUs); node_tolerance = the smallest {sensitivity.TOLERANCE_STEP:.1%} step "
            f"flagging at most {sensitivity.GOAL_FALSE_FLAG:.1%} of healthy GPUs (Monte Carlo, the within-node "
            f"spread of at least {self.min_nodes} nodes, two standard errors high)"
        )


def default(cls: type, name: str) -> object:
    """A field's default, for a flag's default and help."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)
