"""Run profiles: how long and how hard the suite burns.

A profile is a preset chosen by name (`--profile`). Settings every test shares sit
at the top; each test group's own settings sit in a section named after the group
(`profile.section(MatmulSection).size`; the groups and their sections are
declared in harness/groups.py). The CPU self-test checks the pipeline, not the
hardware, so it uses each group's CPU section and short times whatever the
profile; `--duration` overrides the duration on either device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from harness import groups
from harness.errors import ConfigError
from harness.groups import Section

S = TypeVar("S", bound=Section)

MIN_DURATION_S = 0.1
"""The shortest burn: less is a slip (milliseconds typed as seconds), not a test."""
MIN_STALL_S = 3.0
"""The shortest hang (stall) timeout. A worker waiting its turn reports every 2 s
(harness.workers.process.KEEPALIVE_S), one burning every window: a shorter limit
declares a healthy device hung, and a hang is a failure that takes the node out."""
MIN_STARTUP_S = 10.0
"""The shortest start-up limit: importing torch and starting CUDA take seconds on a busy node."""

CPU_DURATION_CAP_S = 4.0
"""The CPU self-test burns at most this long per test, whatever the profile (not --duration)."""


def size_label(mib: int) -> str:
    """A size in a metric's name: 8mib, 512mib, 8gib."""
    return f"{mib >> 10}gib" if mib >= 1024 and mib % 1024 == 0 else f"{mib}mib"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    duration_s: float
    """Seconds each test burns the devices; a test with phases (dtypes) splits it."""
    warmup_s: float
    """Seconds of each phase run before timing starts; their figures are discarded."""
    hang_timeout_s: float
    """Seconds without progress from a device worker before it is declared hung."""
    startup_timeout_s: float
    """Seconds a device worker may take to start (import, driver init, allocation)."""
    sections: Mapping[str, Section] = dataclasses.field(default_factory=lambda: _sections("gpu"), hash=False)
    """Each test group's own settings, by group name, in the order of harness.groups.GROUPS; a group
    not given gets its GPU section. Read one with `section(MatmulSection)`."""

    def __post_init__(self) -> None:
        for field, minimum in (
            ("duration_s", MIN_DURATION_S),
            ("hang_timeout_s", MIN_STALL_S),
            ("startup_timeout_s", MIN_STARTUP_S),
        ):
            if not getattr(self, field) >= minimum:
                raise ConfigError(
                    f"{getattr(self, field)} s is below the minimum of {minimum:g} s", field=f"profile.{field}"
                )
        if self.warmup_s < 0:
            raise ConfigError(f"must be at least 0, got {self.warmup_s}", field="profile.warmup_s")
        given = dict(self.sections)
        sections: dict[str, Section] = {}
        for name, group in groups.GROUPS.items():
            if group.section is None:
                continue
            section = given.pop(name, group.gpu)
            if type(section) is not group.section:
                raise TypeError(f"profile section {name!r} must be a {group.section.__name__}, not {section!r}")
            sections[name] = section
        if given:
            raise TypeError(f"no test group has a profile section {sorted(given)}: harness.groups.GROUPS")
        object.__setattr__(self, "sections", sections)

    def section(self, kind: type[S]) -> S:
        """The settings of the group whose section is `kind`: `profile.section(MatmulSection).size`."""
        found = self.sections[groups.of_section(kind).name]
        if not isinstance(found, kind):
            raise TypeError(f"profile section {found!r} is not a {kind.__name__}")
        return found

    def with_section(self, section: Section) -> Profile:
        """The profile with one group's section replaced."""
        name = groups.of_section(type(section)).name
        return dataclasses.replace(self, sections={**self.sections, name: section})

    def with_overrides(self, *, duration_s: float | None = None, hang_timeout_s: float | None = None) -> Profile:
        """The profile with the user's --duration and --hang-timeout, where given."""
        changes: dict[str, Any] = {}
        if duration_s is not None:
            changes["duration_s"] = duration_s
        if hang_timeout_s is not None:
            changes["hang_timeout_s"] = hang_timeout_s
        return dataclasses.replace(self, **changes)

    def for_cpu(self) -> Profile:
        """The same profile shrunk for the CPU self-test: short times, every group's CPU section."""
        return dataclasses.replace(
            self,
            duration_s=min(self.duration_s, CPU_DURATION_CAP_S),
            warmup_s=0.1,
            hang_timeout_s=min(self.hang_timeout_s, 30.0),
            startup_timeout_s=min(self.startup_timeout_s, 60.0),
            sections=_sections("cpu"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The result file's `profile`: the shared settings, then each section under its group's name."""
        top = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        return {**top, **{name: section.to_dict() for name, section in self.sections.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """From a result file; raises ConfigError (field profile...) when a field is missing or wrong.
        A section missing is the group's GPU section (files from before the group). Files written
        before the per-group sections have `matmul_size` and `matmul_ring` at the top."""
        try:
            given = {name: data[name] for name in groups.GROUPS if data.get(name)}
            if "matmul" not in given:
                given["matmul"] = {"size": data["matmul_size"], "ring": data["matmul_ring"]}
            sections: dict[str, Section] = {}
            for name, value in given.items():
                kind = groups.GROUPS[name].section
                if kind is not None:
                    sections[name] = kind.from_dict(value)
            return cls(
                name=str(data["name"]),
                duration_s=float(data["duration_s"]),
                warmup_s=float(data["warmup_s"]),
                hang_timeout_s=float(data["hang_timeout_s"]),
                startup_timeout_s=float(data["startup_timeout_s"]),
                sections=sections,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"missing or malformed: {err}", field="profile") from err


def _sections(device: str) -> dict[str, Section]:
    """Every group's section for `device` ("gpu" or "cpu")."""
    found = {name: getattr(group, device) for name, group in groups.GROUPS.items()}
    return {name: section for name, section in found.items() if section is not None}


def quick() -> Profile:
    """Preflight on a new node: every test, about a minute of heat each."""
    return Profile(
        name="quick",
        duration_s=60.0,
        warmup_s=2.0,
        hang_timeout_s=60.0,
        startup_timeout_s=180.0,
    )


def standard() -> Profile:
    """Periodic re-test: long enough for clocks and temperatures to settle."""
    return dataclasses.replace(quick(), name="standard", duration_s=300.0, warmup_s=5.0)


def soak() -> Profile:
    """After a repair or for a suspect node: half an hour per test."""
    return dataclasses.replace(quick(), name="soak", duration_s=1800.0, warmup_s=10.0)


PROFILES = {"quick": quick, "standard": standard, "soak": soak}


def by_name(name: str) -> Profile:
    try:
        return PROFILES[name]()
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}", option="profile") from None
