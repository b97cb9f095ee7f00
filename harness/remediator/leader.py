"""Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection package does it.

The Lease names its holder (`holderIdentity`), for how long a holder that stops renewing
still holds it (`leaseDurationSeconds`), when it was last renewed (`renewTime`), when the
holder took it (`acquireTime`) and how often it changed hands (`leaseTransitions`). Every
candidate reads it every `retry` seconds; the holder renews it. A candidate takes it only
once it has seen the same record unchanged for a whole lease duration, timed on its own
clock (not from renewTime: the replicas' clocks need not agree). The holder stops acting
as soon as it has not renewed for `renew_deadline`, shorter than the lease duration, so
it stops before anyone else may start. Every write is an update preconditioned on the
resourceVersion read: two candidates racing for an expired Lease cannot both win.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from harness.kube.api import Api, Conflict, KubeError


def micro(moment: dt.datetime) -> str:
    """A MicroTime as the API server parses one (RFC 3339 with exactly six fractional digits)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    lease_s: float = 15.0
    """How long a holder that stopped renewing still holds the Lease (client-go's LeaseDuration)."""
    renew_deadline_s: float = 10.0
    """The holder stops acting when it has not renewed for this long (RenewDeadline)."""
    retry_s: float = 2.0
    """How often every candidate tries (RetryPeriod)."""


class Elector:
    def __init__(
        self,
        api: Api,
        name: str,
        identity: str,
        timing: Timing,
        *,
        clock: Callable[[], float],
        wall: Callable[[], dt.datetime],
        say: Callable[[str], None] = lambda _: None,
    ):
        self.api = api
        self.name = name
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self.wall = wall
        self.say = say
        self._lease: dict[str, Any] | None = None
        """The Lease as last read or written (with its resourceVersion)."""
        self._observed: dict[str, Any] = {}
        """Its spec, as last seen changed, and when (`_observed_at`, on our clock)."""
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self._led = False

    # -- what the process asks ---------------------------------------------------------------

    def leading(self) -> bool:
        """Whether this replica may act now: it holds the Lease and renewed it within the renew deadline."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.timing.renew_deadline_s

    def holder(self) -> str:
        """Who holds the Lease, as last seen."""
        return self._holder()

    def tick(self) -> bool:
        """One try, every `retry` seconds: acquire or renew. Whether this replica leads after it."""
        try:
            won = self._try()
        except KubeError as err:
            self.say(f"the lease {self.api.namespace}/{self.name} could not be read or written: {err}")
            won = False
        if won:
            self._renewed_at = self.clock()
            if not self._led:
                self.say(f"leading: took the lease {self.api.namespace}/{self.name}")
            self._led = True
        elif self._led and not self.leading():
            self.say(f"no longer leading: the lease was not renewed within {self.timing.renew_deadline_s:g} s")
            self._led = False
        return self.leading()

    def release(self) -> None:
        """Give the Lease up on the way out, so the other replica need not wait for it to expire."""
        if not self.leading() or self._lease is None:
            return
        now = micro(self.wall())
        spec = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": self._observed.get("leaseTransitions", 0),
        }
        try:
            self.api.update_lease({**self._lease, "spec": spec})
        except KubeError as err:
            self.say(f"the lease was not released ({err}): the other replica takes it when it expires")
        self._renewed_at = None
        self._led = False

    # -- client-go's tryAcquireOrRenew --------------------------------------------------------

    def _try(self) -> bool:
        now = self.wall()
        wanted: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, int(self.timing.lease_s)),
            "acquireTime": micro(now),
            "renewTime": micro(now),
        }
        if self._holder() == self.identity and self._valid() and self._lease is not None:
            # the fast path: renew what we wrote last; a conflict falls back to reading it
            fast = {**wanted, **self._kept(self._observed)}
            try:
                self._write(fast, create=False)
                return True
            except Conflict:
                pass
        current = self.api.get_lease(self.name)
        if current is None:
            self._lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name}}
            try:
                self._write({**wanted, "leaseTransitions": 0}, create=True)
            except Conflict:
                return False  # another replica created it first
            return True
        self._lease = current
        spec = dict(current.get("spec") or {})
        if spec != self._observed:
            self._observed, self._observed_at = spec, self.clock()
        if spec.get("holderIdentity") and self._valid() and self._holder() != self.identity:
            return False
        if self._holder() == self.identity:
            wanted.update(self._kept(spec))
        else:
            wanted["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            self._write(wanted, create=False)
        except Conflict:
            return False
        return True

    def _write(self, spec: dict[str, Any], *, create: bool) -> None:
        assert self._lease is not None
        body = {**self._lease, "spec": spec}
        body.pop("status", None)
        written = self.api.create_lease(body) if create else self.api.update_lease(body)
        self._lease = written
        self._observed, self._observed_at = dict(written.get("spec") or spec), self.clock()

    def _holder(self) -> str:
        return str(self._observed.get("holderIdentity") or "")

    def _valid(self) -> bool:
        """The observed record has not expired: seen unchanged for less than its lease duration."""
        duration = float(self._observed.get("leaseDurationSeconds") or 0)
        return self._observed_at + duration > self.clock()

    @staticmethod
    def _kept(spec: dict[str, Any]) -> dict[str, Any]:
        """What a renewal keeps of the holder's record: when it took the Lease, and how often it changed hands."""
        return {"acquireTime": spec.get("acquireTime"), "leaseTransitions": int(spec.get("leaseTransitions") or 0)}
