"""The one option surface: `gpu-burnin run`, pytest and the child's argv cannot drift apart."""

import argparse

import pytest

from harness import cli, options, runner
from harness.baselines import default_dir
from harness.errors import ConfigError
from harness.workers.faults import Fault

CPU_BASELINE = default_dir() / "cpu-selftest.toml"

# One sample per option: a new option fails this file until it has one.
SAMPLES = {
    "device": ["--device", "cpu"],
    "profile": ["--profile", "soak"],
    "duration": ["--duration", "12.5"],
    "markexpr": ["-m", "matmul and not memory"],
    "baseline": ["--baseline", str(CPU_BASELINE)],
    "baseline_dir": ["--baseline-dir", str(default_dir())],
    "results": ["--results", "RESULTS"],
    "expect_gpus": ["--expect-gpus", "8"],
    "cpu_devices": ["--device", "cpu", "--cpu-devices", "3"],
    "hang_timeout": ["--hang-timeout", "30"],
    "inject": ["--inject", "matmul.corrupt:1", "--inject", "hang"],
    "nvml": ["--nvml", "sim:SCENARIO"],
    "xid_table": ["--xid-table", "XIDS"],
    "dcgm_level": ["--dcgm-level", "2"],
    "run_id": None,  # pytest only: gpu-burnin run sets it
    "entrypoint": None,  # pytest only: set by the gpu-burnin command that starts pytest
    "rendezvous_address": None,  # pytest only: MPI jobs run pytest itself (gpu-burnin run refuses MPI)
}


def test_every_option_has_a_sample_and_help():
    assert set(SAMPLES) == {o.name for o in options.OPTIONS}
    assert all(o.help for o in options.OPTIONS)
    assert all(o.cli == (SAMPLES[o.name] is not None) for o in options.OPTIONS)


@pytest.mark.parametrize("name", [o.name for o in options.OPTIONS if o.cli and o.pytest])
def test_an_option_reaches_the_child_as_the_user_gave_it(name, pytester, tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text("[[gpus]]\n")
    replace = {"RESULTS": str(tmp_path), "sim:SCENARIO": f"sim:{scenario}", "XIDS": str(tmp_path / "xids.toml")}
    given = [replace.get(arg, arg) for arg in SAMPLES[name]]
    parsed = cli.build_parser().parse_args(["run", *given])
    values = options.values_from(parsed)
    child = runner.pytest_argv(values)[9:]  # after `python -m pytest -p ... --pyargs gputests`
    config = pytester.parseconfig(*child)
    again = options.values_from(config.option)
    assert again[name] == values[name] and again[name] not in (None, [])
    first, second = options.resolve(values), options.resolve({**again, "run_id": values["run_id"]})
    assert _comparable(first) == _comparable(second)


def test_the_flags_follow_one_rule():
    duration = options.BY_NAME["duration"]
    assert (duration.flag_for("cli"), duration.flag_for("pytest")) == ("--duration", "--gpu-duration")
    assert options.BY_NAME["markexpr"].flag_for("pytest") == "-m"


def test_values_are_checked_as_they_are_parsed():
    for bad in ("0", "-1", "inf", "nan", "1e308", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            options.seconds(bad)
    assert options.seconds("0.5") == 0.5 and options.seconds(str(options.MAX_SECONDS)) == options.MAX_SECONDS
    with pytest.raises(argparse.ArgumentTypeError, match="unknown fault 'melt'"):
        options.fault("melt")
    assert options.fault("nccl.hang:3") == Fault(kind="hang", device=3, group="nccl")


def test_the_profile_is_resolved_once_with_the_self_test_sizes_and_overrides():
    chosen = options.resolve({"device": "cpu", "profile": "soak", "duration": 9.0, "hang_timeout": 3.0})
    assert chosen.profile.name == "soak" and chosen.profile.matmul.size == 128
    assert (chosen.profile.duration_s, chosen.profile.hang_timeout_s) == (9.0, 3.0)
    assert options.resolve({"device": "cpu", "profile": "soak"}).profile.duration_s == 4.0
    assert options.resolve({"device": "cuda"}).profile.matmul.size == 8192


@pytest.mark.parametrize(
    ("values", "front", "message"),
    [
        ({"baseline": CPU_BASELINE, "baseline_dir": default_dir()}, "cli", "--baseline: give a baseline file or"),
        ({"device": "cpu", "expect_gpus": 8}, "pytest", "--gpu-expect-gpus: counts GPUs"),
    ],
)
def test_errors_name_the_flag_of_the_front_end_in_use(values, front, message):
    with pytest.raises(ConfigError) as caught:
        options.resolve(values)
    assert options.explain(caught.value, front).startswith(message)


def _comparable(chosen: options.RunOptions) -> tuple:
    return (
        chosen.device,
        chosen.profile,
        chosen.baselines.source,
        chosen.results_dir,
        chosen.expect_gpus,
        chosen.faults,
        chosen.selection,
    )
