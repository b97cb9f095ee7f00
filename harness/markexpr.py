"""The -m marker expression, checked before anything starts.

pytest refuses a malformed expression, but selects nothing, silently, for a name that is
no marker (`-m nvlnk`): the run would end incomplete with no test run. Here the names an
expression uses are checked against the markers, with pytest's own expression parser.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from harness.errors import ConfigError
from harness.groups import GROUPS


def check(expression: str, *, suite: bool, registered: Collection[str] = ()) -> None:
    """Parse -m as pytest will, so a typo is a one-line usage error (ConfigError) before anything
    starts: a bad expression, a name that is no marker (`nvlnk`), or, for the `suite` a gpu-burnin
    command runs, an expression that selects none of its tests (each has one group marker). Under
    pytest itself the markers are the groups and those `registered` with pytest (a project's own
    tests may be marked `slow`)."""
    try:
        from _pytest.mark.expression import Expression  # pytest's own parser; no public API offers it
    except ImportError:  # a pytest that moved it: pytest itself still refuses a bad expression
        return
    try:
        compiled = Expression.compile(expression)
    except Exception as err:  # noqa: BLE001 - SyntaxError in pytest 9, ParseError before
        detail = str(err).replace(" (<pytest match expression>, line 1)", "")
        raise ConfigError(f"{expression!r} is not a marker expression: {detail}", option="markexpr") from None
    known = list(GROUPS) if suite else [*GROUPS, *sorted(set(registered) - set(GROUPS))]
    unknown = [name for name in _marker_names(compiled) if name not in known]
    if unknown:
        raise ConfigError(f"unknown marker {unknown[0]!r}; the markers are {', '.join(known)}", option="markexpr")
    if suite and not any(compiled.evaluate(_only(group)) for group in GROUPS):
        raise ConfigError(
            f"{expression!r} selects no test: each test has one of the markers {', '.join(GROUPS)}",
            option="markexpr",
        )


def _only(group: str) -> Callable[..., bool]:
    """The matcher of a test marked with `group` alone, as each test of the suite is."""

    def match(name: str, /, **kwargs: object) -> bool:
        return name == group and not kwargs

    return match


def _marker_names(compiled: Any, most: int = 4096) -> list[str]:
    """Every name a compiled -m expression looks at. `and` and `or` stop early, so one evaluation
    sees only some names: evaluate under each true/false choice of the names seen so far until no
    new one appears (an expression names a few markers: a handful of evaluations)."""
    seen: list[str] = []
    true: set[str] = set()

    def match(name: str, /, **kwargs: object) -> bool:
        if name not in seen:
            seen.append(name)
        return name in true

    tried = 0
    while tried < min(2 ** len(seen), most):
        true = {name for i, name in enumerate(seen) if tried >> i & 1}
        compiled.evaluate(match)
        tried += 1
    return seen
