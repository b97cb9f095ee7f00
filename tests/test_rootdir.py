"""`pytest --gpu-results DIR`: DIR is the plugin's value, never a test path that moves pytest's rootdir."""

import pytest

from gputests import rootdir

SUITE = "def test_where(pytestconfig):\n    assert str(pytestconfig.rootpath) == {root!r}\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project whose configuration points at suite/; stray/ beside it must not be collected."""
    pytester.makeini("[pytest]\ntestpaths = suite\n")
    pytester.mkdir("suite")
    (pytester.path / "suite" / "test_suite.py").write_text(SUITE.format(root=str(pytester.path)))
    pytester.mkdir("stray")
    (pytester.path / "stray" / "test_stray.py").write_text("def test_stray():\n    raise AssertionError('collected')\n")
    return pytester


@pytest.mark.parametrize("form", ["separate", "with ="])
def test_an_existing_results_directory_outside_the_project_leaves_rootdir_and_testpaths_alone(project, tmp_path, form):
    results = tmp_path / "results"  # outside the project, and already there (a second run into it)
    results.mkdir()
    flags = ["--gpu-results", str(results)] if form == "separate" else [f"--gpu-results={results}"]
    outcome = project.runpytest("-p", "no:cacheprovider", *flags, "--gpu-device", "cpu")
    outcome.stdout.fnmatch_lines([f"rootdir: {project.path}", "configfile: tox.ini"])
    assert "test_stray" not in outcome.stdout.str()
    outcome.assert_outcomes(passed=1)  # suite/ only, and its rootdir is the project's


def test_values_of_gpu_flags_that_exist_as_paths_are_the_ones_put_right(tmp_path):
    there = tmp_path / "b.toml"
    there.write_text("")
    args = ["--gpu-results", str(tmp_path), "--gpu-baseline", str(there), "--gpu-duration", "5", "-m", "memory"]
    assert rootdir.separated(args) == [str(tmp_path), str(there)]
    assert rootdir.separated([f"--gpu-results={tmp_path}", str(tmp_path)]) == []  # a real test path stays one


def test_a_configuration_whose_early_settings_were_missed_is_a_usage_error_that_names_the_fix(pytester, tmp_path):
    pytester.makeini("[pytest]\ntestpaths = suite\naddopts = -ra\n")
    results = tmp_path / "results"
    results.mkdir()
    outcome = pytester.runpytest("-p", "no:cacheprovider", "--gpu-results", str(results), "--gpu-device", "cpu")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines([f"*sets addopts: give the flag its value with '=' (*--gpu-results={results})"])
