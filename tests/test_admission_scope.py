"""deploy/admission/ beyond node writes: the Events each component may post, whom the
policies judge (by what an account may do, so overlays that rename everything keep them), and
the policies' own shape. Run with cel-python through tests/admission.py."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests import admission
from tests.admission import AGENTS, COMPONENTS, RENDERS, Manifest, identity, token
from tests.node_states import NODE, OTHER_NODE, event, home_node

if shutil.which("kubectl") is None:
    pytest.skip("kubectl is not on PATH: deploy/ is rendered with `kubectl kustomize`", allow_module_level=True)


@pytest.fixture(scope="module", params=list(RENDERS), ids=list(RENDERS))
def docs(request) -> list[Manifest]:
    return admission.render(RENDERS[request.param])


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return admission.render()


# -- Events ------------------------------------------------------------------------------------


def post(
    docs: list[Manifest], component: str, body: dict[str, Any], *, node: str | None = ""
) -> tuple[str, str] | None:
    """`component`'s pod creates `body` in the namespace the body names."""
    who = identity(docs, component)
    extra = token(home_node(component) if node == "" else node)
    namespace = body["metadata"]["namespace"]
    return admission.admit(docs, who.user, who.groups, extra, "CREATE", "events", "", None, body, namespace)


def in_own_namespace(docs: list[Manifest], component: str, body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["namespace"] = identity(docs, component).namespace
    return body


@pytest.mark.parametrize("component", AGENTS)
def test_a_node_agent_posts_events_about_its_own_node_in_its_namespace(docs, component):
    assert post(docs, component, in_own_namespace(docs, component, event())) is None


@pytest.mark.parametrize("about", [NODE, OTHER_NODE, "gpu-node-4711"])
def test_the_remediator_posts_events_about_any_node(docs, about):
    assert post(docs, "remediator", in_own_namespace(docs, "remediator", event(about))) is None


def without_source(body: dict[str, Any]) -> dict[str, Any]:
    del body["source"]
    return body


EVENTS_DENIED = [
    (AGENTS, lambda: event(OTHER_NODE), "", "only about the node its pod runs on", "about another node"),
    (AGENTS, event, None, "only about the node its pod runs on", "a token with no node claim"),
    (COMPONENTS, lambda: event(namespace="default"), "", "only in its own namespace", "in default"),
    (COMPONENTS, lambda: event(namespace="ml-team"), "", "only in its own namespace", "in another team's namespace"),
    (COMPONENTS, lambda: event(component="kubelet"), "", "reportingComponent", "another reporting component"),
    (
        COMPONENTS,
        lambda: {**event(), "source": {"component": "node-controller"}},
        "",
        "reportingComponent",
        "another source component",
    ),
    (
        COMPONENTS,
        lambda: {k: v for k, v in event().items() if k != "reportingComponent"},
        "",
        "reportingComponent",
        "no reporting component",
    ),
    (
        COMPONENTS,
        lambda: event("train-0", kind="Pod", namespace="ml-team"),
        "",
        "only in its own namespace",
        "about a pod elsewhere",
    ),
    (COMPONENTS, lambda: event("gpu-burnin-x7k2p", kind="Pod"), "", "only about a Node", "about a pod"),
]


@pytest.mark.parametrize(
    ("component", "body", "claim", "says"),
    [(c, body, claim, says) for components, body, claim, says, _ in EVENTS_DENIED for c in components],
    ids=[f"{c}: {name}" for components, _, _, _, name in EVENTS_DENIED for c in components],
)
def test_no_component_posts_other_events(docs, component, body, claim, says):
    made = body()
    if made["metadata"]["namespace"] == "gpu-burnin":
        in_own_namespace(docs, component, made)  # the overlay's namespace where the probe is not about it
    denied = post(docs, component, made, node=claim)
    assert denied is not None, "admitted"
    assert denied[0].endswith("gpu-burnin-events") and says in denied[1], denied


def test_an_event_without_source_is_fine_but_a_broken_one_is_denied(base):
    assert post(base, "watch", without_source(event())) is None
    broken = event()
    del broken["involvedObject"]["name"]
    denied = post(base, "watch", broken)
    assert denied is not None and denied[0] == "gpu-burnin-events", denied


def test_an_overlay_renames_the_accounts_and_the_policies_follow():
    """The accounts an overlay's pods run as are not the base's; the base's names are no one's."""
    for name, directory in RENDERS.items():
        docs = admission.render(directory)
        users = {c: identity(docs, c).user for c in COMPONENTS}
        expected = {
            "deploy": {c: f"system:serviceaccount:gpu-burnin:{c}" for c in COMPONENTS},
            "namespace gpu-ops": {c: f"system:serviceaccount:gpu-ops:{c}" for c in COMPONENTS},
            "namePrefix prod-": {c: f"system:serviceaccount:gpu-burnin:prod-{c}" for c in COMPONENTS},
        }[name]
        assert users == expected, name
        # Under the overlay, an account with the base's name holds nothing and is judged by nothing.
        if name != "deploy":
            ghost = "system:serviceaccount:gpu-burnin:watch"
            assert ghost not in users.values()
            assert not admission.Rbac(docs).grants(ghost, admission.service_account_groups("gpu-burnin"))


# -- the policies' own shape ---------------------------------------------------------------------

NODE_POLICIES = [f"gpu-burnin-{c}" for c in COMPONENTS]


def policies(docs: list[Manifest]) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}


def test_every_policy_fails_closed_and_is_bound_to_deny_and_audit(docs):
    found = policies(docs)
    bindings = {d["spec"]["policyName"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert sorted(found) == sorted(bindings)  # each bound, and to a policy that exists by that name
    assert len(found) == 5
    for name, policy in found.items():
        spec = policy["spec"]
        assert spec["failurePolicy"] == "Fail", name
        assert bindings[name]["spec"] == {"policyName": name, "validationActions": ["Deny", "Audit"]}
        assert all(v["message"] and v["reason"] == "Forbidden" for v in spec["validations"]), name


def test_the_policies_match_by_what_an_account_may_do_never_by_its_name(docs):
    for name, policy in policies(docs).items():
        conditions = [c["expression"] for c in policy["spec"]["matchConditions"]]
        assert conditions[-1] == "!authorizer.group('gpu-burnin.dev').resource('nodemarks').check('*').allowed()"
        assert all("authorizer.group('gpu-burnin.dev').resource('nodemarks')" in c for c in conditions), name
        assert not any("username" in c or "serviceaccount" in c or "groups" in c for c in conditions), name


OWNS = ("ownNodeOnly", "ownCondition", "ownLabels", "ownAnnotations", "ownTaints", "mayCordon")
COMMON_VARIABLES = [
    f"{side}{what}"
    for what in ("Labels", "Annotations", "Taints", "OwnTaints", "Spec", "Status", "Unschedulable")
    for side in ("old", "new")
]
COMMON_CHECKS = 13


def test_every_node_policy_judges_node_writes_with_the_same_words(base):
    """What a component owns, then the same variables and checks in each, then its own label rules."""
    found = policies(base)
    common = []
    for name in NODE_POLICIES:
        spec = found[name]["spec"]
        assert spec["matchConstraints"]["resourceRules"] == [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes", "nodes/status"]}
        ]
        names = [v["name"] for v in spec["variables"]]
        assert names[: len(OWNS) + len(COMMON_VARIABLES)] == [*OWNS, *COMMON_VARIABLES], name
        # After them, only a label's value before and after (oldHealth, newHealth, ...).
        assert all(n.startswith(("old", "new")) for n in names[len(OWNS) + len(COMMON_VARIABLES) :]), name
        variables = [v["expression"] for v in spec["variables"][len(OWNS) : len(OWNS) + len(COMMON_VARIABLES)]]
        common.append((variables, [v["expression"] for v in spec["validations"][:COMMON_CHECKS]]))
    assert all(shape == common[0] for shape in common), "the common part of the node policies differs"


@pytest.mark.parametrize(
    ("component", "owns"),
    [
        (
            "preflight",
            (
                "true",
                "'GPUBurnIn'",
                "['gpu-burnin/preflight']",
                "['gpu-burnin/last-result']",
                "['gpu-burnin/preflight']",
                "false",
            ),
        ),
        (
            "periodic",
            (
                "true",
                "'GPUBurnIn'",
                "['gpu-burnin/health', 'gpu-burnin/severity']",
                "['gpu-burnin/last-result', 'gpu-burnin/incomplete-streak', 'gpu-burnin/requested']",
                "[]",
                "false",
            ),
        ),
        (
            "watch",
            (
                "true",
                "'GPUBurnInWatch'",
                "['gpu-burnin/health', 'gpu-burnin/severity', 'gpu-burnin/fresh']",
                "['gpu-burnin/watch', 'gpu-burnin/requested']",
                "[]",
                "false",
            ),
        ),
        (
            "remediator",
            (
                "false",
                "'GPUBurnInRemediation'",
                "['gpu-burnin/health']",
                "['gpu-burnin/cordoned']",
                "['gpu-burnin/unhealthy']",
                "true",
            ),
        ),
    ],
)
def test_each_node_policy_names_what_its_component_owns(base, component, owns):
    variables = {v["name"]: v["expression"] for v in policies(base)[f"gpu-burnin-{component}"]["spec"]["variables"]}
    assert tuple(variables[n] for n in OWNS) == owns
