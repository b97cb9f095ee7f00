"""torch.distributed and MPI: the one module that imports either.

The collective tests run one worker process per GPU (harness/workers/devicetest.py)
that meet as the ranks of one torch.distributed group:

- The parent hosts the meeting place, a `torch.distributed.TCPStore` (`Meeting`),
  and hands each worker its `Rendezvous` (address, port, and a prefix of its own per
  test). The store outlives any rank, so a rank that dies cannot take the meeting
  with it, and no port is chosen by guessing.
- A worker `join`s on a thread, so that it keeps reporting progress while it waits
  for the others, and gives up with `Stuck` after its limit: a rank that never comes
  leaves the others waiting, never hung.
- Collectives are issued asynchronously and waited for by polling (`wait`), with
  the same limit. Our limits decide, never torch's: the process group's own timeout
  is longer by a margin, and NCCL's asynchronous errors abort the communicator and
  surface on the waiting rank (`PeerLost`) instead of tearing its process down.
- `timed_all_reduces` times as nccl-tests does: the ranks meet first, so a late one's
  arrival is outside every rank's timing, and `slowest` makes each window's figure the
  slowest rank's, the same on every rank.

Across nodes, the same test runs under MPI (`mpiexec`): `Mpi` is mpi4py's world,
which gives each process its rank, the processes on its host, and a way to agree
on the meeting place and gather results. mpi4py is imported only when an MPI
launcher started this process (`launched_by_mpi`), since importing it initialises MPI.
The meeting place must be reachable from every node: `Mpi.choose_meeting_host`
picks its address (harness/addresses.py) and refuses a loopback one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from harness import addresses
from harness.errors import ConfigError

if TYPE_CHECKING:
    import torch

MPI_ENV = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
"""Set by the MPI launchers (MPICH/Hydra, PMIx, Open MPI, MVAPICH) in every process they start."""
MPI_FD_ENV = "PMI_FD"
"""MPICH's Hydra hands each process its PMI connection as this inherited descriptor."""
POLL_S = (1e-5, 1e-3)
"""The first and the longest sleep between two polls of a pending collective: a rank that
sleeps longer leaves its GPU idle and the others waiting for it."""
REPORT_S = 1.0
MARGIN_S = 60.0
"""How much longer than our own limits torch's process-group and store timeouts are: our
limits decide that a join or a collective is stuck, and name the rank that hung."""
NCCL_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}
"""torch's default (3) tears the process down (SIGABRT) when NCCL reports an error, such as a
peer on another node that died: the healthy rank would read as crashed and be blamed. 2
aborts the communicator only, and the error surfaces where the rank waits."""


def _torch() -> Any:
    """torch, imported when a collective needs it: the command line checks `launched_by_mpi`
    without loading it."""
    import torch

    return torch


def _dist() -> Any:
    import torch.distributed

    return torch.distributed


class PeerLost(Exception):
    """A collective that failed: a rank it needs died or left (gloo's closed connection, NCCL's
    remote error). The rank that raises it is not the cause."""


class Stuck(Exception):
    """A join or a collective that did not complete within its limit."""

    def __init__(self, what: str, waited_s: float):
        super().__init__(f"{what}: not complete after {waited_s:.0f} s")
        self.what = what
        self.waited_s = waited_s


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rendezvous:
    """Where the ranks of one collective test meet."""

    host: str
    port: int
    prefix: str
    """Keys of this test only: one store may serve several."""


class Meeting:
    """The meeting place, hosted by the process that starts the ranks (it never joins them)."""

    def __init__(self, host: str = "127.0.0.1", *, timeout_s: float = 300.0):
        self._store = _dist().TCPStore(
            host, 0, is_master=True, wait_for_workers=False, timeout=dt.timedelta(seconds=timeout_s)
        )
        self.rendezvous = Rendezvous(host=host, port=int(self._store.port), prefix=uuid.uuid4().hex)

    def close(self) -> None:
        del self._store


def group_timeout_s(join_limit_s: float, limit_s: float) -> float:
    """torch's timeout for the store and every collective of the group: past our own limits."""
    return max(join_limit_s, limit_s) + MARGIN_S


def join(
    rendezvous: Rendezvous,
    *,
    rank: int,
    world: int,
    backend: str,
    device: torch.device,
    limit_s: float,
    collective_limit_s: float,
    on_wait: Callable[[str], None],
) -> None:
    """Become `rank` of `world` (the default group of this process). Waits on a thread for the
    others, calling `on_wait` every second; raises `Stuck` when they have not all come within
    `limit_s` (the join may still be pending: the process must then end). `collective_limit_s`
    is how long our own waits allow a collective (`wait`)."""
    failure: list[BaseException] = []
    if backend == "nccl":
        os.environ.update(NCCL_ENV)  # read when the process group is made
    timeout = dt.timedelta(seconds=group_timeout_s(limit_s, collective_limit_s))

    def meet() -> None:
        try:
            store = _dist().TCPStore(rendezvous.host, rendezvous.port, is_master=False, timeout=timeout)
            _dist().init_process_group(
                backend,
                store=_dist().PrefixStore(rendezvous.prefix, store),
                rank=rank,
                world_size=world,
                timeout=timeout,
                device_id=device if device.type == "cuda" else None,  # NCCL's communicator now, not lazily
            )
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            failure.append(err)

    thread = threading.Thread(target=meet, name="join", daemon=True)
    began = time.monotonic()
    thread.start()
    while thread.is_alive():
        waited = time.monotonic() - began
        if waited > limit_s:
            raise Stuck(f"joining {world} ranks as rank {rank}", waited)
        on_wait(f"joining: waiting for the other {world - 1} ranks")
        thread.join(REPORT_S)
    if failure:
        raise failure[0]


def leave() -> None:
    if _dist().is_initialized():
        _dist().destroy_process_group()


def all_reduce(tensor: torch.Tensor, group: Any = None) -> Any:
    """A sum all-reduce in place, started; `wait` for it."""
    return _dist().all_reduce(tensor, op=_dist().ReduceOp.SUM, group=group, async_op=True)


def wait(works: Sequence[Any], *, what: str, limit_s: float, on_wait: Callable[[str], None]) -> None:
    """Until every work is complete, polling; `on_wait` every second; `Stuck` past `limit_s`.
    A failed collective (a peer that died) raises `PeerLost`."""
    _poll(lambda: all(work.is_completed() for work in works), what, limit_s, on_wait)
    _order_after(works, what)


def timed_all_reduces(
    tensor: torch.Tensor,
    count: int,
    *,
    what: str,
    limit_s: float,
    on_wait: Callable[[str], None],
    group: Any = None,
    before_start: Callable[[], None] = lambda: None,
    before_each: Callable[[], None] = lambda: None,
) -> float:
    """Seconds for `count` back-to-back sum all-reduces of `tensor` in place, as nccl-tests times
    them. First the ranks meet (a one-element all-reduce this host waits for: nccl-tests' sync
    and barrier), so that none times another's late arrival. On a GPU all are then issued at
    once and timed by CUDA events on a stream that waits for them, the start behind a second
    meeting on the GPU itself (the clock starts on every rank when the last one's GPU is ready;
    the CPU's polling is outside the timing); on the CPU (gloo) one after the other, by the wall
    clock. Bounded by `limit_s` in all. `before_start` runs before the meeting (where a rank is
    late), `before_each` before each all-reduce is issued, inside the timing."""
    before_start()
    flag = _torch().zeros(1, dtype=_torch().float32, device=tensor.device)
    wait([all_reduce(flag, group)], what=f"{what}: meeting the other ranks", limit_s=limit_s, on_wait=on_wait)
    if tensor.is_cuda:
        start, end = _torch().cuda.Event(enable_timing=True), _torch().cuda.Event(enable_timing=True)
        _order_after([all_reduce(flag, group)], what)  # the start waits for every rank's GPU
        start.record()
        works = []
        for _ in range(count):
            before_each()
            works.append(all_reduce(tensor, group))
        _order_after(works, what)  # the current stream waits for them; the CPU does not
        end.record()
        _poll(end.query, what, limit_s, on_wait)
        _poll(lambda: all(work.is_completed() for work in works), what, limit_s, on_wait)
        _order_after(works, what)  # a collective that failed raises here
        return float(start.elapsed_time(end)) / 1e3
    began = time.perf_counter()
    for _ in range(count):  # gloo may run two async works at once: never in place on one buffer
        before_each()
        wait([all_reduce(tensor, group)], what=what, limit_s=limit_s, on_wait=on_wait)
    return time.perf_counter() - began


def slowest(
    seconds: Sequence[float],
    *,
    device: torch.device,
    what: str,
    limit_s: float,
    on_wait: Callable[[str], None],
    group: Any = None,
) -> tuple[float, ...]:
    """Each window's time of the group's slowest rank (a MAX reduction of every rank's times, as
    nccl-tests' `-a 3`): one figure for the team, the same on every rank."""
    times = _torch().tensor(list(seconds), dtype=_torch().float64, device=device)
    work = _dist().all_reduce(times, op=_dist().ReduceOp.MAX, group=group, async_op=True)
    wait([work], what=f"{what}: the slowest rank's times", limit_s=limit_s, on_wait=on_wait)
    return tuple(float(t) for t in times.tolist())


def _order_after(works: Sequence[Any], what: str) -> None:
    for work in works:
        try:
            work.wait()  # on a GPU, orders the current stream after it; raises a collective's error
        except RuntimeError as err:  # gloo's and NCCL's errors (DistBackendError is one)
            raise PeerLost(f"{what}: {err}") from err


def new_group(ranks: Sequence[int]) -> Any:
    """A subgroup: every rank of the world must call this, with the same ranks, in the same order."""
    return _dist().new_group(list(ranks))


def free_groups(groups: Sequence[Any], *, device: torch.device, limit_s: float, on_wait: Callable[[str], None]) -> None:
    """Destroy subgroups (their communicators and buffers), once every rank of the world is done
    with them: every rank must call this at the same point. The meeting first is on the whole
    world, whose communicator stays: a rank leaves it only after its own subgroups' collectives
    completed, so no member still reads a buffer that another frees."""
    flag = _torch().zeros(1, dtype=_torch().float32, device=device)
    wait([all_reduce(flag)], what="the end of the subgroups' all-reduces", limit_s=limit_s, on_wait=on_wait)
    for group in groups:
        _dist().destroy_process_group(group)  # a rank outside the group has none: a no-op


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs; gloo stands in for it on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def backend_facts(backend: str) -> dict[str, str]:
    """The collective library's version, recorded with the figures."""
    if backend != "nccl":
        return {"backend": backend, "version": _torch().__version__}
    version = _torch().cuda.nccl.version()
    text = ".".join(str(part) for part in version) if isinstance(version, tuple) else str(version)
    return {"backend": backend, "version": text}


# -- MPI -------------------------------------------------------------------------------


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (mpiexec, mpirun, srun with PMI) started this process."""
    return any(name in os.environ for name in MPI_ENV)


def inherited_fds() -> tuple[int, ...]:
    """Descriptors a child must inherit to join MPI in this process's place (MPICH's PMI_FD)."""
    text = os.environ.get(MPI_FD_ENV, "")
    return (int(text),) if text.isdigit() else ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Place:
    """Where this process stands in an MPI job."""

    rank: int
    size: int
    local_rank: int
    """Among the job's processes on this host."""
    local_size: int
    host: str


class Mpi:
    """The MPI world of a job started by an MPI launcher. Initialises MPI on creation.

    Its exchanges are point to point and polled, each bounded by a limit (`Stuck` past
    it): a node that died must not leave the others blocked in MPI for ever. Every
    process must make the same calls in the same order.
    """

    def __init__(self) -> None:
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.place = Place(
            rank=self.comm.Get_rank(),
            size=self.comm.Get_size(),
            local_rank=local.Get_rank(),
            local_size=local.Get_size(),
            host=socket.gethostname(),
        )
        local.Free()
        self._tag = 100
        self.meeting_host = ""
        """Where rank 0 hosts the all-reduce's meeting place (`choose_meeting_host`)."""

    def gather(self, value: Any, *, limit_s: float, missing: Any = Stuck) -> list[Any] | None:
        """Every rank's `value` in rank order, on rank 0; None elsewhere. With `missing`, a rank
        whose value has not come within `limit_s` (all ranks together) gets it instead of `Stuck`."""
        tag = self._next_tag()
        if self.place.rank != 0:
            self._send(value, 0, tag, limit_s)
            return None
        deadline = time.monotonic() + limit_s
        found = [value]
        for r in range(1, self.place.size):
            try:
                found.append(self._recv(r, tag, max(0.0, deadline - time.monotonic())))
            except Stuck:
                if missing is Stuck:
                    raise
                found.append(missing)
        return found

    def bcast(self, value: Any, *, limit_s: float) -> Any:
        """Rank 0's `value`, on every rank."""
        tag = self._next_tag()
        if self.place.rank == 0:
            for r in range(1, self.place.size):
                self._send(value, r, tag, limit_s)
            return value
        return self._recv(0, tag, limit_s)

    def allgather(self, value: Any, *, limit_s: float) -> list[Any]:
        """Every rank's `value` in rank order, on every rank."""
        return list(self.bcast(self.gather(value, limit_s=limit_s), limit_s=limit_s))

    def choose_meeting_host(self, given: str, *, limit_s: float) -> str:
        """The address rank 0 hosts the meeting place on (`given`, rank 0's `--rendezvous-address`,
        or one found: harness/addresses.py), learnt by every rank. Raises ConfigError on every rank
        alike when it is a loopback address and the job spans several hosts (the others could
        not reach it), or when `given` does not resolve. Every MPI process must call this."""
        hosts = self.allgather(self.place.host, limit_s=limit_s)
        chosen: tuple[str, str] | None = None
        if self.place.rank == 0:
            try:
                chosen = (addresses.meeting_address(given, hosts, self.place.host), "")
            except OSError as err:
                chosen = ("", f"{given!r} does not resolve on {self.place.host}: {err}")
        address: str
        problem: str
        address, problem = self.bcast(chosen, limit_s=limit_s)
        if problem:
            raise ConfigError(problem, option="rendezvous_address")
        spread = sorted(set(hosts))
        if len(spread) > 1 and addresses.is_loopback(address):
            raise ConfigError(
                f"the all-reduce's meeting place would be {address}, a loopback address, but the job spans "
                f"{len(spread)} hosts ({', '.join(spread)}) that cannot reach it there: give the address of "
                f"MPI rank 0's host ({hosts[0]}) on the network the nodes share",
                option="rendezvous_address",
            )
        self.meeting_host = address
        return address

    def _next_tag(self) -> int:
        self._tag += 1
        return self._tag

    def _send(self, value: Any, dest: int, tag: int, limit_s: float) -> None:
        request = self.comm.isend(value, dest=dest, tag=tag)
        _poll(lambda: request.test()[0], f"a send to MPI rank {dest}", limit_s)

    def _recv(self, source: int, tag: int, limit_s: float) -> Any:
        found: list[Any] = []

        def arrived() -> bool:
            message = self.comm.improbe(source=source, tag=tag)
            if message is not None:
                found.append(message.recv())
            return bool(found)

        _poll(arrived, f"MPI rank {source}'s message", limit_s)
        return found[0]


def _poll(done: Callable[[], bool], what: str, limit_s: float, on_wait: Callable[[str], None] | None = None) -> None:
    """Until `done()`, sleeping a little longer each time; `on_wait` every second; `Stuck` past `limit_s`."""
    began = reported = time.monotonic()
    pause = POLL_S[0]
    while not done():
        now = time.monotonic()
        if now - began > limit_s:
            raise Stuck(what, now - began)
        if on_wait is not None and now - reported > REPORT_S:
            on_wait(f"{what}: waiting for the other ranks")
            reported = now
        time.sleep(pause)
        pause = min(pause * 2, POLL_S[1])
