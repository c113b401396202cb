"""The chart's job policy (templates/jobpolicy.yaml) on the real control plane: a TrainJob never grants more
than its creator has.

The harness installs the chart, policy included. Users are impersonated with `kubectl --as`, as a tenant
would be: alice may only create TrainJobs in the namespace; bob may create TrainJobs and pods, and use the
ServiceAccount, the claim, the pull Secret and the PriorityClass his jobs name. Every field that names an
object is refused for alice at admission, with a message naming the field, and no pod appears; bob's job
with all of them runs. With the operator's own check, a cluster without the policy gets no pods for such a
spec either (tests/operator/kube/test_policy.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
import yaml

from torchyard.operator.control.kubeapi import resource_path

from ..operator.operator_harness import Cluster, running_cluster, running_operator, train_job

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

OBJECT_RULES = [  # what bob may use, by name
    ("", "serviceaccounts", "trainer"),
    ("", "persistentvolumeclaims", "runs"),
    ("", "secrets", "regcred"),
    ("torchyard.dev", "tolerations", "nvidia.com/gpu"),
]


def rule(group: str, resource: str, verbs: list[str], names: list[str] | None = None) -> dict:
    found = {"apiGroups": [group], "resources": [resource], "verbs": verbs}
    return found | ({"resourceNames": names} if names else {})


async def grant(cluster: Cluster, user: str, rules: list[dict], cluster_rules: list[dict] = ()) -> None:
    name = f"{cluster.ns}-{user}"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "rules": rules}
    role["metadata"] = {"name": user, "namespace": cluster.ns}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": user, "namespace": cluster.ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    documents = [role, binding]
    if cluster_rules:
        documents += [
            {**role, "kind": "ClusterRole", "metadata": {"name": name}, "rules": list(cluster_rules)},
            {
                **binding,
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {**binding["roleRef"], "kind": "ClusterRole", "name": name},
            },
        ]
    await asyncio.to_thread(cluster.plane.kubectl, "apply", "-f", "-", input=yaml.safe_dump_all(documents))

    async def in_force() -> bool:  # the API server's RBAC caches take a moment to see a new binding
        can = ("auth", "can-i", "create", "trainjobs.torchyard.dev", f"--as={user}", "-n", cluster.ns)
        return (await asyncio.to_thread(cluster.plane.run_kubectl, *can)).stdout.strip() == "yes"

    await cluster.wait(in_force, what=f"{user}'s Role in force")


def apply_as(cluster: Cluster, user: str, job: dict) -> subprocess.CompletedProcess:
    """`kubectl apply` of `job` as `user` (impersonated by the admin), as the README's users do."""
    return cluster.plane.run_kubectl(
        f"--as={user}", "apply", "-n", cluster.ns, "-f", "-", input=json.dumps(job)
    )


ALICE_REFUSED = [
    ({"serviceAccountName": "trainer"}, "spec.serviceAccountName", "may not use ServiceAccount trainer"),
    ({"workDir": {"claimName": "runs"}}, "spec.workDir.claimName", "may not use PersistentVolumeClaim runs"),
    ({"priorityClassName": "system-node-critical"}, "spec.priorityClassName", "use PriorityClass system-"),
    ({"imagePullSecrets": ["regcred"]}, "spec.imagePullSecrets", "may not use every Secret of regcred"),
    ({"tolerations": [{"operator": "Exists"}]}, "spec.tolerations", "tolerate every one of all-taints"),
    ({"template": {"spec": {"volumes": [{"name": "creds", "secret": {"secretName": "regcred"}}]}}},
     "spec.template.spec.volumes", "may not use every PersistentVolumeClaim and Secret these volumes name"),
    ({"template": {"spec": {"containers": [
        {"name": "trainer", "envFrom": [{"secretRef": {"name": "regcred"}}]}]}}},
     "spec.template.spec containers", "may not use every Secret their env and envFrom name"),
]


async def test_a_job_never_grants_more_than_its_creator_has():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.volume_claim("runs")
        await grant(cluster, "alice", [rule("torchyard.dev", "trainjobs", ["create", "get", "patch"])])
        for i, (spec, field, why) in enumerate(ALICE_REFUSED):
            refused = await asyncio.to_thread(apply_as, cluster, "alice", train_job(f"alice-{i}", **spec))
            assert refused.returncode != 0, f"admitted for alice: {spec}"
            assert "ValidatingAdmissionPolicy" in refused.stderr and field in refused.stderr, refused.stderr
            assert why in refused.stderr, refused.stderr
        plain = await asyncio.to_thread(apply_as, cluster, "alice", train_job("alice-plain"))
        assert plain.returncode != 0 and "alice may not create pods in" in plain.stderr, plain.stderr

        bob_rules = [rule("torchyard.dev", "trainjobs", ["create", "get", "patch"])]
        bob_rules.append(rule("", "pods", ["create"]))
        bob_rules += [rule(group, resource, ["use"], [name]) for group, resource, name in OBJECT_RULES]
        priority = [rule("scheduling.k8s.io", "priorityclasses", ["use"], ["system-node-critical"])]
        await grant(cluster, "bob", bob_rules, priority)
        await cluster.api.create(
            resource_path("v1", "serviceaccounts", cluster.ns), {"metadata": {"name": "trainer"}}
        )
        everything = {spec_key: value for spec, *_ in ALICE_REFUSED[:4] for spec_key, value in spec.items()}
        everything["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        everything["template"] = {"spec": {  # a claim and a Secret bob may use, through the pod template
            "containers": [{"name": "trainer", "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {
                "name": "regcred", "key": "token", "optional": True}}}]}],
            "volumes": [{"name": "more", "persistentVolumeClaim": {"claimName": "runs", "readOnly": True}}],
        }}  # fmt: skip
        ran = await asyncio.to_thread(apply_as, cluster, "bob", train_job("bob", **everything))
        assert ran.returncode == 0, ran.stderr
        pods = await cluster.running_pods(["bob-node-0", "bob-node-1"])
        assert pods["bob-node-0"]["spec"]["serviceAccountName"] == "trainer"

        assert not [name for name in await cluster.pods() if name.startswith("alice")]
        suspend = json.dumps({"spec": {"suspend": True}})
        patch = ("--as=alice", "patch", "trainjob", "bob", "-n", cluster.ns, "--type=merge", "-p", suspend)
        changed = await asyncio.to_thread(cluster.plane.run_kubectl, *patch)
        assert changed.returncode != 0 and "alice may not use ServiceAccount trainer" in changed.stderr

