"""The Xid table: what each Xid is, and how this harness judges it (`harness/nvml/xid.toml`).

The packaged table is transcribed from NVIDIA's Xid catalog, with the catalog's NVLink5 decode
rows; a site's table of the same format merges over it (`load_table(extra=...)`). Both are
parsed strictly: a mistyped bucket would silently pass a broken GPU or fail a healthy one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.errors import ConfigError
from harness.nvml.xid_rules import BUCKETS, Judgement, Nvlink5Row
from harness.strict import Strict, load_toml, parse_toml

SCHEMA_VERSION = 1
PACKAGED_TABLE = "xid.toml"


@dataclasses.dataclass(frozen=True, kw_only=True)
class XidInfo:
    """One Xid as the table describes it."""

    xid: int
    name: str
    """NVIDIA's mnemonic."""
    description: str
    bucket: str
    """NVIDIA's immediate resolution bucket."""
    investigatory: str = ""
    """NVIDIA's investigatory bucket: what to do if the error persists."""
    judge_as: str = ""
    """A bucket this table judges the Xid as instead of NVIDIA's (the note says why)."""
    in_burn: str = ""
    """The bucket it is judged as during gpu-burnin's own burn, whose application is known good."""
    suspect_after: int = 0
    """Outside a burn: this many separate bursts of it on one GPU within a day are judged as `in_burn`."""
    note: str = ""
    source: str = ""
    """The table file this entry came from."""

    @property
    def judged_bucket(self) -> str:
        return self.judge_as or self.bucket

    @property
    def judgement(self) -> Judgement:
        return BUCKETS[self.judged_bucket]

    @property
    def label(self) -> str:
        """Words for a message: NVIDIA's description, or its mnemonic where the catalog says "Unused"."""
        return self.name if self.description.strip().lower() == "unused" else self.description


@dataclasses.dataclass(frozen=True)
class XidTable:
    entries: Mapping[int, XidInfo]
    sources: tuple[str, ...]
    """The files merged into it, packaged table first."""
    nvlink5: tuple[Nvlink5Row, ...] = ()
    """NVIDIA's "XID 144-150 Decode" rows (harness/nvml/xid_rules.py)."""

    def get(self, xid: int) -> XidInfo | None:
        return self.entries.get(xid)

    def __contains__(self, xid: object) -> bool:
        return xid in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def load_table(extra: Path | None = None) -> XidTable:
    """The packaged table, with a user's table of the same format merged over it.

    Each entry of `extra` replaces the packaged entry of its Xid whole (or adds one), so
    what a site changed is visible in its own file. Both are parsed strictly: a mistyped
    bucket would silently pass a broken GPU or fail a healthy one.
    """
    packaged = resources.files("harness.nvml").joinpath(PACKAGED_TABLE)
    where = str(packaged)
    try:
        text = packaged.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("the packaged Xid table is missing from this install (package data)", file=where) from err
    entries, rows = _parse_text(text, where)
    sources = [where]
    if extra is not None:
        data, _ = load_toml(extra)
        parser = _TableParser(extra)
        more, their_rows = parser.table(data), parser.decode(data.get("decode", {}))
        entries.update(more)
        replaced = {row.xid for row in their_rows}  # a site's decode rows of an Xid replace all of ours
        rows = [*(row for row in rows if row.xid not in replaced), *their_rows]
        sources.append(str(extra))
    return XidTable(MappingProxyType(dict(sorted(entries.items()))), tuple(sources), tuple(rows))


def _parse_text(text: str, where: str) -> tuple[dict[int, XidInfo], list[Nvlink5Row]]:
    data = parse_toml(text, file=where)
    parser = _TableParser(Path(where))
    return parser.table(data), parser.decode(data.get("decode", {}))


_XID_KEY = re.compile(r"^[1-9][0-9]{0,3}$")
_ENTRY_KEYS = {"name", "description", "bucket", "investigatory", "judge_as", "in_burn", "suspect_after", "note"}
_ROW_KEYS = {"xid", "unit", "v1", "v2", "status", "bucket", "investigatory", "severity", "promoted"}
_BITS = re.compile(r"^[01-]{32}$")


class _TableParser(Strict):
    """Checks one table file; every error names the file and the field."""

    def table(self, data: dict[str, Any]) -> dict[int, XidInfo]:
        self.only(data, "", {"schema_version", "xid", "decode"})
        version = data.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise self.fail("schema_version", f"is {version!r}; this gpu-burnin reads version {SCHEMA_VERSION}")
        entries = data.get("xid")
        if not isinstance(entries, dict) or not entries:
            raise self.fail("xid", "missing: list at least one [xid.NUMBER] table")
        return {self.xid_number(key): self.entry(key, value) for key, value in entries.items()}

    def xid_number(self, key: str) -> int:
        if not _XID_KEY.match(key):
            raise self.fail(f"xid.{key}", "an Xid is a whole number from 1 to 9999, without leading zeros")
        return int(key)

    def entry(self, key: str, value: Any) -> XidInfo:
        where = f"xid.{key}"
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        self.only(value, where, _ENTRY_KEYS)
        return XidInfo(
            xid=int(key),
            name=self.string(value, "name", where),
            description=self.string(value, "description", where),
            bucket=self.bucket(value, "bucket", where),
            investigatory=self.optional(value, "investigatory", where),
            judge_as=self.bucket(value, "judge_as", where) if "judge_as" in value else "",
            in_burn=self.bucket(value, "in_burn", where) if "in_burn" in value else "",
            suspect_after=self.count(value, "suspect_after", where),
            note=self.optional(value, "note", where),
            source=str(self.path),
        )

    def decode(self, data: Any) -> list[Nvlink5Row]:
        """`[decode] nvlink5 = [{ xid = 145, unit = "RLW_REMAP", v1 = "...", v2 = "...", status = [0x1], ... }]`."""
        if not isinstance(data, dict):
            raise self.fail("decode", "must be a table")
        self.only(data, "decode", {"nvlink5"})
        rows = data.get("nvlink5", [])
        if not isinstance(rows, list):
            raise self.fail("decode.nvlink5", "must be a list of tables")
        return [self.row(f"decode.nvlink5[{n}]", row) for n, row in enumerate(rows)]

    def row(self, where: str, row: Any) -> Nvlink5Row:
        if not isinstance(row, dict):
            raise self.fail(where, "must be a table")
        self.only(row, where, _ROW_KEYS)
        number = row.get("xid")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 9999:
            raise self.fail(f"{where}.xid", f"is {number!r}; expected an Xid number")
        status = row.get("status", [])
        if not isinstance(status, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 0xFFFFFFFF for s in status
        ):
            raise self.fail(f"{where}.status", f"is {status!r}; expected a list of 32-bit values")
        promoted = row.get("promoted", {})
        if not isinstance(promoted, dict):
            raise self.fail(f"{where}.promoted", "must be a table: { v1 = ..., v2 = ..., bucket = ... }")
        self.only(promoted, f"{where}.promoted", {"v1", "v2", "bucket"})
        return Nvlink5Row(
            xid=number,
            unit=self.string(row, "unit", where),
            v1=self.bits(row, "v1", where),
            v2=self.bits(row, "v2", where),
            status=tuple(status),
            bucket=self.bucket(row, "bucket", where),
            investigatory=self.optional(row, "investigatory", where),
            severity=self.optional(row, "severity", where),
            promoted=(
                (
                    self.bits(promoted, "v1", f"{where}.promoted"),
                    self.bits(promoted, "v2", f"{where}.promoted"),
                    self.bucket(promoted, "bucket", f"{where}.promoted"),
                )
                if promoted
                else ("", "", "")
            ),
        )

    def bits(self, data: dict[str, Any], key: str, where: str) -> str:
        value = self.string(data, key, where)
        if not _BITS.match(value):
            raise self.fail(f"{where}.{key}", f"is {value!r}; expected 32 of 0, 1 and - (any), most significant first")
        return value

    def count(self, data: dict[str, Any], key: str, where: str) -> int:
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
            raise self.fail(f"{where}.{key}", f"is {value!r}; expected a whole number from 0 to 1000")
        return value

    def bucket(self, data: dict[str, Any], key: str, where: str) -> str:
        value = self.string(data, key, where)
        if value not in BUCKETS:
            raise self.fail(f"{where}.{key}", f"is {value!r}; expected one of {sorted(BUCKETS)}")
        return value

    def string(self, data: dict[str, Any], key: str, where: str) -> str:
        """A non-blank string at `where.key`."""
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            shown = "missing" if key not in data else f"expected a non-empty string, got {value!r}"
            raise self.fail(f"{where}.{key}", shown)
        return value

    def optional(self, data: dict[str, Any], key: str, where: str) -> str:
        value = data.get(key, "")
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"expected a string, got {value!r}")
        return value
