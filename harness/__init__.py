"""gpu-burnin harness: baselines, findings, verdicts, result files and entrypoints."""

from importlib import metadata

try:
    __version__ = metadata.version("gpu-burnin")
except metadata.PackageNotFoundError:  # a checkout used without installing it
    __version__ = "0+checkout"
