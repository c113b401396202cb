"""The pod backend's own check (operator/kube/policy.py): no pods for a spec that names other objects unless
an admission policy checked its creator; jobs never run in system namespaces; no token in trainer pods.

The real control plane has the chart's policy installed (the harness's helm release). These tests take its
binding away for a moment (a label change: the operator looks for the label), as a cluster without the
policy would be, and put it back.
"""

from __future__ import annotations

import pytest

from torchyard.operator.control.decide import namespace_refusal
from torchyard.operator.control.kubeapi import resource_path
from torchyard.operator.kube.policy import BINDINGS, POLICY_LABEL, named_objects, unchecked
from torchyard.operator.kube.render import render_k8s

from ..jobs import TRAIN, make
from ..operator_harness import running_cluster, running_operator, train_job


def test_fields_that_name_objects_are_the_ones_the_policy_checks(train_job, test_job):
    assert named_objects(train_job()) == []
    job = train_job(
        serviceAccountName="sa",
        workDir={"claimName": "runs"},
        imagePullSecrets=["a", "b"],
        priorityClassName="high",
        tolerations=[{"operator": "Exists"}],
    )
    assert [path for path, _ in named_objects(job)] == [
        "spec.serviceAccountName",
        "spec.workDir.claimName",
        "spec.imagePullSecrets",
        "spec.imagePullSecrets",
        "spec.priorityClassName",
        "spec.tolerations",
    ]
    secret_env = {"name": "T", "valueFrom": {"secretKeyRef": {"name": "tok"}}}
    projected = {"name": "c", "projected": {"sources": [{"secret": {"name": "more"}}, {"configMap": {}}]}}
    pod_template = {"spec": {
        "containers": [{"name": "trainer", "env": [secret_env], "envFrom": [{"secretRef": {"name": "env"}}]}],
        "initContainers": [{"name": "init", "image": "b", "envFrom": [{"secretRef": {"name": "init"}}]}],
        "volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "b", "secret": {"secretName": "certs"}},
                    projected],
    }}  # fmt: skip
    named = [what for _, what in named_objects(train_job(template=pod_template))]
    secrets = ["Secret certs", "Secret more", "Secret init", "Secret tok", "Secret env"]
    assert named == ["PersistentVolumeClaim data", *secrets]
    evaluation = test_job(fromTrainJob={"name": "digits-mlp", "which": "best"}, checkpoint=None)
    assert named_objects(evaluation) == [("spec.fromTrainJob.name", "TrainJob digits-mlp (and its work dir)")]
    message = str(unchecked(job, "team-a"))
    assert message.startswith("TrainJob team-a/digits-mlp: not allowed by this operator")
    assert "spec.serviceAccountName: names ServiceAccount sa, but no admission policy checks" in message
    assert "--trust-job-specs" in message and "jobPolicy.enabled=true" in message


def test_system_namespaces_are_refused():
    for namespace in ("kube-system", "kube-public", "kube-node-lease"):
        assert "create the job in a namespace of your own" in namespace_refusal(namespace)
    assert namespace_refusal("default") is None and namespace_refusal("team-kube-a") is None


def test_trainer_pods_get_no_service_account_token_unless_one_is_named(train_job):
    """Before, the namespace's default token was mounted in every trainer pod."""
    assert render_k8s(train_job())[1]["spec"]["automountServiceAccountToken"] is False
    named = render_k8s(train_job(serviceAccountName="trainer"))[1]["spec"]
    assert named["serviceAccountName"] == "trainer" and "automountServiceAccountToken" not in named


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_without_the_policy_the_operator_refuses_specs_naming_objects():
    async with running_cluster() as cluster:
        bindings = (await cluster.api.request("GET", BINDINGS, labelSelector=POLICY_LABEL))["items"]
        assert bindings, "the harness's helm release should have installed the job policy"
        hidden = [(b["metadata"]["name"], b["metadata"]["labels"][POLICY_LABEL]) for b in bindings]
        for name, _ in hidden:  # as a cluster without the policy: the operator looks for the label
            await cluster.api.patch(f"{BINDINGS}/{name}", {"metadata": {"labels": {POLICY_LABEL: None}}})
        try:
            async with running_operator(cluster):
                await cluster.create(train_job("named", serviceAccountName="default"))
                await cluster.create(train_job("plain"))
                status = await cluster.wait_phase("TrainJob", "named", "Failed")
                failed = next(c for c in status["conditions"] if c["type"] == "Failed")
                assert failed["reason"] == "NotAllowed" and "spec.serviceAccountName" in failed["message"]
                await cluster.running_pods(["plain-node-0", "plain-node-1"])
                assert not [name for name in await cluster.pods() if name.startswith("named")]
        finally:
            for name, value in hidden:
                await cluster.api.patch(f"{BINDINGS}/{name}", {"metadata": {"labels": {POLICY_LABEL: value}}})


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_a_job_in_a_system_namespace_fails_and_gets_no_pods():
    async with running_cluster() as cluster, running_operator(cluster):
        job = make(TRAIN)
        job["metadata"]["name"] = f"{cluster.ns}-sys"
        path = resource_path("torchyard.dev/v1alpha1", "trainjobs", "kube-public")
        await cluster.api.create(path, job)
        try:
            async def failed() -> dict | None:
                body = await cluster.api.get(f"{path}/{cluster.ns}-sys")
                return body.get("status") if (body.get("status") or {}).get("phase") == "Failed" else None

            status = await cluster.wait(failed, what="the job in kube-public to fail")
            message = next(c for c in status["conditions"] if c["type"] == "Failed")["message"]
            assert "system namespace kube-public" in message
            pods = (await cluster.api.get(resource_path("v1", "pods", "kube-public")))["items"]
            assert not [p for p in pods if p["metadata"]["name"].startswith(f"{cluster.ns}-sys")]
        finally:
            await cluster.api.delete(f"{path}/{cluster.ns}-sys")
