"""Every test group is declared once (harness/groups.py) and wired everywhere it must be.

Like tests/test_options.py for the run options: a group without its pytest test, its parent-side
module, its metrics in every shipped baseline or its step in bench/gpu_check.sh fails here, and a
toy group shows that one entry and its files are all a new group needs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import shutil
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

from harness import groups, markexpr, profiles
from harness.errors import ConfigError
from harness.groups import GROUPS, Group, Section
from harness.records import Direction

REPO = Path(__file__).resolve().parent.parent
STEP = re.compile(r"""^burn\s+(\S+)\s.*?\s-m\s+(?:"([^"]*)"|(\S+))""", re.MULTILINE)
OPERATORS = {"and", "or", "not"}


def gpu_check_selects(script: str) -> set[str]:
    """The markers the `burn` steps of bench/gpu_check.sh select with -m."""
    found: set[str] = set()
    for step in STEP.finditer(script):
        expression = step.group(2) or step.group(3)
        found |= set(re.findall(r"[A-Za-z_]\w*", expression)) - OPERATORS
    return found


def problems(entries: Iterable[Group], root: Path) -> list[str]:
    """What each group lacks in the tree at `root`, one line each."""
    shipped = {p.name: tomllib.loads(p.read_text()) for p in sorted((root / "baselines").glob("*.toml"))}
    selected = gpu_check_selects((root / "bench" / "gpu_check.sh").read_text())
    found = []
    for group in entries:
        name = group.name
        test = root / "gputests" / f"test_{name}.py"
        if not test.is_file():
            found.append(f"{name}: no gputests/test_{name}.py")
        elif not re.search(rf"^pytestmark\s*=\s*pytest\.mark\.{name}\b", test.read_text(), re.MULTILINE):
            found.append(f"{name}: gputests/test_{name}.py does not mark its tests pytest.mark.{name}")
        if group.module and not (root / f"{group.module.replace('.', '/')}.py").is_file():
            found.append(f"{group.name}: no module {group.module}")
        for file, data in shipped.items():
            if group.between_gpus and data.get("match", {}).get("gpus") == 1:
                continue  # a lone GPU has nothing to measure between GPUs
            names = data.get("metrics", {})
            for pattern in group.metrics:
                if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                    found.append(f"{group.name}: baselines/{file} has no metric {pattern}")
        if group.gpu_check and group.name not in selected:
            found.append(f"{group.name}: no step of bench/gpu_check.sh selects it (burn ... -m {group.name})")
    return found


def test_every_group_is_wired_everywhere():
    assert problems(GROUPS.values(), REPO) == []


def test_every_group_test_module_is_a_group():
    """The other way round: a gputests/test_*.py that no entry declares would never be selected by -m."""
    declared = {f"test_{name}.py" for name in GROUPS}
    assert {p.name for p in (REPO / "gputests").glob("test_*.py")} == declared


def test_the_gpu_check_steps_are_read_as_written():
    script = 'burn memory 58 150 -m "health or memory" --duration 6\nburn pcie 24 60 -m pcie --duration 4\n'
    assert gpu_check_selects(script) == {"health", "memory", "pcie"}
    assert gpu_check_selects((REPO / "bench" / "gpu_check.sh").read_text()) >= {"matmul", "memory", "pcie", "nccl"}


# A toy group: its entry, its section, and the files it needs.


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToySection(Section):
    mib: int
    sizes: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if self.mib < 1:
            raise ConfigError("mib must be at least 1", field="profile.toy")


TOY = Group(
    name="toy",
    help="a toy group of the registry's own tests",
    stress=True,
    metrics={"toy.*.gbps": Direction.HIGHER, "toy.errors": Direction.LOWER},
    gpu=ToySection(mib=512, sizes=(8, 64)),
    cpu=ToySection(mib=2),
    module="gputests.work.toy_run",
)
TOY_METRICS = """
[metrics."toy.copy.gbps"]
unit = "GB/s"
direction = "higher"
[metrics."toy.errors"]
unit = "errors"
direction = "lower"
"""


def toy_tree(tmp_path: Path) -> Path:
    """A copy of the shipped baselines and gpu_check.sh, with the toy group's three files, metrics and step."""
    root = tmp_path / "repo"
    (root / "gputests" / "work").mkdir(parents=True)
    (root / "bench").mkdir()
    shutil.copytree(REPO / "baselines", root / "baselines", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for path in (root / "baselines").glob("*.toml"):
        path.write_text(path.read_text() + TOY_METRICS)
    script = (REPO / "bench" / "gpu_check.sh").read_text()
    (root / "bench" / "gpu_check.sh").write_text(script + 'burn toy 10 30 -m "toy" --duration 1\n')
    (root / "gputests" / "work" / "toy.py").write_text("def worker(context, job): ...\n")
    (root / "gputests" / "work" / "toy_run.py").write_text("from gputests.work import toy\n")
    (root / "gputests" / "test_toy.py").write_text(
        "import pytest\n\npytestmark = pytest.mark.toy\n\n\ndef test_toy(burnin): ...\n"
    )
    return root


def test_a_toy_group_with_its_entry_and_files_lacks_nothing(tmp_path):
    assert problems([TOY], toy_tree(tmp_path)) == []


def _no_test(root: Path) -> None:
    (root / "gputests" / "test_toy.py").unlink()


def _unmarked_test(root: Path) -> None:
    (root / "gputests" / "test_toy.py").write_text("def test_toy(burnin): ...\n")


def _no_run_module(root: Path) -> None:
    (root / "gputests" / "work" / "toy_run.py").unlink()


def _no_metric_in_one_baseline(root: Path) -> None:
    path = root / "baselines" / "h200-141gb.toml"
    path.write_text(path.read_text().replace(TOY_METRICS, ""))


def _one_family_missing(root: Path) -> None:
    path = root / "baselines" / "cpu-selftest.toml"
    path.write_text(path.read_text().replace('"toy.errors"', '"toy.copy2.gbps"'))


def _no_gpu_check_step(root: Path) -> None:
    path = root / "bench" / "gpu_check.sh"
    path.write_text(path.read_text().replace('burn toy 10 30 -m "toy" --duration 1\n', ""))


@pytest.mark.parametrize(
    ("leave_out", "expected"),
    [
        (_no_test, ["toy: no gputests/test_toy.py"]),
        (_unmarked_test, ["toy: gputests/test_toy.py does not mark its tests pytest.mark.toy"]),
        (_no_run_module, ["toy: no module gputests.work.toy_run"]),
        (
            _no_metric_in_one_baseline,
            [
                "toy: baselines/h200-141gb.toml has no metric toy.*.gbps",
                "toy: baselines/h200-141gb.toml has no metric toy.errors",
            ],
        ),
        (_one_family_missing, ["toy: baselines/cpu-selftest.toml has no metric toy.errors"]),
        (_no_gpu_check_step, ["toy: no step of bench/gpu_check.sh selects it (burn ... -m toy)"]),
    ],
)
def test_each_thing_a_toy_group_leaves_out_is_caught(tmp_path, leave_out, expected):
    root = toy_tree(tmp_path)
    leave_out(root)
    assert problems([TOY], root) == expected


def test_a_group_between_gpus_is_not_asked_of_the_1gpu_baselines(tmp_path):
    root = toy_tree(tmp_path)
    for path in (root / "baselines").glob("*-1gpu.toml"):
        path.write_text(path.read_text().replace(TOY_METRICS, ""))
    assert problems([dataclasses.replace(TOY, between_gpus=True)], root) == []
    assert problems([TOY], root) == [
        "toy: baselines/h100-sxm-80gb-1gpu.toml has no metric toy.*.gbps",
        "toy: baselines/h100-sxm-80gb-1gpu.toml has no metric toy.errors",
        "toy: baselines/h200-141gb-1gpu.toml has no metric toy.*.gbps",
        "toy: baselines/h200-141gb-1gpu.toml has no metric toy.errors",
    ]


def test_a_group_that_cannot_run_on_the_lent_gpu_needs_no_step(tmp_path):
    root = toy_tree(tmp_path)
    _no_gpu_check_step(root)
    assert problems([dataclasses.replace(TOY, gpu_check=False)], root) == []


@pytest.fixture
def toy(monkeypatch):
    """The toy group registered, as its one entry in harness.groups would register it."""
    monkeypatch.setitem(GROUPS, TOY.name, TOY)
    return TOY


def test_one_entry_makes_the_profile_section_the_directions_and_the_stress(toy):
    quick = profiles.quick()
    assert quick.section(ToySection) == ToySection(mib=512, sizes=(8, 64))
    assert quick.for_cpu().section(ToySection) == ToySection(mib=2)
    written = quick.for_cpu().to_dict()
    assert list(written)[-1] == "toy" and written["toy"] == {"mib": 2, "sizes": (1,)}
    again = profiles.Profile.from_dict({**written, "toy": {"mib": 3, "sizes": [4, 5]}})
    assert again.section(ToySection) == ToySection(mib=3, sizes=(4, 5))
    assert quick.with_section(ToySection(mib=7)).section(ToySection).mib == 7
    assert groups.direction_of("toy.copy.gbps") is Direction.HIGHER
    assert groups.direction_of("toy.errors") is Direction.LOWER
    assert "toy" in groups.stressing()
    markexpr.check("toy and not matmul", suite=True)


def test_one_entry_makes_the_plugins_marker(toy, pytester):
    config = pytester.parseconfig()
    config._do_configure()
    try:
        assert f"toy: {TOY.help}" in config.getini("markers")
    finally:
        config._ensure_unconfigure()


def test_a_profile_section_from_a_result_file_is_checked():
    data = profiles.quick().to_dict()
    for bad in ({"size": 0, "ring": 2}, {"size": 8, "ring": 2, "spare": 1}, {"size": 8}, [8, 2]):
        with pytest.raises(ConfigError) as caught:
            profiles.Profile.from_dict({**data, "matmul": bad})
        assert caught.value.field in ("profile", "profile.matmul")


def test_a_result_file_from_before_a_group_gets_its_gpu_section():
    data = profiles.quick().to_dict()
    del data["nccl"]
    assert profiles.Profile.from_dict(data) == profiles.quick()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Toy"}, "lower-case letters"),
        ({"metrics": {"matmul.x.gbps": Direction.HIGHER}}, "must start with toy."),
        ({"cpu": None}, "give gpu and cpu sections of one Section type"),
        ({"cpu": groups.MatmulSection(size=1, ring=1)}, "give gpu and cpu sections of one Section type"),
    ],
)
def test_a_malformed_entry_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TOY, **change)


def test_a_group_or_a_section_is_declared_once():
    with pytest.raises(ValueError, match="declared twice"):
        groups._registry(TOY, TOY)
    with pytest.raises(ValueError, match="belongs to another group"):
        groups._registry(TOY, dataclasses.replace(TOY, name="toy2", metrics={}))


def test_a_profile_refuses_a_section_of_the_wrong_type_or_no_group():
    with pytest.raises(TypeError, match="must be a MatmulSection"):
        profiles.Profile(**{**_top(), "sections": {"matmul": groups.PcieSection(mib=1)}})
    with pytest.raises(TypeError, match="no test group has a profile section"):
        profiles.Profile(**{**_top(), "sections": {"toy": ToySection(mib=1)}})
    with pytest.raises(KeyError, match="no group's section"):
        profiles.quick().section(ToySection)


def _top() -> dict:
    return {"name": "t", "duration_s": 1.0, "warmup_s": 0.0, "hang_timeout_s": 5.0, "startup_timeout_s": 20.0}
