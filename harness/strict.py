"""Configuration files read strictly: TOML parsed with one clear error, and the field checks.

Baselines (harness/baselines.py), the Xid table (harness/nvml/xid_table.py) and the
simulated NVML's scenarios (harness/nvml/scenario.py) are read alike: a file that is not
a regular file of a sane size, not UTF-8 or not TOML is one ConfigError naming it, and
their parsers subclass `Strict`, so an unknown key, a value of the wrong type or a
missing field is one ConfigError naming the file and the field (`metrics."x".limit`).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from harness import files
from harness.errors import ConfigError


def parse_toml(text: str, *, file: Path | str, option: str | None = None) -> dict[str, Any]:
    """The TOML document `text`, read from `file`; ConfigError if it is not TOML."""
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as err:
        # ValueError: TOMLDecodeError, and an integer of thousands of digits; RecursionError: tables nested
        # thousands deep
        raise ConfigError(f"not valid TOML: {type(err).__name__}: {str(err)[:200]}", file=file, option=option) from None


def load_toml(
    path: Path, *, option: str | None = None, limit: int = files.CONFIG_LIMIT
) -> tuple[dict[str, Any], bytes]:
    """The TOML document in `path` (a regular file of at most `limit` bytes, UTF-8), and its bytes."""
    raw = files.read_regular(path, option=option, limit=limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text: {err}", file=path, option=option) from None
    return parse_toml(text, file=path, option=option), raw


class Strict:
    """The field checks a strict parser builds on; each error names the file and the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field: str, problem: str) -> ConfigError:
        return ConfigError(problem, file=self.path, field=field)

    def only(self, data: dict[str, Any], where: str, allowed: set[str]) -> None:
        """No key but those `allowed` in the table at `where`."""
        for key in data:
            if key not in allowed:
                field = f"{where}.{key}" if where else key
                raise self.fail(field, f"unknown key; expected one of {sorted(allowed)}")

    def get(self, data: dict[str, Any], key: str, kind: type, *, default: Any = None, where: str = "") -> Any:
        """`data[key]`, which must be a `kind` (a bool is no int); `default` when missing, if not None."""
        field = f"{where}.{key}" if where else key
        if key not in data:
            if default is not None:
                return default
            raise self.fail(field, "missing")
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(field, f"expected {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}")
        return value

    def text(self, data: dict[str, Any], key: str, field: str) -> str:
        """A string that is not blank, named `field` in errors."""
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, "missing or empty")
        return value

    def number(self, data: dict[str, Any], key: str, where: str) -> float:
        """A finite number of at least 0."""
        field = f"{where}.{key}"
        if key not in data:
            raise self.fail(field, "missing")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value) or value < 0:
            raise self.fail(field, f"expected a finite number of at least 0, got {value!r}")
        return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (TOML's integers have no bound in tomllib)
        return False


_KIND_NAMES = {str: "a string", int: "a whole number", bool: "true or false", list: "a list", dict: "a table"}
