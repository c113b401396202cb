"""The chart as users run it, on the kubelet node (conftest.py): the operator Deployment from its image,
its probes answered to the real kubelet, `helm test`, `helm upgrade` rolling the pod on a changed value, two
replicas of which one acts and the other takes over when the first is deleted, and `helm uninstall`.
The tests build on each other in file order (an upgrade, then two replicas, then the uninstall)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from .kubelet_helpers import RELEASE_NAMESPACE, REPO, ended, get, helm, kubectl, operator_pods, wait_for

CHART = REPO / "charts/torchyard"
PEERING = "torchyard"  # values.yaml peering.name; a KopfPeering in each watched namespace
WATCHED = "default"  # values.yaml watch.namespaces

pytestmark = pytest.mark.e2e


def ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ready_operator_pods(count: int) -> list[dict]:
    def all_ready() -> list[dict] | None:
        pods = operator_pods()
        return pods if len(pods) == count and all(map(ready, pods)) else None

    return wait_for(f"{count} ready operator pod(s)", all_ready, timeout=300)


def peers() -> dict[str, dict]:
    """kopf's keep-alives: {pod name: {priority, lastseen, lifetime}} of the replicas alive."""
    return get("kopfpeering", PEERING, WATCHED).get("status") or {}


def operator_log(pod: str) -> str:
    return kubectl("-n", RELEASE_NAMESPACE, "logs", pod)


def a_small_trainjob(name: str) -> str:
    job = yaml.safe_load((REPO / "examples/trainjob.yaml").read_text())
    job["metadata"]["name"] = name
    job["spec"].update(nodes=1, workDir={}, cfgOptions=["train_cfg.max_epochs=1"])
    return yaml.safe_dump(job)


def test_the_probes_gate_the_metrics_service_and_helm_test_passes(kubelet_cluster):
    kubectl("-n", RELEASE_NAMESPACE, "rollout", "status", "deployment/torchyard", "--timeout=300s")
    [pod] = ready_operator_pods(1)
    # Ready is the kubelet's readiness probe of /healthz; only a ready pod is an endpoint of the Service
    slices = json.loads(kubectl("-n", RELEASE_NAMESPACE, "get", "endpointslices", "-o", "json",
                                "-l", "kubernetes.io/service-name=torchyard-metrics"))  # fmt: skip
    endpoints = [e for s in slices["items"] for e in s.get("endpoints") or []]
    assert [e["addresses"] for e in endpoints if e["conditions"].get("ready")] == [[pod["status"]["podIP"]]]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, "the liveness probe restarted it"
    # (no --logs: the chart deletes a test pod that succeeded, as its hook-delete-policy says)
    out = helm("test", "torchyard", "--timeout", "5m")
    assert "TEST SUITE:     torchyard-test" in out and "Phase:          Succeeded" in out, out


def test_helm_upgrade_with_a_changed_value_rolls_the_pod(kubelet_cluster):
    [before] = ready_operator_pods(1)
    helm("upgrade", "torchyard", CHART, "--reuse-values", "--set-string", "podAnnotations.rolled=yes",
         "--wait", "--timeout", "5m")  # fmt: skip
    [after] = ready_operator_pods(1)
    assert after["metadata"]["name"] != before["metadata"]["name"]
    assert after["metadata"]["annotations"]["rolled"] == "yes"
    # an upgrade that changes nothing leaves the pod alone
    helm("upgrade", "torchyard", CHART, "--reuse-values", "--wait", "--timeout", "5m")
    [same] = ready_operator_pods(1)
    assert same["metadata"]["name"] == after["metadata"]["name"]


def acting(pod: str) -> bool:
    """Whether replica `pod` serves jobs: kopf starts a peering replica paused, logs "Resuming" when no
    peer outranks it and "Pausing" when one appears."""
    words = re.findall(r"(Resuming|Pausing) operations", operator_log(pod))
    return bool(words) and words[-1] == "Resuming"


def test_of_two_replicas_one_acts_and_the_other_takes_over_when_it_is_deleted(kubelet_cluster):
    helm("upgrade", "torchyard", CHART, "--reuse-values", "--set", "replicaCount=2", "--wait", "--timeout=5m")
    pods = {pod["metadata"]["name"] for pod in ready_operator_pods(2)}
    known = wait_for("both replicas in the peering", lambda: (p := peers()) and pods <= p.keys() and p)
    active, standby = sorted(pods, key=lambda name: known[name]["priority"], reverse=True)
    wait_for(f"{active} to act", lambda: acting(active), 120)
    assert not acting(standby), operator_log(standby)[-3000:]

    kubectl("-n", RELEASE_NAMESPACE, "delete", "pod", active, "--wait=false")
    # kopf removes a replica's keep-alive as it exits; the Deployment's replacement draws its own priority
    wait_for(f"{active} to leave the peering", lambda: active not in peers(), 120)

    def taker() -> str | None:
        """The replica that acts now: the standby, unless the replacement outranks it."""
        alive = {name: info for name, info in peers().items() if name != active}
        if standby not in alive or len(alive) < 2:
            return None
        top = max(alive, key=lambda name: alive[name]["priority"])
        return top if acting(top) else None

    wait_for("a replica to act after the active one went", taker, 180)
    kubectl("apply", "-f", "-", input=a_small_trainjob("after-failover"))
    ended("trainjob", "after-failover", timeout=300)
    kubectl("delete", "trainjob", "after-failover", "--wait", "--timeout=120s")


def test_helm_uninstall_removes_the_operator_and_keeps_the_crds(kubelet_cluster):
    # the chart's NOTES: delete the jobs while the operator runs (it removes its finalizers), then uninstall
    kubectl("delete", "--ignore-not-found", "trainjobs,testjobs", "--all", "-A", "--wait", "--timeout=120s")
    helm("uninstall", "torchyard", "--wait", "--timeout", "5m")
    kinds = "deployments,services,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings"
    left = kubectl("get", kinds, "-A", "-l", "app.kubernetes.io/instance=torchyard", "-o", "name")
    assert left.strip() == "", left
    wait_for("the operator pods to go", lambda: not operator_pods(), 120)
    kept = ["trainjobs.torchyard.dev", "testjobs.torchyard.dev"]
    crds = kubectl("get", "crd", *kept, "-o", "name").split()
    assert crds == [f"customresourcedefinition.apiextensions.k8s.io/{name}" for name in kept]
