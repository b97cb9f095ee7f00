"""Opt-in: the node flows against a real cluster. Skipped unless GPU_BURNIN_E2E_KUBECONFIG names a
kubeconfig and GPU_BURNIN_E2E_NODE a node this test may mark (it must not be serving critical work:
the test adds and removes PreferNoSchedule taints and e2e labels on it, then cleans up).

    GPU_BURNIN_E2E_KUBECONFIG=~/.kube/config GPU_BURNIN_E2E_NODE=gpu-017 pytest tests/test_kube_e2e.py
"""

import datetime as dt
import os
from pathlib import Path

import pytest

from harness.kube import actions
from harness.kube import node as nodes
from harness.kube.api import connect
from harness.kube.node import Key, Label, Marks, Outcome, Taint

KUBECONFIG = os.environ.get("GPU_BURNIN_E2E_KUBECONFIG", "")
NODE = os.environ.get("GPU_BURNIN_E2E_NODE", "")
pytestmark = pytest.mark.skipif(
    not (KUBECONFIG and NODE), reason="set GPU_BURNIN_E2E_KUBECONFIG and GPU_BURNIN_E2E_NODE to run against a cluster"
)

# Marks of their own, so the test never collides with a real preflight, and taints that only prefer.
MARKS = Marks(
    preflight_taint=Taint("gpu-burnin/e2e-preflight", "", "PreferNoSchedule"),
    preflight_label=Label("gpu-burnin/e2e-preflight", "pending"),
    unhealthy_taint=Taint("gpu-burnin/e2e-unhealthy", "", "PreferNoSchedule"),
    unhealthy_label=Label("gpu-burnin/e2e-health", "unhealthy"),
    severity=Key("gpu-burnin/e2e-severity"),
)


def test_retest_then_a_pass_leaves_the_node_as_it_was_but_for_our_marks():
    api = connect(Path(KUBECONFIG).expanduser())
    before = api.get_node(NODE)
    now = dt.datetime.now(dt.UTC)
    try:
        actions.retest(api, NODE, MARKS, now)
        marked = api.get_node(NODE)
        assert nodes.has_taint(marked, MARKS.preflight_taint)
        assert nodes.labels_of(marked)[MARKS.preflight_label.key] == "pending"
        passed = Outcome(run_id="e2e", verdict="pass", codes=(), summary="e2e", when=now, command="preflight")
        actions.preflight(api, NODE, passed, MARKS, now)
        after = api.get_node(NODE)
        assert nodes.taints_of(after) == nodes.taints_of(before)
        theirs = {k: v for k, v in nodes.labels_of(after).items() if not k.startswith("gpu-burnin/")}
        assert theirs == {k: v for k, v in nodes.labels_of(before).items() if not k.startswith("gpu-burnin/")}
        assert nodes.condition(after)["status"] == "True"
    finally:
        actions.update(
            api,
            NODE,
            lambda n: nodes.patch(
                n,
                remove=[MARKS.preflight_taint, MARKS.unhealthy_taint],
                set_labels={MARKS.preflight_label.key: None, MARKS.unhealthy_label.key: None},
                set_annotations={nodes.PENDING_SINCE: None},
            ),
        )


def test_status_reads_the_fleet():
    api = connect(Path(KUBECONFIG).expanduser())
    found = actions.status(api, Marks(), actions.Fleet(), pending_limit_s=7200, now=dt.datetime.now(dt.UTC))
    assert all(s.state for s in found)
