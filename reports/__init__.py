"""Reading gpu-burnin result files back: `load_results(...)` gives pandas tables."""

from reports.load import Loaded, load_results, result_files

__all__ = ["Loaded", "load_results", "result_files"]
