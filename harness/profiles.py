"""Run profiles: how long and how hard the suite burns.

A profile is a preset chosen by name (`--gpu-profile`). The CPU self-test checks the
pipeline, not the hardware, so it uses small sizes and short times whatever the
profile; `--gpu-duration` overrides the duration on either device.
"""

from __future__ import annotations

import dataclasses

from harness.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    duration_s: float
    """Seconds each test burns the devices; a test with phases (dtypes) splits it."""
    warmup_s: float
    """Seconds of each phase run before timing starts; their figures are discarded."""
    matmul_size: int
    """M = N = K of the matmul test."""
    matmul_ring: int
    """Output buffers per timed window; every one is checked after the window."""
    hang_timeout_s: float
    """Seconds without progress from a device worker before it is declared hung."""
    startup_timeout_s: float
    """Seconds a device worker may take to start (import, driver init, allocation)."""

    def __post_init__(self) -> None:
        for field in ("duration_s", "hang_timeout_s", "startup_timeout_s"):
            if not getattr(self, field) > 0:
                raise ConfigError(f"must be positive, got {getattr(self, field)}", field=field)
        if self.warmup_s < 0:
            raise ConfigError(f"must be at least 0, got {self.warmup_s}", field="warmup_s")
        if self.matmul_size < 1 or self.matmul_ring < 1:
            raise ConfigError("matmul_size and matmul_ring must be at least 1", field="matmul_size")

    def with_duration(self, seconds: float | None) -> Profile:
        if seconds is None:
            return self
        if not seconds > 0:
            raise ConfigError(f"must be positive, got {seconds}", field="--gpu-duration")
        return dataclasses.replace(self, duration_s=seconds)

    def with_hang_timeout(self, seconds: float | None) -> Profile:
        if seconds is None:
            return self
        if not seconds > 0:
            raise ConfigError(f"must be positive, got {seconds}", field="--gpu-hang-timeout")
        return dataclasses.replace(self, hang_timeout_s=seconds)

    def for_cpu(self) -> Profile:
        """The same profile shrunk for the CPU self-test."""
        return dataclasses.replace(
            self,
            duration_s=min(self.duration_s, 4.0),
            warmup_s=0.1,
            matmul_size=256,
            matmul_ring=2,
            hang_timeout_s=min(self.hang_timeout_s, 30.0),
            startup_timeout_s=min(self.startup_timeout_s, 60.0),
        )


def quick() -> Profile:
    """Preflight on a new node: every test, about a minute of heat each."""
    return Profile(
        name="quick",
        duration_s=60.0,
        warmup_s=2.0,
        matmul_size=8192,
        matmul_ring=8,
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
        raise ConfigError(
            f"unknown profile {name!r}; expected one of {sorted(PROFILES)}", field="--gpu-profile"
        ) from None
