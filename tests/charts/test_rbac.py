"""Least privilege, both ways: the chart's RBAC rules are exactly the API calls the operator makes.

The operator (kopf + operator/kube.py) runs in-process against the kmock API emulator of
tests/operator/emulator_harness.py, through a scenario that walks every code path that talks to the API:
pods and Service created, a pod failing (gang restart: pods deleted), success, ttlSecondsAfterFinished
(the job deleted), a TestJob reading its TrainJob, a name clash with a foreign pod (read back), a job
deleted by the user (its Service read and deleted), events, and kopf peering. Every request carrying the
operator's credentials is recorded as (API group, resource, verb, namespace) and compared with the rules
the chart renders (templates/_rbac.tpl) for the same watch mode: nothing missing, nothing extra.

What the emulator cannot show is declared in KOPF_OBSERVATION below: kopf's watch of CRDs and, serving
listed namespaces, of Namespaces. kmock serves neither (no apiextensions group; /api/v1/namespaces does
not parse), so the scenario runs kopf with `settings.scanning.disabled = True`, and those rules come from
kopf's documentation (https://kopf.readthedocs.io/en/stable/deployment/#rbac) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import kmock
import kopf
import pytest
from chart_helpers import NAMESPACE as RELEASE_NAMESPACE
from chart_helpers import find, one
from emulator_harness import NS, Cluster, termination, train_job

from torchyard.operator.controller import OperatorConfig
from torchyard.operator.emulator import Emulator
from torchyard.operator.handlers import build_registry, memo_for
from torchyard.operator.kube import ApiError, resource_path

TOKEN = "torchyard-operator-under-test"
PEERING = "torchyard"
NODES = ["digits-mlp-node-0", "digits-mlp-node-1"]
Call = tuple[str, str, str, str | None]  # (API group, resource[/subresource], verb, namespace or None)
Permission = tuple[str, str, str]  # (API group, resource[/subresource], verb)

# Granted though the operator never calls it: the OwnerReferencesPermissionEnforcement admission plugin lets
# only whoever may update a job's finalizers create children that name it with blockOwnerDeletion.
ADMISSION_REQUIRED: set[Permission] = {
    ("torchyard.dev", resource, "update") for resource in ("trainjobs/finalizers", "testjobs/finalizers")
}
KOPF_OBSERVATION: dict[str, set[Permission]] = {
    "clusterWide": {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")},
    "namespaces": {
        *{("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")},
        *{("", "namespaces", v) for v in ("list", "watch")},
    },
}


class RecordingEmulator(Emulator):
    """The harness's emulator, noting every resource request made with the operator's token."""

    calls: set[Call]

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.calls = set()

    async def _handle(self, request):  # a kmock Request
        operator = request.headers.get("Authorization") == f"Bearer {TOKEN}"
        # requests without a resource are discovery (/api, /apis/...), allowed to every user
        if operator and request.resource is not None and request.resource.plural:
            self.calls.add(_call(request))
        return await super()._handle(request)


def _call(request: Any) -> Call:
    method, action = request.method.value.upper(), request.action
    if method == "GET":
        verb = "watch" if action == kmock.action.WATCH else ("get" if request.name else "list")
    elif method == "DELETE":
        verb = "delete" if request.name else "deletecollection"
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}[method]
    resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    return request.resource.group or "", resource, verb, request.namespace


@contextlib.asynccontextmanager
async def operator(cluster: Cluster, clusterwide: bool) -> AsyncIterator[None]:
    """kopf in its own thread with peering, cluster-wide or serving NS, as `torchyard operator run` does."""
    info = kopf.ConnectionInfo(server=cluster.url, token=TOKEN, insecure=True)
    namespaces = [] if clusterwide else [NS]
    memo = memo_for(OperatorConfig(connection=info, namespaces=namespaces, report_grace=0.3))
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True  # see the module docstring
    stop, ready = threading.Event(), threading.Event()
    coroutine = kopf.operator(
        registry=build_registry(),
        settings=settings,
        memo=memo,
        clusterwide=clusterwide,
        namespaces=namespaces,
        standalone=False,
        peering_name=PEERING,
        priority=1,
        stop_flag=stop,
        ready_flag=ready,
    )
    thread = threading.Thread(target=asyncio.run, args=(coroutine,), name="operator", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 20), "the operator did not start"
    try:
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive(), "the operator did not stop"


async def scenario(cluster: Cluster) -> None:
    """Every path of the operator that talks to the API server, once."""
    api = cluster.api
    # a foreign pod holding the name of a job's pod: the operator reads it back and reports the clash
    foreign = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "clash-node-0"},
               "spec": {"containers": [{"name": "x", "image": "busybox"}]}}  # fmt: skip
    await api.create(resource_path("v1", "pods", NS), foreign)
    await cluster.create(train_job("clash", nodes=1))
    await cluster.wait_status(
        "TrainJob",
        "clash",
        lambda s: any(c.get("reason") == "ChildConflict" for c in s.get("conditions", [])),
    )
    # a TestJob waiting for its TrainJob, which fails once (gang restart), succeeds, and is deleted (TTL)
    test = {"apiVersion": "torchyard.dev/v1alpha1", "kind": "TestJob",
            "metadata": {"name": "digits-eval", "namespace": NS},
            "spec": {"image": "torchyard/trainer:0.1.0", "config": "configs/digits_mlp.py",
                     "fromTrainJob": {"name": "digits-mlp", "which": "latest"},
                     "ttlSecondsAfterFinished": 1}}  # fmt: skip
    await cluster.create(test)
    await cluster.create(train_job(ttlSecondsAfterFinished=1, workDir={"claimName": "runs"}))
    await cluster.running_pods(NODES)
    await cluster.kubelet.finish(NODES[1], 137)
    await cluster.running_pods(NODES, attempt=1)
    await cluster.kubelet.finish(NODES[1], 0)
    await cluster.kubelet.finish(NODES[0], 0, termination(lastCheckpoint="/work_dir/epoch_1.pth"))
    await cluster.running_pods(["digits-eval-node-0"])
    await cluster.kubelet.finish("digits-eval-node-0", 0, termination(metrics={"accuracy/top1": 97.0}))
    for kind, name in (("TrainJob", "digits-mlp"), ("TestJob", "digits-eval")):
        await cluster.wait(lambda k=kind, n=name: _gone(cluster, k, n), timeout=15, what=f"{kind} {name} TTL")
    # the user deletes a job: the operator deletes its pods and its Service
    await api.delete(resource_path("torchyard.dev/v1alpha1", "trainjobs", NS, "clash"))
    await cluster.wait(lambda: _service_gone(cluster, "clash"), timeout=15, what="Service clash deleted")


async def _gone(cluster: Cluster, kind: str, name: str) -> bool:
    return await cluster.job(kind, name) is None


async def _service_gone(cluster: Cluster, name: str) -> bool:
    try:
        await cluster.api.get(resource_path("v1", "services", NS, name))
    except ApiError as err:
        return err.status == 404
    return False


async def record(clusterwide: bool) -> set[Call]:
    async with RecordingEmulator() as emulator, kmock.Server(emulator) as server:
        cluster = Cluster(emulator, str(server.url).rstrip("/"))
        kubelet = asyncio.create_task(cluster.kubelet.run())
        if clusterwide:
            path = resource_path("kopf.dev/v1", "clusterkopfpeerings")
            peering = {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": PEERING},
            }
        else:
            path = resource_path("kopf.dev/v1", "kopfpeerings", NS)
            peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}
        await cluster.api.create(path, peering)  # the chart creates it
        try:
            async with operator(cluster, clusterwide):
                await scenario(cluster)
        finally:
            kubelet.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await kubelet
            await cluster.api.close()
        return set(emulator.calls)


def granted(roles: list[dict]) -> set[Permission]:
    return {
        (group, resource, verb)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _compare(what: str, rendered: set[Permission], used: set[Permission]) -> None:
    missing, extra = sorted(used - rendered), sorted(rendered - used)
    assert not missing and not extra, (
        f"{what}: the chart's RBAC (charts/torchyard/templates/_rbac.tpl) and the operator's API calls differ"
        f"\n  used but not granted: {missing}\n  granted but never used: {extra}"
    )


@pytest.fixture(scope="module")
def recorded() -> dict[str, set[Call]]:
    return {"clusterWide": asyncio.run(record(True)), "namespaces": asyncio.run(record(False))}


def test_cluster_wide_rules_are_exactly_the_calls(recorded, render):
    calls = recorded["clusterWide"]
    used = {call[:3] for call in calls} | KOPF_OBSERVATION["clusterWide"] | ADMISSION_REQUIRED
    for peering in (True, False):
        manifests = render({"peering": {"enabled": peering}})
        assert not find(manifests, "Role")
        expected = used if peering else {p for p in used if p[0] != "kopf.dev"}
        _compare(f"clusterWide, peering={peering}", granted(find(manifests, "ClusterRole")), expected)


def test_namespaced_rules_are_exactly_the_calls(recorded, render):
    calls = recorded["namespaces"]
    assert {call[3] for call in calls} == {NS}, "serving one namespace, every call stays in it"
    used = {call[:3] for call in calls} | ADMISSION_REQUIRED
    for peering in (True, False):
        manifests = render(
            {"watch": {"mode": "namespaces", "namespaces": [NS]}, "peering": {"enabled": peering}}
        )
        expected = used if peering else {p for p in used if p[0] != "kopf.dev"}
        _compare(
            f"namespace {NS}, peering={peering}", granted([one(manifests, "Role", namespace=NS)]), expected
        )
        cluster = granted(find(manifests, "ClusterRole"))
        _compare("cluster level, serving namespaces", cluster, KOPF_OBSERVATION["namespaces"])
        assert all(verb in ("list", "watch") for _, _, verb in cluster)
    release = render({"watch": {"mode": "releaseNamespace"}})
    assert granted([one(release, "Role", namespace=RELEASE_NAMESPACE)]) == {
        p for p in used if p[0] != "kopf.dev"
    }


def test_the_scenario_exercised_every_path(recorded):
    """Guards the scenario itself: each API-facing path of the operator showed up in the record."""
    used = {call[:3] for call in recorded["namespaces"]}
    for permission in [
        ("", "pods", "get"), ("", "pods", "delete"), ("", "services", "get"), ("", "services", "delete"),
        ("", "events", "create"), ("torchyard.dev", "trainjobs", "delete"),
        ("torchyard.dev", "testjobs", "delete"), ("torchyard.dev", "testjobs/status", "patch"),
        ("kopf.dev", "kopfpeerings", "patch"),
    ]:  # fmt: skip
        assert permission in used, permission
