"""The one option surface: `gpu-burnin run`, pytest and the child's argv cannot drift apart."""

import argparse

import pytest

from harness import cli, markexpr, options, profiles, runner
from harness.baselines import default_dir
from harness.errors import ConfigError
from harness.groups import MatmulSection
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
    "results_url": ["--results-url", "s3://fleet-results/burnin"],
    "expect_gpus": ["--expect-gpus", "8"],
    "cpu_devices": ["--device", "cpu", "--cpu-devices", "3"],
    "hang_timeout": ["--hang-timeout", "30"],
    "inject": ["--inject", "matmul.corrupt:1", "--inject", "hang"],
    "nvml": ["--nvml", "sim:SCENARIO"],
    "xid_table": ["--xid-table", "XIDS"],
    "dcgm_level": ["--dcgm-level", "2"],
    "rendezvous_address": None,  # pytest only: MPI jobs run pytest itself (gpu-burnin run refuses MPI)
}


def test_every_option_has_a_sample_and_help():
    assert set(SAMPLES) == {o.name for o in options.OPTIONS}
    assert all(o.help for o in options.OPTIONS)
    assert all(o.cli == (SAMPLES[o.name] is not None) for o in options.OPTIONS)


@pytest.mark.parametrize("name", [o.name for o in options.OPTIONS if o.cli and o.pytest and o.child])
def test_an_option_reaches_the_child_as_the_user_gave_it(name, pytester, tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text("[[gpus]]\n")
    xids = tmp_path / "xids.toml"
    xids.write_text('schema_version = 1\n[xid.79]\nname = "X"\ndescription = "off the bus"\nbucket = "RESTART_BM"\n')
    replace = {"RESULTS": str(tmp_path), "sim:SCENARIO": f"sim:{scenario}", "XIDS": str(xids)}
    given = [replace.get(arg, arg) for arg in SAMPLES[name]]
    parsed = cli.build_parser().parse_args(["run", *given])
    values = options.values_from(parsed)
    child = runner.pytest_argv(values)[9:]  # after `python -m pytest -p ... --pyargs gputests`
    config = pytester.parseconfig(*child)
    again = options.values_from(config.option)
    assert again[name] == values[name] and again[name] not in (None, [])
    run_id = "20261207T000000Z-abcdef"  # not an option: the child gets it from its parent (options.Internal)
    first, second = options.resolve({**values, "run_id": run_id}), options.resolve({**again, "run_id": run_id})
    assert _comparable(first) == _comparable(second)


# One bad value per option that checks its value as it is parsed.
BAD = {
    "device": "tpu",
    "profile": "fast",
    "duration": "0.001",
    "baseline": "",
    "baseline_dir": "",
    "results": "",
    "results_url": "ftp://fleet/results",
    "expect_gpus": "0",
    "cpu_devices": "9",
    "hang_timeout": "1e-6",
    "inject": "melt",
    "nvml": "sim:",
    "xid_table": "/nonexistent",
    "dcgm_level": "5",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_is_refused_by_both_front_ends_naming_their_own_flag(name, pytester, capsys):
    option = options.BY_NAME[name]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", option.flag_for("cli"), BAD[name]])
    assert f"gpu-burnin: error: argument {option.flag_for('cli')}: " in capsys.readouterr().err
    with pytest.raises(pytest.UsageError, match=f"argument {option.flag_for('pytest')}: "):
        pytester.parseconfig(option.flag_for("pytest"), BAD[name])


@pytest.mark.parametrize("name", [o.name for o in options.OPTIONS if o.cli and o.pytest and not o.child])
def test_an_option_the_command_acts_on_itself_is_parsed_by_both_front_ends_and_kept_from_the_child(name, pytester):
    given = SAMPLES[name]
    values = options.values_from(cli.build_parser().parse_args(["run", *given]))
    assert not set(given) & set(runner.pytest_argv(values))
    from_pytest = options.values_from(pytester.parseconfig(options.BY_NAME[name].flag_for("pytest"), given[-1]).option)
    assert from_pytest[name] == values[name] == given[-1]


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


@pytest.mark.parametrize(
    ("field", "value"),
    [("hang_timeout_s", 1e-6), ("hang_timeout_s", 1.0), ("startup_timeout_s", 0.5), ("duration_s", 0.001)],
)
def test_a_profile_from_a_result_file_keeps_every_time_limit_above_its_minimum(field, value):
    """A result file is read back by the report and by preflight's reuse: its profile is checked as the options are."""
    data = profiles.quick().to_dict() | {field: value}
    with pytest.raises(ConfigError, match="is below the minimum of") as caught:
        profiles.Profile.from_dict(data)
    assert caught.value.field == f"profile.{field}"


def test_the_stall_minimum_leaves_room_for_a_waiting_workers_keepalive():
    """A worker waiting its turn reports every KEEPALIVE_S: a stall limit at or below it hangs a healthy device."""
    from harness.workers.process import KEEPALIVE_S

    assert profiles.MIN_STALL_S > KEEPALIVE_S


def test_the_profile_is_resolved_once_with_the_self_test_sizes_and_overrides():
    chosen = options.resolve({"device": "cpu", "profile": "soak", "duration": 9.0, "hang_timeout": 3.0})
    assert chosen.profile.name == "soak" and chosen.profile.section(MatmulSection).size == 128
    assert (chosen.profile.duration_s, chosen.profile.hang_timeout_s) == (9.0, 3.0)
    assert options.resolve({"device": "cpu", "profile": "soak"}).profile.duration_s == 4.0
    assert options.resolve({"device": "cuda"}).profile.section(MatmulSection).size == 8192


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


@pytest.mark.parametrize("expression", ["(matmul and memory) or (nccl and nvlnk)", "not (matmul or nvlnk)"])
def test_every_name_of_a_marker_expression_is_checked_however_and_or_stop_early(expression):
    with pytest.raises(ConfigError, match="unknown marker 'nvlnk'"):
        markexpr.check(expression, suite=True)


def test_under_pytest_the_registered_markers_count_and_any_selection_is_the_users():
    markexpr.check("not slow", suite=False, registered=["slow", "xfail"])
    markexpr.check("matmul and memory", suite=False)  # pytest selects nothing: the plugin's verdict says so
    with pytest.raises(ConfigError, match="selects no test"):
        markexpr.check("matmul and memory", suite=True)
