"""Every run option, declared once.

From the one list `OPTIONS` come the flags of `gpu-burnin run` (`--duration`), the
pytest options (`--gpu-duration`) and the argv `gpu-burnin run` hands its pytest
child; `resolve()` turns parsed values into `RunOptions` once, with the profile
chosen, the CPU self-test's sizes applied and the baselines loaded. Each value is
checked as it is parsed (argparse `type=` functions), so a bad one is a usage
error naming the flag the user typed; checks that need two options at once raise
a ConfigError that names the option, and each front end shows its own flag.

Adding a run option is one entry here, plus its use in `resolve()`; the Kubernetes
entrypoints take the same list.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from harness import addresses, baselines, devices, markexpr, results
from harness.baselines import BaselineSet
from harness.errors import ConfigError
from harness.groups import GROUPS
from harness.profiles import MIN_DURATION_S, MIN_STALL_S, MIN_STARTUP_S, PROFILES, Profile, by_name
from harness.workers import faults
from harness.workers.faults import Fault

Front = Literal["cli", "pytest"]

TIMEOUT_BASE_S = 600.0
TIMEOUT_PER_DURATION = 6
"""The default watchdog: ten minutes plus six times the burn duration (one per test group)."""
MAX_SECONDS = 7 * 24 * 3600.0
"""No duration or timeout is longer than a week: a larger figure is a typo, not a plan."""
MIN_RUN_TIMEOUT_S = MIN_STARTUP_S
"""The shortest watchdog for a whole run: less than one worker's start-up."""
DEFAULT_RESULTS = Path("gpu-burnin-results")
ENTRYPOINTS = ("pytest", "run", "preflight", "periodic")
MAX_CPU_DEVICES = 8


def seconds(text: str) -> float:
    """A number of seconds: finite, positive, at most a week."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text}")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} s is more than a week ({MAX_SECONDS:.0f} s); give fewer seconds")
    return value


def seconds_at_least(minimum: float, why: str) -> Callable[[str], float]:
    """A number of seconds, as `seconds`, of at least `minimum`; `why` says what less would do."""

    def parse(text: str) -> float:
        value = seconds(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} s is below the minimum of {minimum:g} s: {why}")
        return value

    return parse


burn_seconds = seconds_at_least(MIN_DURATION_S, "a burn that short is a slip, not a test")
stall_seconds = seconds_at_least(MIN_STALL_S, "a healthy device would be declared hung between two progress reports")
run_seconds = seconds_at_least(MIN_RUN_TIMEOUT_S, "the test process alone takes that long to start")


def seconds_or_zero(text: str) -> float:
    """A number of seconds, where 0 turns the thing off."""
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)


def given_path(text: str) -> Path:
    """A file or directory name; an empty one (which would mean the current directory) is a slip."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def xid_table(text: str) -> Path:
    """A table of Xid classifications, which must parse: checked on every device, the CPU self-test
    included, so a bad table is found where it is given and not on the first GPU node."""
    from harness.nvml import xid_table

    try:
        xid_table.load_table(given_path(text))
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.describe()) from None
    return Path(text)


def output_file(text: str) -> Path:
    """A file this run will write after it burns (the metrics textfile): checked now, so a path that
    cannot be written is a usage error before the burn, not a lost result after it. A directory
    still to be made is made when the file is written."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got an empty string")
    target = Path(text)
    if target.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; name a file in it")
    if target.exists() and not target.is_file():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a regular file")
    existing = next(p for p in (target.absolute().parent, *target.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is not a directory: {text} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing}")
    return target


def results_url(text: str) -> str:
    """Where results also go: an object store's URL (harness/store.py), checked without a request."""
    from harness import store

    try:
        return store.check_url(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.problem) from None


def count(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def whole(least: int, most: int, what: str = "") -> Callable[[str], int]:
    """A parser of a whole number from `least` to `most`, for argparse's `type=`; `what` says what the
    bounds mean in the error ("0: not at all")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not least <= value <= most:
            said = f" ({what})" if what else ""
            raise argparse.ArgumentTypeError(f"expected {least} to {most}{said}, got {value}")
        return value

    return parse


def bounded(above: float, most: float, what: str) -> Callable[[str], float]:
    """A parser of a finite number greater than `above` and at most `most`, for argparse's `type=`;
    `what` names the number in the error ("a number of days")."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or not above < value <= most:
            raise argparse.ArgumentTypeError(f"expected {what} greater than {above:g} and at most {most:g}, got {text}")
        return value

    parse.__name__ = what
    return parse


EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
"""Times a result file or a report's --now may hold: anything outside is a broken clock or a forged
file, and far outside what pandas' timestamps hold (years 1677 to 2262)."""


def moment(text: str) -> dt.datetime:
    """An ISO 8601 time (Z or an offset) from EARLIEST to LATEST, as UTC."""
    try:
        value = results.parse_timestamp(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a time such as 2026-11-28T00:00:00Z, got {text!r}") from None
    if not EARLIEST <= value < LATEST:
        raise argparse.ArgumentTypeError(f"expected a time from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}, got {text!r}")
    return value


def nvml_spec(text: str) -> str:
    """`real` (the driver's NVML) or `sim:FILE` (a scenario for the simulated NVML, which must parse)."""
    if text == "real":
        return text
    if not text.startswith("sim:") or len(text) == 4:
        raise argparse.ArgumentTypeError(f"expected real or sim:FILE, got {text!r}")
    from harness.nvml.sim import Simulated

    try:
        Simulated.from_file(Path(text[4:]))
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.describe()) from None
    return text


def cpu_devices(text: str) -> int:
    value = count(text)
    if value > MAX_CPU_DEVICES:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_CPU_DEVICES} CPU stand-in devices, got {value}")
    return value


def dcgm_level(text: str) -> int:
    value = count(text)
    if value > 4:
        raise argparse.ArgumentTypeError(f"expected a DCGM diagnostic level from 1 to 4, got {value}")
    return value


def fault(text: str) -> Fault:
    try:
        return faults.parse(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.problem) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Option:
    name: str
    """The option's name in values and errors; the flags derive from it."""
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    default: Any = None
    metavar: str | None = None
    many: bool = False
    """May be given several times; the value is a list."""
    cli: bool = True
    """A flag of `gpu-burnin run`."""
    pytest: bool = True
    """A pytest option (`--gpu-NAME`)."""
    flag: str = ""
    """The flag on both sides when it is not derived from the name (pytest's own `-m`)."""
    pytest_builtin: bool = False
    """pytest declares it itself: the plugin reads it but does not add it."""
    child: bool = True
    """A gpu-burnin command hands it to its pytest child; False for what the command does itself
    once the child has ended (sending the result to a store: once, from one process)."""

    def flag_for(self, front: Front) -> str:
        if self.flag:
            return self.flag
        dashed = self.name.replace("_", "-")
        return f"--{dashed}" if front == "cli" else f"--gpu-{dashed}"

    @property
    def dest(self) -> str:
        return f"gpu_{self.name}"

    def argparse_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help, "default": [] if self.many else self.default}
        if self.many:
            kwargs["action"] = "append"
        for key in ("type", "choices", "metavar"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.type is not None:
            kwargs["type"] = guarded(self.type)
        return kwargs


def guarded(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type whose look at the filesystem (a name too long to look up, a path it may not
    enter) fails as a usage error naming the value, never as a traceback."""

    @functools.wraps(parse)
    def checked(text: str) -> Any:
        try:
            return parse(text)
        except OSError as err:
            shown = text if len(text) <= 80 else f"{text[:40]}...{text[-20:]}"
            raise argparse.ArgumentTypeError(f"{shown}: {err.strerror}") from None

    return checked


OPTIONS: tuple[Option, ...] = (
    Option(
        name="device",
        choices=("cuda", "cpu", "auto"),
        default="cuda",
        help="cuda: the GPUs (default); cpu: the CPU self-test; auto: cpu only where no NVIDIA driver is installed",
    ),
    Option(
        name="profile",
        choices=tuple(sorted(PROFILES)),
        default="quick",
        help="how long and hard to burn: quick (preflight), standard (periodic), soak",
    ),
    Option(
        name="duration",
        type=burn_seconds,
        metavar="SECONDS",
        help=f"seconds each test burns, at least {MIN_DURATION_S:g} (default: the profile's)",
    ),
    Option(
        name="markexpr",
        flag="-m",
        metavar="MARKEXPR",
        pytest_builtin=True,
        help=f"select tests by marker, as pytest -m ({', '.join(GROUPS)}); an unknown marker, or an expression "
        "that selects no test, is an error",
    ),
    Option(name="baseline", type=given_path, metavar="FILE", help="judge against this baseline file only"),
    Option(
        name="baseline_dir",
        type=given_path,
        metavar="DIR",
        help="pick each GPU model's baseline from this directory (default: the packaged baselines)",
    ),
    Option(
        name="results",
        type=given_path,
        metavar="DIR",
        help=f"where the JSON result file goes (default: ./{DEFAULT_RESULTS})",
    ),
    Option(
        name="results_url",
        type=results_url,
        metavar="URL",
        child=False,
        help="also put each result in object storage, as URL/<node>/<run id>.json (s3://, gs://, az://; "
        "credentials from the environment or the pod's identity); one the store does not take waits in "
        "RESULTS/outbox for the next run (docs/results.md)",
    ),
    Option(name="expect_gpus", type=count, metavar="N", help="fail unless exactly N GPUs are visible"),
    Option(
        name="cpu_devices",
        type=cpu_devices,
        metavar="N",
        help=f"stand-in devices of the CPU self-test, 1 to {MAX_CPU_DEVICES} (default {devices.CPU_DEVICES}): "
        "the tests between devices need two",
    ),
    Option(
        name="hang_timeout",
        type=stall_seconds,
        metavar="SECONDS",
        help=f"seconds without progress before a device worker is declared hung, at least {MIN_STALL_S:g}",
    ),
    Option(
        name="inject",
        type=fault,
        many=True,
        metavar="FAULT",
        help=f"inject a fault to prove the run fails closed: [GROUP.]KIND[@N][:DEVICE], KIND one of "
        f"{', '.join(faults.KINDS)}; such a run never passes",
    ),
    Option(
        name="nvml",
        type=nvml_spec,
        metavar="real|sim:FILE",
        help="where health data comes from: the driver's NVML (default), or a simulated NVML scenario "
        "(docs/health.md); a simulated run can pass, with a SIMULATED warning, but says nothing about this "
        "machine, and preflight and periodic refuse it",
    ),
    Option(
        name="xid_table",
        type=xid_table,
        metavar="FILE",
        help="extra or changed Xid classifications, merged over the packaged table (docs/health.md)",
    ),
    Option(
        name="dcgm_level",
        type=dcgm_level,
        metavar="1-4",
        help="also run `dcgmi diag` at this level (the dcgm test runs only when this is given)",
    ),
    Option(
        name="rendezvous_address",
        type=addresses.parse,
        metavar="ADDRESS",
        cli=False,
        help="under MPI, the address of MPI rank 0's host that the other nodes reach it on, for the "
        "all-reduce's meeting place (default: the interface that routes to another node)",
    ),
)
BY_NAME = {option.name: option for option in OPTIONS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Every run option, resolved: what a run is told to do."""

    device: str
    """"cuda" or "cpu" ("auto" is resolved)."""
    profile: Profile
    baselines: BaselineSet
    results_dir: Path
    expect_gpus: int | None
    faults: tuple[Fault, ...]
    cpu_devices: int = devices.CPU_DEVICES
    """Stand-in devices of the CPU self-test."""
    run_id: str
    selection: str
    """The -m marker expression, or ""."""
    entrypoint: str = "pytest"
    """The command that started the run: pytest itself, or gpu-burnin run, preflight or periodic."""
    gpu_node: bool = False
    """The run decides about a node labelled as having GPUs (preflight, periodic): no GPU visible
    there is a GPU gone missing, a failure, not a run with nothing to test."""
    nvml: str = "real"
    """`real`, or `sim:FILE`."""
    xid_table: Path | None = None
    dcgm_level: int | None = None
    rendezvous_address: str = ""
    """Under MPI: where rank 0 hosts the all-reduce's meeting place; "" to find it."""
    results_url: str | None = None
    """Where each result also goes (harness/outbox.py), or None."""

    @property
    def front(self) -> Front:
        """Whose flags the run's messages name: pytest's, or the gpu-burnin command's that started it."""
        return front_of(self.entrypoint)

    def flag(self, name: str) -> str:
        """The flag of the option `name` in the words of the front end in use."""
        return BY_NAME[name].flag_for(self.front)


CHILD_ENV = "GPU_BURNIN_CHILD"
"""How a gpu-burnin command tells its pytest child what only it may set (`Internal`)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Internal:
    """What the gpu-burnin command that starts the pytest child decides for it: the run id, which
    command it is, and that the node's burn lock is held for it. These are not options of any front
    end: a run started by hand must not be able to call itself a preflight. The child checks the
    lock really is held by its parent for this run id (harness/lock.py) before believing any of it."""

    run_id: str
    entrypoint: str
    gpu_node: bool = False

    def to_env(self) -> dict[str, str]:
        return {CHILD_ENV: json.dumps(dataclasses.asdict(self))}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Internal | None:
        """The parent's word, or None when pytest was started some other way. ConfigError if malformed."""
        text = environ.get(CHILD_ENV)
        if text is None:
            return None
        try:
            data = json.loads(text)
            run_id, entrypoint, gpu_node = str(data["run_id"]), str(data["entrypoint"]), data["gpu_node"] is True
            found = cls(run_id=run_id, entrypoint=entrypoint, gpu_node=gpu_node)
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{CHILD_ENV} is malformed; it is set by gpu-burnin for its own child only") from None
        if found.entrypoint not in ENTRYPOINTS or not results.RUN_ID.fullmatch(found.run_id):
            raise ConfigError(f"{CHILD_ENV} is malformed; it is set by gpu-burnin for its own child only")
        return found

    def values(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "entrypoint": self.entrypoint, "gpu_node": self.gpu_node}


def add_to_argparse(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The `gpu-burnin run` flags."""
    for option in OPTIONS:
        if option.cli:
            parser.add_argument(option.flag_for("cli"), **option.argparse_kwargs())


def add_to_pytest(group: Any) -> None:
    """The pytest options, into the plugin's option group (a pytest OptionGroup)."""
    for option in OPTIONS:
        if option.pytest and not option.pytest_builtin:
            group.addoption(option.flag_for("pytest"), **option.argparse_kwargs())


def values_from(namespace: argparse.Namespace | Any) -> dict[str, Any]:
    """The parsed values by option name, from an argparse namespace or pytest's `config.option`."""
    found = {}
    for option in OPTIONS:
        dest = "markexpr" if option.pytest_builtin and not hasattr(namespace, option.dest) else option.dest
        found[option.name] = getattr(namespace, dest, [] if option.many else option.default)
    return found


def child_argv(values: Mapping[str, Any]) -> list[str]:
    """pytest flags that carry `values` to a child pytest process."""
    argv: list[str] = []
    for option in OPTIONS:
        if not option.pytest or not option.child:
            continue
        given = values.get(option.name)
        for value in (given or []) if option.many else [given]:
            if value is not None and value != "":
                argv += [option.flag_for("pytest"), str(value)]
    return argv


def explain(err: ConfigError, front: Front) -> str:
    """A ConfigError in the words of the front end the user typed."""
    option = BY_NAME.get(err.option or "")
    return err.describe(option.flag_for(front) if option else None)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if devices.nvidia_driver_present() else "cpu"
    return device


def front_of(entrypoint: str | None) -> Front:
    """The front end a run's user typed: pytest itself, or a gpu-burnin command (whose pytest child
    speaks to the same user, so it uses gpu-burnin's flags)."""
    return "pytest" if (entrypoint or "pytest") == "pytest" else "cli"


def resolve(values: Mapping[str, Any], *, markers: Collection[str] = ()) -> RunOptions:
    """Every option checked together and resolved, once. Raises ConfigError; changes nothing.
    `markers`: those pytest has registered, when pytest is the front end."""
    device = resolve_device(values.get("device") or "cuda")
    profile = by_name(values.get("profile") or "quick")
    if device == "cpu":
        profile = profile.for_cpu()
    profile = profile.with_overrides(duration_s=values.get("duration"), hang_timeout_s=values.get("hang_timeout"))
    baseline, baseline_dir = values.get("baseline"), values.get("baseline_dir")
    if baseline is not None and baseline_dir is not None:
        raise ConfigError("give a baseline file or a baseline directory, not both", option="baseline")
    expect_gpus = values.get("expect_gpus")
    if expect_gpus is not None and device != "cuda":
        raise ConfigError("counts GPUs: it cannot be used with the CPU self-test", option="expect_gpus")
    if values.get("cpu_devices") is not None and device != "cpu":
        raise ConfigError("sets the CPU self-test's devices: it needs --device cpu", option="cpu_devices")
    loaded = baselines.load_one(baseline) if baseline else baselines.load_dir(baseline_dir or baselines.default_dir())
    if values.get("markexpr"):
        markexpr.check(values["markexpr"], suite=front_of(values.get("entrypoint")) == "cli", registered=markers)
    return RunOptions(
        device=device,
        profile=profile,
        baselines=loaded,
        results_dir=values.get("results") or DEFAULT_RESULTS,
        expect_gpus=expect_gpus,
        faults=tuple(_faults(values.get("inject") or ())),
        cpu_devices=values.get("cpu_devices") or devices.CPU_DEVICES,
        run_id=values.get("run_id") or results.new_run_id(),
        selection=values.get("markexpr") or "",
        entrypoint=values.get("entrypoint") or "pytest",
        gpu_node=bool(values.get("gpu_node")),
        nvml=values.get("nvml") or "real",
        xid_table=values.get("xid_table"),
        dcgm_level=values.get("dcgm_level"),
        rendezvous_address=values.get("rendezvous_address") or "",
        results_url=values.get("results_url") or None,
    )


def default_timeout(chosen: RunOptions) -> float:
    return TIMEOUT_BASE_S + TIMEOUT_PER_DURATION * chosen.profile.duration_s


def check_fault_devices(chosen: RunOptions) -> None:
    """A fault must name a device this node has: checked before the run, so the error names the option.
    Listing GPUs takes a worker, so only a fault on a device other than 0 pays for it."""
    if not {f.device for f in chosen.faults} - {0}:
        return
    found = devices.discover(
        chosen.device, startup_timeout_s=chosen.profile.startup_timeout_s, cpu_devices=chosen.cpu_devices
    ).devices
    indices = sorted(d.index for d in found)
    for fault in chosen.faults:
        if found and fault.device not in indices:
            raise ConfigError(f"{fault} names device {fault.device}; this node has {indices}", option="inject")


def _faults(given: Sequence[Fault | str]) -> list[Fault]:
    return [f if isinstance(f, Fault) else faults.parse(f) for f in given]
