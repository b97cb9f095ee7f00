"""The one exception for bad input: it names the file and field and how to fix it."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """Bad configuration or usage. Commands exit 4 on it, before changing anything."""

    def __init__(self, problem: str, *, file: Path | str | None = None, field: str | None = None):
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.field = field
        where = ": ".join(part for part in (self.file, field) if part)
        super().__init__(f"{where}: {problem}" if where else problem)
