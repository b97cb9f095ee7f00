"""deploy/results-store: the optional component that sends preflight's and periodic's results to
object storage, rendered by `kubectl kustomize` into a renamed overlay (tests/data/kustomize/results-store)."""

import re
import shutil

import pytest

from harness import cli
from tests import admission

if shutil.which("kubectl") is None:
    pytest.skip("kubectl is not on PATH: deploy/ is rendered with `kubectl kustomize deploy/`", allow_module_level=True)

OVERLAY = admission.OVERLAYS / "results-store"
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def containers(render):
    """The gpu-burnin container of preflight and of periodic, by workload kind."""
    found = {}
    for doc in render:
        if doc["kind"] == "DaemonSet" and doc["metadata"]["name"].endswith("gpu-burnin-preflight"):
            found["preflight"] = doc["spec"]["template"]["spec"]["containers"][0]
        if doc["kind"] == "CronJob":
            found["periodic"] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return found


def config_maps(render):
    return {doc["metadata"]["name"]: doc.get("data", {}) for doc in render if doc["kind"] == "ConfigMap"}


@pytest.mark.parametrize("command", ["preflight", "periodic"])
def test_the_component_adds_the_url_and_the_stores_credentials_to_both_burns(command):
    render = admission.render(OVERLAY)
    container = containers(render)[command]
    assert container["args"][0] == command and container["args"][-2:] == ["--results-url", "$(RESULTS_URL)"]
    env = {e["name"]: e for e in container["env"]}
    assert {"NODE_NAME", "POD_NAMESPACE", "HOME"} <= set(env)  # the base's variables are kept
    url_ref = env["RESULTS_URL"]["valueFrom"]["configMapKeyRef"]
    maps = config_maps(render)
    assert url_ref["name"].startswith("prod-gpu-burnin-results-store-")  # the rename and the hash followed
    assert maps[url_ref["name"]][url_ref["key"]] == "s3://site-results/gpu-burnin"
    for key in SECRET_KEYS:  # each optional: a workload identity needs no Secret, and a missing one holds nothing
        ref = env[key]["valueFrom"]["secretKeyRef"]  # the Secret is made by hand (kubectl create secret): its name
        assert ref == {"name": "gpu-burnin-results-store", "key": key, "optional": True}
    # What the container runs, its $(VARS) filled as the kubelet fills them, is a valid gpu-burnin command line.
    values = {name: maps[e["valueFrom"]["configMapKeyRef"]["name"]][e["valueFrom"]["configMapKeyRef"]["key"]]
              for name, e in env.items() if "configMapKeyRef" in e.get("valueFrom", {})}  # fmt: skip
    argv = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg) for arg in container["args"]]
    parsed = cli.build_parser().parse_args(argv)
    assert parsed.gpu_results_url == "s3://site-results/gpu-burnin"


def test_without_the_component_deploy_sends_nothing_anywhere():
    for container in containers(admission.render()).values():
        assert "--results-url" not in container["args"]
        assert not {e["name"] for e in container["env"]} & {"RESULTS_URL", *SECRET_KEYS}


def test_the_component_touches_nothing_but_the_two_burns():
    base = {(d["kind"], d["metadata"]["name"]): d for d in admission.render(admission.OVERLAYS / "name-prefix")}
    added = {(d["kind"], d["metadata"]["name"]): d for d in admission.render(OVERLAY)}
    changed = {
        key for key, doc in added.items() if key in base and {**doc, "metadata": {}} != {**base[key], "metadata": {}}
    }
    assert changed == {("DaemonSet", "prod-gpu-burnin-preflight"), ("CronJob", "prod-gpu-burnin-periodic")}
    new = {key for key in added if key not in base}
    assert [kind for kind, name in new] == ["ConfigMap"]
