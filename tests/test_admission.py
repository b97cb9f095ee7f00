"""deploy/admission/: what each component's account may write, run with cel-python through
tests/admission.py as the API server would run it, on deploy/ and on overlays that rename
everything (tests/data/kustomize/): the confinement must hold whatever the accounts are called.

Each component writes exactly what docs/kubernetes.md ("Who may do what") lists and nothing
else: the allowed writes below are the ones the code makes; every probe after them is one a
stolen token would try."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tests import admission
from tests.admission import AGENTS, COMPONENTS, RENDERS, Manifest, identity, token
from tests.node_states import (
    CORDONED,
    OTHER_NODE,
    REMEDIATOR_NODE,
    Edit,
    add_taint,
    admin_cordoned,
    annotate,
    bare,
    both,
    changed,
    condition,
    cordon,
    event,
    failing,
    home_node,
    in_preflight,
    in_service,
    labels,
    last_result,
    preflight_fails,
    preflight_passes,
    release,
    remove_taint,
    requests_take_out,
    sets,
    take_out,
    unhealthy,
)

if shutil.which("kubectl") is None:
    pytest.skip("kubectl is not on PATH: deploy/ is rendered with `kubectl kustomize`", allow_module_level=True)


@pytest.fixture(scope="module", params=list(RENDERS), ids=list(RENDERS))
def docs(request) -> list[Manifest]:
    return admission.render(RENDERS[request.param])


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return admission.render()


def update(
    docs: list[Manifest],
    component: str,
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    subresource: str = "",
    node: str | None = "",
) -> tuple[str, str] | None:
    """A PATCH of a Node by `component`'s pod, whose token names `node` ('' for its usual node)."""
    who = identity(docs, component)
    extra = token(home_node(component) if node == "" else node)
    return admission.admit(docs, who.user, who.groups, extra, "UPDATE", "nodes", subresource, old, new, "")


def allow(
    component: str,
    node: Callable[[], dict[str, Any]],
    edit: Edit,
    what: str,
    *,
    status: bool = False,
) -> Any:
    return pytest.param(component, node, edit, "status" if status else "", id=f"{component}: {what}")


def preflight_pending_untainted() -> dict[str, Any]:
    return changed(in_preflight(), remove_taint("gpu-burnin/preflight"))


ALLOWED = [
    # preflight: release on a pass (one write, or the taint first and the label last), hold on a failure.
    allow("preflight", in_preflight, preflight_passes, "a pass: its taint and label go, last-result"),
    allow("preflight", in_preflight, remove_taint("gpu-burnin/preflight"), "a pass in two writes: the taint first"),
    allow("preflight", preflight_pending_untainted, labels(preflight=None), "a pass in two writes: the label last"),
    allow("preflight", in_preflight, sets("GPUBurnIn", "True", "Passed"), "a pass: GPUBurnIn=True", status=True),
    allow("preflight", in_preflight, preflight_fails("failed"), "a failure: label failed, the taint kept"),
    allow("preflight", in_preflight, preflight_fails("incomplete"), "an incomplete run: label incomplete"),
    allow("preflight", preflight_pending_untainted, preflight_fails("failed"), "a failure: the taint back, no value"),
    allow("preflight", in_preflight, sets("GPUBurnIn", "False", "DATA_MISMATCH"), "GPUBurnIn=False", status=True),
    allow("preflight", bare, preflight_fails("incomplete"), "a node with no labels, annotations or taints"),
    # periodic: a failing request with its severity, its condition, its bookkeeping.
    allow(
        "periodic",
        in_service,
        requests_take_out("periodic", "fail", **{"gpu-burnin/last-result": last_result("fail")}),
        "a failure: health=failing, severity=fail, requested, last-result",
    ),
    allow("periodic", in_service, requests_take_out("periodic", "critical"), "a critical failure"),
    allow("periodic", in_service, sets("GPUBurnIn", "False", "LOW_THROUGHPUT"), "its condition", status=True),
    allow("periodic", failing, labels(severity="critical"), "severity raised from fail to critical"),
    allow("periodic", in_service, annotate("gpu-burnin/incomplete-streak", "2"), "an incomplete run counted"),
    allow(
        "periodic",
        lambda: changed(in_service(), annotate("gpu-burnin/incomplete-streak", "2")),
        both(annotate("gpu-burnin/incomplete-streak", None), annotate("gpu-burnin/last-result", last_result("pass"))),
        "a pass: the streak reset, last-result",
    ),
    allow("periodic", unhealthy, annotate("gpu-burnin/last-result", last_result("fail")), "a node already out"),
    allow("periodic", in_service, annotate("gpu-burnin/last-result", "x" * 4096), "an annotation of 4096 bytes"),
    # watch: its condition, the failing request, the freshness label, its bookkeeping.
    allow("watch", in_service, sets("GPUBurnInWatch", "False", "XID"), "its condition", status=True),
    allow(
        "watch",
        in_service,
        requests_take_out("watch", "critical", **{"gpu-burnin/watch": '{"pending":{"XID":3}}'}),
        "a critical finding: health=failing, severity=critical, requested, its annotation",
    ),
    allow("watch", in_service, labels(fresh="true"), "the freshness label set"),
    allow("watch", lambda: changed(in_service(), labels(fresh="true")), labels(fresh=None), "the freshness label gone"),
    allow("watch", in_preflight, labels(fresh="true"), "the freshness label on a node in preflight"),
    allow("watch", in_preflight, annotate("gpu-burnin/watch", "é" * 2048), "4096 bytes of two-byte characters"),
    allow("watch", unhealthy, labels(severity="critical"), "severity raised on a node already out"),
    # remediator: the take-out, on any node, from a node agent's request.
    allow("remediator", failing, take_out, "the take-out: unhealthy, its taint, the cordon, cordoned"),
    allow("remediator", admin_cordoned, take_out, "the take-out of a node someone else cordoned"),
    allow("remediator", failing, sets("GPUBurnInRemediation", "False", "Braked"), "braked", status=True),
    allow("remediator", unhealthy, sets("GPUBurnInRemediation", "True", "Drained"), "drained", status=True),
]


@pytest.mark.parametrize(("component", "node", "edit", "subresource"), ALLOWED)
def test_each_component_may_write_what_it_does(docs, component, node, edit, subresource):
    old = node()
    assert update(docs, component, old, changed(old, edit), subresource=subresource) is None


# -- what a stolen token would try: denied ------------------------------------------------------


TAINT = "taint"
CORDON = "spec.unschedulable"
LIFT = "lift a cordon"
HEALTH = "gpu-burnin/health"
SEVERITY = "gpu-burnin/severity"
OWN_NODE = "only the node its pod runs on"
LABELS = "every other label stays"
ANNOTATIONS = "every other annotation stays"
STATUS = "no field of a node's status"
CONDITIONS = "the others stay as they are"
SPEC = "only spec.taints and spec.unschedulable"
SIZE = "at most 4096 bytes"
BIG = "x" * 200_000


def deny(
    component: str,
    node: Callable[[], dict[str, Any]],
    edit: Edit,
    says: str,
    what: str,
    *,
    status: bool = False,
    claim: str | None = "",
) -> Any:
    """A probe: `component` makes `edit` to `node` (through nodes/status if `status`), with a token
    naming `claim` ('' its own node, None none); the denial's message holds `says`."""
    return pytest.param(component, node, edit, "status" if status else "", claim, says, id=f"{component}: {what}")


def new_condition(n: dict[str, Any]) -> None:
    n["status"]["conditions"].append(condition("Other", "True", "x"))


def owner_reference(n: dict[str, Any]) -> None:
    n["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "0"}]


def finalizer(n: dict[str, Any]) -> None:
    n["metadata"]["finalizers"] = ["example.com/hold"]


def image(n: dict[str, Any]) -> None:
    n["status"]["images"].append({"names": ["x"], "sizeBytes": 1 << 40})


def no_gpus(n: dict[str, Any]) -> None:
    n["status"]["allocatable"]["nvidia.com/gpu"] = "0"


def not_ready(n: dict[str, Any]) -> None:
    n["status"]["conditions"][1]["status"] = "False"


def other_team(n: dict[str, Any]) -> None:
    n["metadata"]["labels"]["team.example.com/pool"] = "inference"


def nothing(n: dict[str, Any]) -> None:
    """A write that changes nothing: only who makes it, and where, can be wrong."""


DENIED = [
    # Taints: NoSchedule only, and only the component's own key.
    *[deny(c, in_service, add_taint("gpu-burnin/x", "NoExecute"), TAINT, "a NoExecute taint") for c in COMPONENTS],
    deny("preflight", in_preflight, add_taint("gpu-burnin/preflight", "NoExecute"), TAINT, "its key, NoExecute"),
    deny("remediator", failing, add_taint("gpu-burnin/unhealthy", "NoExecute"), TAINT, "its key, NoExecute"),
    deny("remediator", failing, add_taint("gpu-burnin/unhealthy", "PreferNoSchedule"), TAINT, "PreferNoSchedule"),
    *[deny(c, in_service, add_taint("gpu-burnin/unhealthy"), TAINT, "the unhealthy taint") for c in AGENTS],
    *[deny(c, in_service, add_taint("gpu-burnin/other"), TAINT, "another gpu-burnin taint") for c in COMPONENTS],
    deny("remediator", failing, add_taint("gpu-burnin/preflight"), TAINT, "the preflight taint"),
    deny("preflight", in_service, add_taint("gpu-burnin/preflight", value="x"), "with no value", "a value"),
    # Another owner's taint: neither added nor removed nor reordered.
    *[deny(c, in_preflight, remove_taint("nvidia.com/gpu"), TAINT, "nvidia.com/gpu removed") for c in COMPONENTS],
    *[deny(c, in_service, add_taint("nvidia.com/gpu", value="x"), TAINT, "nvidia.com/gpu added") for c in COMPONENTS],
    deny("preflight", in_preflight, lambda n: n["spec"]["taints"].reverse(), TAINT, "taints reordered"),
    # The cordon: nobody lifts one; no node agent sets one.
    *[deny(c, admin_cordoned, cordon(False), LIFT, "uncordon") for c in COMPONENTS],
    *[deny(c, in_service, cordon(True), CORDON, "cordon") for c in AGENTS],
    # Releasing a node: no agent removes or lowers a health mark.
    *[deny(c, unhealthy, remove_taint("gpu-burnin/unhealthy"), TAINT, "the unhealthy taint removed") for c in AGENTS],
    deny("watch", unhealthy, labels(health=None), HEALTH, "the unhealthy label removed"),
    deny("periodic", unhealthy, labels(health="failing"), HEALTH, "unhealthy lowered to failing"),
    deny("watch", failing, labels(health=None), HEALTH, "its failing request withdrawn"),
    deny("watch", in_service, labels(health="unhealthy"), HEALTH, "unhealthy set directly"),
    deny("periodic", lambda: failing("critical"), labels(severity="fail"), SEVERITY, "severity lowered"),
    deny("watch", failing, labels(severity=None), SEVERITY, "severity removed"),
    deny("watch", in_service, labels(severity="low"), SEVERITY, "a severity that is none"),
    deny(
        "periodic",
        unhealthy,
        both(remove_taint("gpu-burnin/unhealthy"), labels(health=None, severity=None), cordon(False)),
        "",
        "a whole release",
    ),
    deny("watch", in_preflight, remove_taint("gpu-burnin/preflight"), TAINT, "the preflight taint removed"),
    deny("watch", in_preflight, labels(preflight=None), LABELS, "the preflight label removed"),
    deny("watch", in_preflight, sets("GPUBurnIn", "True", "Passed"), CONDITIONS, "GPUBurnIn=True", status=True),
    deny(
        "periodic", in_service, sets("GPUBurnInWatch", "True", "OK"), CONDITIONS, "the watch's condition", status=True
    ),
    deny("preflight", failing, labels(health=None), LABELS, "the health label"),
    deny("preflight", in_service, labels(preflight="pending"), "failed or incomplete", "pending"),
    deny("watch", in_service, labels(fresh="false"), "fresh", "fresh=false"),
    deny("watch", in_service, labels(fresh="True"), "fresh", "fresh=True, not true"),
    deny("watch", in_service, labels(fresh=""), "fresh", "fresh with no value"),
    deny("watch", in_service, labels(fresh="true"), OWN_NODE, "fresh on another node", claim=OTHER_NODE),
    deny(
        "watch",
        lambda: changed(in_service(), labels(fresh="true")),
        labels(fresh=None),
        OWN_NODE,
        "fresh removed from another node",
        claim=OTHER_NODE,
    ),
    deny("watch", in_service, both(labels(fresh="true"), other_team), LABELS, "fresh and another label with it"),
    deny("periodic", in_service, labels(fresh="true"), LABELS, "the freshness label"),
    deny("preflight", in_preflight, labels(fresh="true"), LABELS, "the freshness label"),
    deny("remediator", failing, labels(fresh="true"), LABELS, "the freshness label"),
    deny(
        "periodic",
        lambda: changed(in_service(), labels(fresh="true")),
        labels(fresh=None),
        LABELS,
        "the freshness label removed",
    ),
    # The remediator: the take-out, from a request, never anything else.
    deny("remediator", in_preflight, remove_taint("gpu-burnin/preflight"), TAINT, "the preflight taint removed"),
    deny("remediator", in_preflight, labels(preflight=None), LABELS, "the preflight label removed"),
    deny("remediator", unhealthy, labels(health="failing"), HEALTH, "unhealthy lowered to failing"),
    deny("remediator", unhealthy, labels(health=None), HEALTH, "the health label removed"),
    deny("remediator", in_service, take_out, HEALTH, "a take-out nobody asked for"),
    deny("remediator", in_service, cordon(True), "only a node labelled", "a cordon nobody asked for"),
    deny("remediator", bare, add_taint("gpu-burnin/unhealthy"), "only a node labelled", "a taint nobody asked for"),
    deny(
        "remediator", in_service, annotate("gpu-burnin/cordoned", CORDONED), "only a node labelled", "cordoned, unasked"
    ),
    deny("remediator", unhealthy, remove_taint("gpu-burnin/unhealthy"), "never removes the taint", "its taint removed"),
    deny("remediator", unhealthy, annotate("gpu-burnin/cordoned", None), "never removes the", "cordoned removed"),
    deny("remediator", failing, labels(severity="critical"), LABELS, "the severity"),
    deny("remediator", failing, annotate("gpu-burnin/requested", None), ANNOTATIONS, "the request's annotation"),
    deny("remediator", failing, sets("GPUBurnIn", "False", "Failed"), CONDITIONS, "GPUBurnIn", status=True),
    # The garbage collector and object lifetime.
    *[deny(c, in_service, owner_reference, "ownerReferences", "an owner reference added") for c in COMPONENTS],
    *[deny(c, in_service, finalizer, "finalizers", "a finalizer added") for c in COMPONENTS],
    # Status: only the component's own condition.
    *[deny(c, in_service, image, STATUS, "status.images", status=True) for c in COMPONENTS],
    *[deny(c, in_service, no_gpus, STATUS, "allocatable", status=True) for c in ("preflight", "remediator")],
    deny(
        "watch",
        in_service,
        lambda n: n["status"]["addresses"][0].update(address="192.0.2.1"),
        STATUS,
        "the kubelet's address",
        status=True,
    ),
    deny(
        "periodic",
        in_service,
        lambda n: n["status"].update(phase="Running"),
        STATUS,
        "a status field added",
        status=True,
    ),
    deny("watch", in_service, lambda n: n["status"].pop("nodeInfo"), STATUS, "a status field removed", status=True),
    *[deny(c, in_service, not_ready, CONDITIONS, "Ready changed", status=True) for c in COMPONENTS],
    deny("periodic", in_service, new_condition, CONDITIONS, "a condition added", status=True),
    # Spec: only taints and the cordon.
    deny("watch", in_service, lambda n: n["spec"].update(providerID="aws:///x/i-1"), SPEC, "providerID"),
    deny("remediator", failing, lambda n: n["spec"].update(podCIDR="10.244.8.0/24"), SPEC, "podCIDR"),
    deny("preflight", in_preflight, lambda n: n["spec"].pop("podCIDRs"), SPEC, "podCIDRs removed"),
    deny("periodic", in_service, lambda n: n["spec"].update(externalID="i-0123"), SPEC, "externalID added"),
    # Annotations: only its own, each at most 4 KiB.
    deny("preflight", in_preflight, annotate("gpu-burnin/last-result", BIG), SIZE, "a 200 KB annotation"),
    deny("periodic", in_service, annotate("gpu-burnin/requested", BIG), SIZE, "a 200 KB annotation"),
    deny("watch", in_service, annotate("gpu-burnin/watch", "x" * 4097), SIZE, "a 4097-byte annotation"),
    deny("watch", in_service, annotate("gpu-burnin/watch", "é" * 2049), SIZE, "4098 bytes in 2049 characters"),
    deny("remediator", failing, annotate("gpu-burnin/cordoned", BIG), SIZE, "a 200 KB annotation"),
    deny("watch", in_service, annotate("gpu-burnin/last-result", last_result("fail")), ANNOTATIONS, "last-result"),
    deny("preflight", in_preflight, annotate("gpu-burnin/pending-since", "x"), ANNOTATIONS, "pending-since"),
    deny("watch", in_service, annotate("node.alpha.kubernetes.io/ttl", "30"), ANNOTATIONS, "another annotation"),
    deny("periodic", failing, annotate("gpu-burnin/cordoned", CORDONED), ANNOTATIONS, "the remediator's annotation"),
    # Another team's labels.
    *[deny(c, in_service, other_team, LABELS, "another team's label changed") for c in COMPONENTS],
    deny("watch", in_service, lambda n: n["metadata"]["labels"].pop("nvidia.com/gpu.present"), LABELS, "a label gone"),
    # Its own node only, by the token's claim.
    *[deny(c, in_service, nothing, OWN_NODE, "another node", claim=OTHER_NODE) for c in AGENTS],
    *[deny(c, in_service, nothing, OWN_NODE, "a token with no node claim", claim=None) for c in AGENTS],
    deny("preflight", in_preflight, preflight_passes, OWN_NODE, "another node's release", claim=OTHER_NODE),
]


@pytest.mark.parametrize(("component", "node", "edit", "subresource", "claim", "says"), DENIED)
def test_no_component_may_write_more(docs, component, node, edit, subresource, claim, says):
    old = node()
    denied = update(docs, component, old, changed(old, edit), subresource=subresource, node=claim)
    assert denied is not None, "admitted"
    policy, message = denied
    assert policy.endswith(f"gpu-burnin-{component}"), denied
    assert says in message, denied


# -- who the policies judge ---------------------------------------------------------------------


CLUSTER_ADMIN = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "cluster-admin"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "oncall"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "oncall"}],
    },
]
READ_EVERYTHING = [
    # A common shape for scanners and inventory tools: read every resource of every group (so
    # also gpu-burnin.dev/nodemarks, with the standard verbs), and here label nodes too.
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "inventory"},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "inventory"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "inventory"},
        "subjects": [{"kind": "ServiceAccount", "name": "inventory", "namespace": "tools"}],
    },
]


@pytest.fixture(scope="module")
def with_admins(base) -> list[Manifest]:
    return [*base, *CLUSTER_ADMIN, *READ_EVERYTHING]


@pytest.mark.parametrize(
    ("user", "groups"),
    [
        ("alice@example.com", ["oncall", "system:authenticated"]),  # cluster-admin, through a group
        ("kubernetes-admin", ["system:masters", "system:authenticated"]),
        ("system:node:gpu-node-7", ["system:nodes", "system:authenticated"]),
        ("system:serviceaccount:kube-system:node-controller", admission.service_account_groups("kube-system")),
        ("system:serviceaccount:gpu-burnin:default", admission.service_account_groups("gpu-burnin")),
        ("system:serviceaccount:tools:inventory", admission.service_account_groups("tools")),
    ],
    ids=[
        "cluster-admin",
        "system:masters",
        "the kubelet",
        "a controller",
        "the namespace's default account",
        "a tool that reads everything, watch included",
    ],
)
def test_the_policies_leave_people_and_the_cluster_alone(with_admins, user, groups):
    old = unhealthy()
    new = changed(old, release)
    assert admission.admit(with_admins, user, groups, {}, "UPDATE", "nodes", "", old, new, "") is None
    assert (
        admission.admit(
            with_admins,
            user,
            groups,
            {},
            "CREATE",
            "events",
            "",
            None,
            event(OTHER_NODE, namespace="default"),
            "default",
        )
        is None
    )


def test_a_remediator_bound_to_cluster_admin_too_is_an_administrator(base):
    """Holding every verb is what an administrator looks like; the policies step aside, as for one."""
    who = identity(base, "remediator")
    binding = copy.deepcopy(CLUSTER_ADMIN[1])
    binding["subjects"] = [{"kind": "ServiceAccount", "name": who.user.rsplit(":", 1)[1], "namespace": who.namespace}]
    docs = [*base, CLUSTER_ADMIN[0], binding]
    old = unhealthy()
    assert (
        admission.admit(
            docs, who.user, who.groups, token(REMEDIATOR_NODE), "UPDATE", "nodes", "", old, changed(old, release), ""
        )
        is None
    )
    assert update(base, "remediator", old, changed(old, release)) is not None
