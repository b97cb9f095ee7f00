"""harness.kube.documents spells every field as the Kubernetes API does: checked against the
official client's own models (their attribute_map is the API's JSON names)."""

from __future__ import annotations

from typing import get_type_hints

import pytest
from kubernetes import client

from harness.kube import documents

MODELS = [
    (documents.Node, client.V1Node),
    (documents.ObjectMeta, client.V1ObjectMeta),
    (documents.NodeSpec, client.V1NodeSpec),
    (documents.Taint, client.V1Taint),
    (documents.NodeStatus, client.V1NodeStatus),
    (documents.NodeCondition, client.V1NodeCondition),
]


@pytest.mark.parametrize(("ours", "model"), MODELS, ids=[ours.__name__ for ours, _ in MODELS])
def test_every_declared_field_is_the_api_s(ours: type, model: type) -> None:
    declared = set(get_type_hints(ours))
    assert declared and declared <= set(model.attribute_map.values()), declared - set(model.attribute_map.values())
    assert not ours.__required_keys__  # type: ignore[attr-defined]  # the server leaves out what is empty


def test_the_nested_documents_are_the_api_s_types() -> None:
    hints = get_type_hints(documents.Node)
    assert (hints["metadata"], hints["spec"], hints["status"]) == (
        documents.ObjectMeta,
        documents.NodeSpec,
        documents.NodeStatus,
    )
    assert client.V1Node.openapi_types["spec"] == "V1NodeSpec"
    assert get_type_hints(documents.NodeSpec)["taints"] == list[documents.Taint]
    assert client.V1NodeSpec.openapi_types["taints"] == "List[V1Taint]"
    assert get_type_hints(documents.NodeStatus)["conditions"] == list[documents.NodeCondition]
    assert client.V1NodeStatus.openapi_types["conditions"] == "List[V1NodeCondition]"
