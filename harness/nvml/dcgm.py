"""DCGM's diagnostic (`dcgmi diag -r LEVEL -j`) as findings.

DCGM's diagnostic is NVIDIA's own judgement of a node (deployment checks, PCIe, memory,
stress): a burn-in that runs it reports what it found beside its own figures. Its JSON
layout changed between DCGM versions (the "DCGM GPU Diagnostic" root holds a
"test_categories" list, or is that list itself; a result names its GPU by "gpu_ids" as a
string, "gpu_id" as a number, or an entity; "warnings" is a string, a list of strings or a
list of objects), so the parser accepts each of them and says what it could not read
instead of guessing. Anything that stops DCGM from answering is a report with a problem,
which is incomplete, never a pass.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from harness.records import NODE, Code, Finding, Remediation, Severity

LEVELS = (1, 2, 3, 4)
ROOT_KEYS = ("DCGM GPU Diagnostic", "DCGM Diagnostic")
"""DCGM 2.x and 3.x name the root "DCGM GPU Diagnostic"; DCGM 4 renamed it."""
DEPLOYMENT = "Deployment"
"""The category of DCGM's software checks (libraries, permissions, persistence mode)."""

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiagResult:
    """One test's result for one GPU, or for the node (a deployment check)."""

    category: str
    test: str
    status: str
    """"pass", "fail", "warn", "skip", or DCGM's word, lower-cased, when it is none of these."""
    gpus: tuple[int, ...] = ()
    """DCGM's GPU ids; empty for a result that names no GPU."""
    entity: str = ""
    """What the result is about when it is not a GPU (a CPU, for DCGM's CPU EUD test)."""
    warnings: tuple[str, ...] = ()
    info: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiagReport:
    results: tuple[DiagResult, ...] = ()
    problem: str = ""
    """Why DCGM's answer is missing or could not all be read; empty when it was."""
    level: int | None = None
    version: str = ""
    driver: str = ""
    exit_status: int | None = None
    tool_missing: bool = False
    """dcgmi is not installed: a configuration matter, not one a rerun clears."""

    @property
    def failed(self) -> tuple[DiagResult, ...]:
        return tuple(result for result in self.results if result.status == "fail")


class _Malformed(Exception):
    """The JSON has a shape this parser does not know; the message says where."""


def parse_diag(text: str) -> DiagReport:
    """The report in `dcgmi diag -j` output; what could not be read is the report's problem."""
    try:
        data = _json_object(text)
        root = _root(data)
    except _Malformed as err:
        return DiagReport(problem=str(err))
    version = data.get("version") or (root.get("version") if isinstance(root, dict) else None)
    header = DiagReport(version=_text(version), driver=_text(data.get("Driver Version Detected")))
    if isinstance(root, dict) and root.get("runtime_error"):
        return dataclasses.replace(header, problem=f"DCGM: {_text(root['runtime_error'])}")
    results, problems = _results(root)
    if not results and not problems:
        problems.append("DCGM reported no test results")
    return dataclasses.replace(header, results=tuple(results), problem="; ".join(problems))


def _json_object(text: str) -> dict[str, Any]:
    """The JSON object in the text; dcgmi may print a line of its own before it."""
    for candidate in (text, text[text.find("{") : text.rfind("}") + 1]):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
        raise _Malformed(f"the output is JSON but not an object ({type(data).__name__})")
    first = text.strip().splitlines()[0][:200] if text.strip() else "nothing"
    raise _Malformed(f"the output is not JSON: {first}")


def _root(data: dict[str, Any]) -> Any:
    for key in ROOT_KEYS:
        if key in data:
            return data[key]
    if "iterations" in data:
        raise _Malformed("the output holds several iterations of the diagnostic; run it once (no --iterations)")
    raise _Malformed(f"the output has no {ROOT_KEYS[0]!r}; its keys are {sorted(data)}")


def _results(root: Any) -> tuple[list[DiagResult], list[str]]:
    """Every result, and a problem for each part whose shape is unknown (the rest is still read)."""
    categories = root.get("test_categories") if isinstance(root, dict) else root
    if not isinstance(categories, list):
        return [], ["'test_categories' is missing or not a list"]
    results: list[DiagResult] = []
    problems: list[str] = []
    for index, category in enumerate(categories):
        try:
            results.extend(_category(category))
        except _Malformed as err:
            problems.append(f"test_categories[{index}]: {err}")
    return results, problems


def _category(category: Any) -> Iterable[DiagResult]:
    if not isinstance(category, dict) or not isinstance(category.get("tests"), list):
        raise _Malformed("not a category with a list of tests")
    name = _text(category.get("category")) or "?"
    found = []
    for index, test in enumerate(category["tests"]):
        if not isinstance(test, dict):
            raise _Malformed(f"tests[{index}] is not an object")
        found.extend(_test(name, test))
    return found


def _test(category: str, test: dict[str, Any]) -> list[DiagResult]:
    name = _text(test.get("name")) or "?"
    entries = test.get("results")
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise _Malformed(f"test {name!r} has no list of results")
    return [_result(category, name, entry) for entry in entries if entry is not None]


def _result(category: str, test: str, entry: Any) -> DiagResult:
    if not isinstance(entry, dict) or "status" not in entry:
        raise _Malformed(f"a result of test {test!r} has no status")
    gpus, entity = _subject(entry)
    return DiagResult(
        category=category,
        test=test,
        status=_status(entry["status"]),
        gpus=gpus,
        entity=entity,
        warnings=tuple(_warnings(entry.get("warnings"))),
        info=tuple(_strings(entry.get("info"))),
    )


def _status(value: Any) -> str:
    """ "Pass", "Skip - All", "Warning" -> "pass", "skip", "warn"."""
    word = _text(value).strip().split(" - ")[0].strip().lower()
    return {"warning": "warn", "passed": "pass", "failed": "fail", "skipped": "skip"}.get(word, word)


def _subject(entry: dict[str, Any]) -> tuple[tuple[int, ...], str]:
    """Which GPUs a result is about (DCGM 2/3 "gpu_ids" "0,1" or "gpu_id" 0; DCGM 4 entities)."""
    for key in ("gpu_ids", "gpu_id"):
        if key in entry:
            return _gpu_ids(entry[key], key), ""
    group = entry.get("entity_group")
    if "entity_id" in entry and (group == "GPU" or entry.get("entity_group_id") == 1):
        return _gpu_ids(entry["entity_id"], "entity_id"), ""
    if "entity_id" in entry:
        return (), f"{_text(group) or 'entity'} {_text(entry['entity_id'])}"
    if "cpu_id" in entry:
        return (), f"CPU {_text(entry['cpu_id'])}"
    return (), ""


def _gpu_ids(value: Any, key: str) -> tuple[int, ...]:
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else [value]
    ids = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit():
            raise _Malformed(f"{key} {value!r} is not a list of GPU ids")
        ids.append(int(text))
    return tuple(ids)


def _warnings(value: Any) -> list[str]:
    """DCGM 2 prints a string; DCGM 3 and 4 a list of {"warning", "error_id", ...} (deployment: "warnings")."""
    texts = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            text = _text(item.get("warning") or item.get("warnings") or item.get("message")) or json.dumps(item)
            texts.append(f"{text} (DCGM error {item['error_id']})" if item.get("error_id") else text)
        elif item is not None and _text(item):
            texts.append(_text(item))
    return texts


def _strings(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [_text(item) for item in items if item is not None and _text(item)]


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else "" if value is None else str(value)


def run_diag(level: int, *, timeout_s: float, runner: Runner = subprocess.run) -> DiagReport:
    """Run `dcgmi diag -r LEVEL -j` and read its report.

    dcgmi exits non-zero when a test fails, and still prints the JSON: the exit status
    alone is a problem only when no results came with it, or when every test passed.
    """
    if level not in LEVELS:
        raise ValueError(f"DCGM diagnostic level {level}; expected one of {LEVELS}")
    command = ["dcgmi", "diag", "-r", str(level), "-j"]
    try:
        done = runner(command, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout_s, check=False)
    except FileNotFoundError:
        return DiagReport(
            level=level, problem="dcgmi is not installed (DCGM's datacenter-gpu-manager)", tool_missing=True
        )
    except subprocess.TimeoutExpired:
        return DiagReport(
            level=level,
            problem=f"dcgmi diag -r {level} gave no result within {timeout_s:g} s; "
            "the diagnostic may still run in nv-hostengine (dcgmi diag --abort stops it)",
        )
    except OSError as err:
        return DiagReport(level=level, problem=f"dcgmi could not be run: {err.strerror or err}")
    report = dataclasses.replace(parse_diag(done.stdout or ""), level=level, exit_status=done.returncode)
    return _with_exit_status(report, done)


def _with_exit_status(report: DiagReport, done: subprocess.CompletedProcess[str]) -> DiagReport:
    if done.returncode == 0:
        return report
    said = _first_line(done.stderr) or ("" if report.results else _first_line(done.stdout))
    exited = f"dcgmi exited with status {done.returncode}" + (f": {said}" if said else "")
    if not report.results:
        return dataclasses.replace(report, problem=exited)
    if not report.failed and not report.problem:
        return dataclasses.replace(report, problem=f"{exited}, though no test failed")
    return report


def _first_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


_SEVERITY = {"fail": Severity.FAIL, "warn": Severity.WARNING, "skip": Severity.INFO}
_VERB = {"fail": "failed", "warn": "warned", "skip": "was skipped"}


def findings(report: DiagReport, gpus_by_index: Mapping[int, str], *, test: str) -> list[Finding]:
    """A finding for each result that did not pass, and one if DCGM could not say.

    `gpus_by_index` maps DCGM's GPU ids (NVML's indices, not CUDA's) to UUIDs. A failed
    deployment check (a missing library, persistence mode) is fixed in the node's
    configuration; a failed hardware, integration or stress test sends the GPU to the
    vendor's field diagnostics.
    """
    found = [_problem_finding(report, test)] if report.problem else []
    for result in report.results:
        if result.status != "pass":
            found.extend(_result_findings(report, result, gpus_by_index, test))
    return found


def _problem_finding(report: DiagReport, test: str) -> Finding:
    return Finding(
        code=Code.DCGM_FAILED,
        severity=Severity.INCOMPLETE,
        remediation=Remediation.CHECK_CONFIG if report.tool_missing else Remediation.RERUN,
        test=test,
        message=f"DCGM diagnostic{_level(report)} could not say whether the GPUs are healthy: {report.problem}",
        details={"problem": report.problem, **_header(report)},
    )


def _result_findings(
    report: DiagReport, result: DiagResult, gpus_by_index: Mapping[int, str], test: str
) -> list[Finding]:
    subjects: list[int | None] = list(result.gpus) or [None]
    return [_result_finding(report, result, index, gpus_by_index, test) for index in subjects]


def _result_finding(
    report: DiagReport, result: DiagResult, index: int | None, gpus_by_index: Mapping[int, str], test: str
) -> Finding:
    uuid = gpus_by_index.get(index) if index is not None else None
    severity = _SEVERITY.get(result.status, Severity.INCOMPLETE)
    verb = _VERB.get(result.status, f"ended with status {result.status!r}, which this harness does not know")
    why = "; ".join(result.warnings) or ("DCGM gave no reason" if result.status == "fail" else "")
    message = f"{_who(index, uuid, result)}: DCGM diagnostic{_level(report)} {result.category} test "
    message += f"'{result.test}' {verb}" + (f": {why}" if why else "")
    return Finding(
        code=Code.DCGM_FAILED,
        severity=severity,
        remediation=_remediation(result, severity),
        gpu=uuid or NODE,
        test=test,
        message=message,
        details={
            "category": result.category,
            "test": result.test,
            "status": result.status,
            "gpu_index": index,
            "entity": result.entity,
            "warnings": list(result.warnings),
            "info": list(result.info),
            **_header(report),
        },
    )


def _who(index: int | None, uuid: str | None, result: DiagResult) -> str:
    if index is None:
        return result.entity or "node"
    return f"GPU {index} ({uuid})" if uuid else f"DCGM GPU {index} (not a GPU this run knows)"


def _remediation(result: DiagResult, severity: Severity) -> Remediation:
    if severity is Severity.INCOMPLETE:
        return Remediation.RERUN
    if severity is Severity.INFO:
        return Remediation.NONE
    if result.category == DEPLOYMENT:
        return Remediation.CHECK_CONFIG
    return Remediation.REPLACE_GPU if severity is Severity.FAIL else Remediation.NONE


def _level(report: DiagReport) -> str:
    return f" (level {report.level})" if report.level is not None else ""


def _header(report: DiagReport) -> dict[str, Any]:
    return {
        "level": report.level,
        "dcgm_version": report.version,
        "driver": report.driver,
        "exit_status": report.exit_status,
    }
