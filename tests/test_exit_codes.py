"""Every command's exit code is an `ExitCode` (harness/verdict.py), never a bare 0, 1, 2 or 4: an AST
scan of the product's packages for a literal returned by a command, passed to an exit, or given as an
`exit_code`."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "gputests", "reports")
COMMAND = re.compile(r"^(main|run|serve|once|status)$|_command$")
"""The names of functions that return a process's exit code; so does any `-> int` function that names ExitCode."""
EXITS = {"exit", "SystemExit"}
"""sys.exit, parser.exit, raise SystemExit. Not os._exit: the harness's children (workers, a runner whose parent
died) end with it, and their statuses are read by the harness, never by a person."""

def _is_code(node: ast.expr | None) -> bool:
    if isinstance(node, ast.IfExp):
        return _is_code(node.body) or _is_code(node.orelse)
    return isinstance(node, ast.Constant) and type(node.value) is int


def _returns_code(function: ast.FunctionDef) -> bool:
    if not (isinstance(function.returns, ast.Name) and function.returns.id == "int"):
        return False
    names = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}
    return bool(COMMAND.search(function.name)) or "ExitCode" in names


def bare_codes(source: str) -> Iterator[int]:
    """The line of every bare exit code in `source`."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and _returns_code(node):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and _is_code(inner.value):
                    yield inner.lineno
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in EXITS and node.args and _is_code(node.args[0]):
                yield node.lineno
            yield from (k.value.lineno for k in node.keywords if k.arg == "exit_code" and _is_code(k.value))


def test_the_scan_finds_each_kind_of_bare_code() -> None:
    source = (
        "import sys\n"
        "def main() -> int:\n    return 0\n"
        "def push_command() -> int:\n    return 2 if x else 0\n"
        "def helper() -> int:\n    return 1 if y else int(ExitCode.FAIL)\n"
        "def count() -> int:\n    return 0\n"  # a count, not an exit code
        "sys.exit(4)\n"
        "raise SystemExit(1)\n"
        "Done(exit_code=0, message='')\n"
        "def fine() -> int:\n    return int(ExitCode.PASS)\n"
    )
    assert sorted(bare_codes(source)) == [3, 5, 7, 10, 11, 12]


def test_no_command_exits_with_a_bare_integer() -> None:
    found: dict[str, list[int]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            lines = list(bare_codes(path.read_text(encoding="utf-8")))
            if lines:
                found[path.relative_to(REPO).as_posix()] = lines
    assert not found, f"use harness.verdict.ExitCode: {found}"
