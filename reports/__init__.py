"""Reading gpu-burnin result files back and reviewing a fleet's: `load_results(...)` gives pandas tables.

The names below load on first use, so that `gpu-burnin` (whose `report` command lives in
`reports.cli`) does not import pandas for its other commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reports.load import Loaded, load_results, result_files

__all__ = ["Loaded", "load_results", "result_files"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from reports import load

        return getattr(load, name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
