"""Judge one step of bench/gpu_check.sh by what it left behind, not by its exit code alone.

    python -m bench.expect result DIR --exit N --verdict fail --codes DATA_MISMATCH@0 OVER_LIMIT@0
    python -m bench.expect result DIR --exit N --verdict pass --measured 'memory.*' --health nvml --telemetry
    python -m bench.expect log FILE --exit N --want-exit 0 --line ': usable$'
    python -m bench.expect imports --device cuda

A Python traceback exits 1, as a run that failed does, so an exit code alone reads a step
that never ran as "failed as expected". Each mode ends with one line, `ok: ...` or
`UNEXPECTED: ...` (what differs, and the run's findings that stop a pass), and exits 0 when
the step is as expected, 1 when not, 4 for bad arguments.

- `result`: the newest result file in DIR (each step has a results directory of its own),
  which must be readable, `finished`, with the verdict asked for and an exit code equal to
  its verdict's; every expected finding `CODE[@GPU][=SEVERITY]` in it (GPU: the device's index);
  and no finding that fails or stops the run other than those expected (the record of an
  injected fault, `FAULT_INJECTED`, is expected wherever a fault was injected). `--measured`:
  figures that must be there (shell patterns), printed on the ok line; `--health SOURCE`:
  health snapshots taken at the start and end, every one from SOURCE (`nvml`, `sim`), none
  with a problem, and on GPUs naming every GPU under test; `--telemetry`: samples taken
  during every stress test that ran, on GPUs for every GPU under test.
- `log`: a step that writes no result file (a benchmark, pytest): its exit code, and lines
  its log must hold (regular expressions), the first match of each printed.
- `imports`: the packages the check needs on this machine, one line each; exit 1 when an
  essential one is missing (torch that sees a GPU, numpy, pytest, pandas; on a GPU also
  nvidia-ml-py and triton), so that the script stops early and says why.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from harness import results
from harness.errors import ConfigError
from harness.groups import stressing
from harness.nvml import binding
from harness.records import Code, Finding, Severity
from harness.results import ResultDocument, RunState
from harness.verdict import Status, TestOutcome

STOPPING = (Severity.FAIL, Severity.INCOMPLETE)
RAN = (TestOutcome.PASSED, TestOutcome.FAILED, TestOutcome.INTERRUPTED)
"""Outcomes of a test whose body ran: a stress test that ran has telemetry."""
SHOWN = 8
"""Figures and findings named on one line, at most."""


@dataclasses.dataclass(frozen=True)
class Expected:
    """One finding a step must leave: its code, and where given the GPU index and severity."""

    code: Code
    gpu: int | None = None
    severity: Severity | None = None

    @classmethod
    def parse(cls, text: str) -> Expected:
        rest, _, severity = text.partition("=")
        code, at, gpu = rest.partition("@")
        try:
            return cls(
                code=Code(code),
                gpu=int(gpu) if at else None,
                severity=Severity(severity) if severity else None,
            )
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected CODE[@GPU][=SEVERITY], CODE a finding code, GPU an index, "
                f"SEVERITY one of {', '.join(Severity)}"
            ) from None

    def matches(self, finding: Finding, uuids: dict[int, str]) -> bool:
        return (
            finding.code == self.code
            and (self.gpu is None or finding.gpu == uuids.get(self.gpu))
            and (self.severity is None or finding.severity == self.severity)
        )

    def __str__(self) -> str:
        at = f"@{self.gpu}" if self.gpu is not None else ""
        severity = f"={self.severity}" if self.severity else ""
        return f"{self.code}{at}{severity}"


# -- result files --------------------------------------------------------------------------------


def newest(directory: Path) -> tuple[ResultDocument | None, list[str]]:
    """The newest result file in `directory` (by start), and a problem for every file that cannot be read."""
    problems, found = [], []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            found.append(results.load(path))
        except ConfigError as err:
            problems.append(str(err))
    if not found and not problems:
        problems.append(f"no result file in {directory}")
    return max(found, key=lambda d: d.started_at, default=None), problems


def judge_result(
    doc: ResultDocument,
    *,
    exit_code: int,
    verdict: Status,
    codes: Sequence[Expected] = (),
    measured: Sequence[str] = (),
    health: str = "",
    telemetry: bool = False,
) -> list[str]:
    """What in `doc` differs from what the step expects; empty when nothing does."""
    uuids = {d.index: d.uuid for d in doc.devices}
    wrong = []
    if doc.state is not RunState.FINISHED:
        wrong.append(f"the run's state is {doc.state}, not finished")
    if doc.verdict.status != verdict:
        wrong.append(f"verdict {doc.verdict.status}, expected {verdict}")
    if exit_code != doc.verdict.exit_code:
        wrong.append(f"exit {exit_code}, but its verdict {doc.verdict.status} exits {int(doc.verdict.exit_code)}")
    expected = list(codes)
    if doc.faults:
        expected.append(Expected(Code.FAULT_INJECTED, severity=Severity.INCOMPLETE))
    for want in expected:
        if want.gpu is not None and want.gpu not in uuids:
            wrong.append(f"{want}: the run has no GPU {want.gpu}")
        elif not any(want.matches(f, uuids) for f in doc.findings):
            wrong.append(f"no {want} finding")
    others = [
        f for f in doc.findings if f.severity in STOPPING and not any(w.matches(f, uuids) for w in expected)
    ]
    wrong += [f"unexpected {f.severity} {f.code}: {f.message}" for f in others[:SHOWN]]
    for pattern in measured:
        if not any(fnmatch.fnmatchcase(m.metric, pattern) for m in doc.measurements):
            wrong.append(f"no figure for {pattern}")
    if health:
        wrong += _health(doc, health)
    if telemetry:
        wrong += _telemetry(doc)
    return wrong


def _health(doc: ResultDocument, source: str) -> list[str]:
    wrong = [f"no {moment!r} health snapshot" for moment in ("start", "end") if moment not in doc.health]
    on_gpus = {d.uuid for d in doc.devices if d.kind == "cuda"}
    for moment, snapshot in doc.health.items():
        taken = str(snapshot.get("source", ""))
        if taken != source and not taken.startswith(f"{source}:"):
            wrong.append(f"health snapshot {moment!r} from {taken or 'nowhere'}, expected {source}")
        if snapshot.get("problem"):
            wrong.append(f"health snapshot {moment!r}: {snapshot['problem']}")
        listed = {g.get("uuid") for g in snapshot.get("gpus", [])}
        if on_gpus - listed:
            wrong.append(f"health snapshot {moment!r} lacks {', '.join(sorted(on_gpus - listed))}")
    return wrong


def _telemetry(doc: ResultDocument) -> list[str]:
    stress = [t.nodeid for t in doc.tests if t.group in stressing() and t.outcome in RAN]
    if not stress:
        return ["no stress test ran, so no telemetry"]
    on_gpus = {d.uuid for d in doc.devices if d.kind == "cuda"}
    wrong = []
    for nodeid in stress:
        sampled = {gpu for gpu, entry in doc.telemetry.get(nodeid, {}).items() if entry.get("samples", 0) >= 1}
        if not sampled:
            wrong.append(f"no telemetry sample during {nodeid}")
        elif on_gpus - sampled:
            wrong.append(f"no telemetry sample of {', '.join(sorted(on_gpus - sampled))} during {nodeid}")
    return wrong


def figures(doc: ResultDocument, patterns: Sequence[str]) -> str:
    """The figures matching `patterns`, GPU 0's first: `metric value unit` each, at most SHOWN."""
    labels = {d.uuid: f"GPU {d.index}" for d in doc.devices}
    chosen = [m for m in doc.measurements if any(fnmatch.fnmatchcase(m.metric, p) for p in patterns)]
    where = (lambda gpu: f" ({labels.get(gpu, gpu)})") if len(labels) > 1 else (lambda gpu: "")
    shown = [f"{m.metric} {m.value:.4g} {m.unit}{where(m.gpu)}" for m in chosen]
    more = f" and {len(shown) - SHOWN} more" if len(shown) > SHOWN else ""
    return ", ".join(shown[:SHOWN]) + more


def _result(args: argparse.Namespace) -> tuple[bool, str]:
    doc, problems = newest(args.directory)
    if doc is None:
        return False, "; ".join(problems)
    wrong = problems + judge_result(
        doc,
        exit_code=args.exit,
        verdict=args.verdict,
        codes=args.codes,
        measured=args.measured,
        health=args.health,
        telemetry=args.telemetry,
    )
    if wrong:
        return False, "; ".join(wrong) + f" ({doc.run_id})"
    noted = {f.code for f in doc.findings if f.severity is not Severity.INFO} | {c.code for c in args.codes}
    found = sorted(map(str, noted))
    said = f"verdict {doc.verdict.status}" + (f" with {', '.join(found)}" if found else "")
    shown = figures(doc, args.measured)
    return True, said + (f"; {shown}" if shown else "") + f" ({doc.run_id})"


# -- logs ----------------------------------------------------------------------------------------


def judge_log(text: str, *, exit_code: int, want_exit: int, lines: Sequence[str]) -> tuple[list[str], list[str]]:
    """What differs from the expected exit code and lines; and the first line each pattern matched."""
    wrong = [f"exit {exit_code}, expected {want_exit}"] if exit_code != want_exit else []
    matched = []
    for pattern in lines:
        found = re.search(pattern, text, flags=re.MULTILINE)
        if found is None:
            wrong.append(f"no line matching {pattern!r}")
        else:
            start = text.rfind("\n", 0, found.start()) + 1
            end = text.find("\n", found.end())
            matched.append(text[start : end if end >= 0 else len(text)].strip())
    return wrong, matched


def _log(args: argparse.Namespace) -> tuple[bool, str]:
    try:
        text = args.file.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return False, f"{args.file}: cannot read: {err.strerror}"
    wrong, matched = judge_log(text, exit_code=args.exit, want_exit=args.want_exit, lines=args.line)
    if wrong:
        tail = [line for line in text.splitlines() if line.strip()][-1:]
        return False, "; ".join(wrong) + (f"; last line: {tail[0][:200]}" if tail else "; the log is empty")
    return True, f"exit {args.exit}" + "".join(f"; {m}" for m in matched)


# -- imports -------------------------------------------------------------------------------------


def imports(device: str) -> tuple[list[str], list[str]]:
    """One line per package the check uses, and the essential ones missing. The essential ones are
    imported (a broken install shows), NVML's through harness.nvml.binding; the others only looked up."""
    essential = ["torch", "numpy", "pytest", "pandas"] + (["pynvml", "triton"] if device == "cuda" else [])
    lines, missing = [], []
    for name in essential:
        try:
            module = binding.load() if name == "pynvml" else importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any failure to import is an answer here
            lines.append(f"{name}: MISSING (essential): {type(err).__name__}: {err}")
            missing.append(name)
            continue
        lines.append(f"{name}: {getattr(module, '__version__', '') or 'present'}")
    for name, role in [
        *((n, "optional") for n in ["mpi4py", *([] if device == "cuda" else ["pynvml", "triton"])]),
        *((n, "not needed: nothing the check runs imports it") for n in ["prometheus_client", "kubernetes"]),
    ]:
        there = importlib.util.find_spec(name) is not None
        lines.append(f"{name}: {'present' if there else 'absent'} ({role})")
    if device == "cuda" and "torch" not in missing:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
        lines.append(f"torch.cuda: {count} GPU(s){': ' + names if names else ''}, CUDA {torch.version.cuda}")
        if not count:
            missing.append("a GPU torch can see")
    return lines, missing


def _imports(args: argparse.Namespace) -> tuple[bool, str]:
    lines, missing = imports(args.device)
    for line in lines:
        print(f"  {line}")
    if missing:
        return False, f"essential packages missing: {', '.join(missing)}: nothing can be checked"
    return True, "every essential package is there"


# -- the command line ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad arguments are the script's mistake, not a step's: exit 4, as gpu-burnin does."""
        self.print_usage(sys.stderr)
        self.exit(4, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench.expect", description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    result = modes.add_parser("result", help="judge a run by its result file")
    result.add_argument("directory", type=Path, metavar="DIR", help="the step's results directory")
    result.add_argument("--exit", type=int, required=True, help="the step's exit code")
    result.add_argument("--verdict", type=Status, choices=list(Status), required=True)
    result.add_argument("--codes", type=Expected.parse, nargs="*", default=[], metavar="CODE[@GPU][=SEVERITY]")
    result.add_argument("--measured", nargs="*", default=[], metavar="PATTERN", help="figures that must be there")
    result.add_argument("--health", default="", metavar="SOURCE", help="snapshots from this source: nvml, sim")
    result.add_argument("--telemetry", action="store_true", help="telemetry during every stress test")
    log = modes.add_parser("log", help="judge a step without a result file by its exit code and log")
    log.add_argument("file", type=Path, metavar="FILE")
    log.add_argument("--exit", type=int, required=True, help="the step's exit code")
    log.add_argument("--want-exit", type=int, default=0)
    log.add_argument("--line", nargs="*", default=[], metavar="REGEX", help="lines the log must hold")
    packages = modes.add_parser("imports", help="the packages the check needs")
    packages.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ok, text = {"result": _result, "log": _log, "imports": _imports}[args.mode](args)
    print(f"{'ok' if ok else 'UNEXPECTED'}: {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
