"""operator/dev/node.py: the Node a node agent registers (pure parts); the heartbeat itself runs in every
real-cluster test (tests/operator/operator_harness.py) and in `torchyard dev-cluster`."""

from __future__ import annotations

import pytest

from torchyard.operator.dev.node import AGENT_LABEL, node_manifest, node_status, parse_taint


def test_node_manifest_carries_the_well_known_labels_and_taints():
    taint = {"key": "team", "value": "a", "effect": "NoSchedule"}
    node = node_manifest("n1", {"team": "a"}, [taint])
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "n1" and labels["kubernetes.io/os"] == "linux"
    assert labels[AGENT_LABEL] == "processes" and labels["team"] == "a"
    assert node["spec"] == {"taints": [taint]}
    assert node_manifest("n2")["spec"] == {}


def test_node_status_is_ready_with_its_capacity():
    status = node_status({"cpu": "4", "memory": "8Gi", "pods": "10"}, "2026-01-01T00:00:00Z")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and status["allocatable"] == status["capacity"]


@pytest.mark.parametrize(
    ("text", "taint"),
    [
        ("a=b:NoSchedule", {"key": "a", "value": "b", "effect": "NoSchedule"}),
        ("a:NoExecute", {"key": "a", "effect": "NoExecute"}),
        ("example.com/gpu=true:PreferNoSchedule", {"key": "example.com/gpu", "value": "true",
                                                   "effect": "PreferNoSchedule"}),
    ],
)  # fmt: skip
def test_taints_parse_as_kubectl_writes_them(text, taint):
    assert parse_taint(text) == taint


@pytest.mark.parametrize("text", ["a=b", "a=b:Never", ":NoSchedule", ""])
def test_a_bad_taint_says_what_is_expected(text):
    with pytest.raises(ValueError, match="KEY\\[=VALUE\\]:EFFECT"):
        parse_taint(text)
