"""The one exception for bad input: it names the file and field and how to fix it."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """Bad configuration or usage. Commands exit 4 on it, before changing anything.

    `option` is a run option's name (harness/options.py), not a flag: each front end
    shows it as the flag its user typed (`--duration` or `--gpu-duration`).
    """

    def __init__(
        self, problem: str, *, file: Path | str | None = None, field: str | None = None, option: str | None = None
    ):
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.field = field
        self.option = option
        super().__init__(self.describe())

    def describe(self, flag: str | None = None) -> str:
        """The message, with `flag` standing for the option when one is named."""
        where = ": ".join(part for part in (self.file, self.field, flag or self.option) if part)
        return f"{where}: {self.problem}" if where else self.problem
