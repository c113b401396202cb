"""Least privilege, both ways: the chart's RBAC rules are exactly the API calls the operator makes.

On the real control plane (tests/operator/operator_harness.py), each watch mode gets the chart's
ServiceAccount, RBAC and peering object as `helm template` renders them for a release of its own
(cluster-wide, then serving one namespace, with kopf peering), and the operator runs in-process with a token
of that ServiceAccount, so a rule the chart lacks is refused (403) as it would be in a cluster. The scenario
walks every code path that talks to the API: a name clash with a foreign pod (read back), a TestJob
waiting for its TrainJob, a pod failing twice (gang restarts: logs kept, pods deleted), success,
ttlSecondsAfterFinished (both jobs deleted), a job deleted by the user (its Service read and deleted),
events, and kopf's peering and its scanning of CRDs and namespaces. What the operator asked for is read
from the API server's audit log (scripts/cluster/up.sh logs every request of a torchyard-system
ServiceAccount; the release's own account tells this test's requests apart), as (API group,
resource, verb, namespace), and compared with the rules the chart renders (templates/_rbac.tpl) for the
same watch mode: nothing missing, nothing extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from torchyard.operator.control.handlers import build_registry, memo_for
from torchyard.operator.control.kubeapi import KubeApi, resource_path
from torchyard.operator.control.loop import OperatorConfig
from torchyard.operator.errors import ApiError
from torchyard.operator.kube.backend import PodBackend

from ..operator.operator_harness import (
    Cluster,
    operator_token,
    running_cluster,
    running_kopf,
    termination,
    train_job,
)
from .chart_helpers import CHART, find, one, run_helm, values_file
from .chart_helpers import NAMESPACE as RELEASE_NAMESPACE

NODES = ["digits-mlp-node-0", "digits-mlp-node-1"]
Call = tuple[str, str, str, str | None]  # (API group, resource[/subresource], verb, namespace or None)
Permission = tuple[str, str, str]  # (API group, resource[/subresource], verb)
# what the test installs of a release: the operator's identity, its rules and the peering object
IDENTITY = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
PEERING_KINDS = {"ClusterKopfPeering", "KopfPeering"}

# Granted though the operator never calls it: the OwnerReferencesPermissionEnforcement admission plugin lets
# only whoever may update a job's finalizers create children that name it with blockOwnerDeletion.
ADMISSION_REQUIRED: set[Permission] = {
    ("torchyard.dev", resource, "update") for resource in ("trainjobs/finalizers", "testjobs/finalizers")
}


@dataclasses.dataclass
class Record:
    """What the operator asked the API server for during one scenario."""

    namespace: str  # the scenario's namespace
    calls: set[Call]
    refused: dict[Call, str]  # answered 403: by RBAC or by admission, and the server's message
    failure: str | None  # the scenario's error, when it stopped short


class AuditLog:
    """The audit events of one user from now on, read as the API server appends them (across a rotation:
    --audit-log-maxsize renames the file and starts a new one)."""

    def __init__(self, path: Path, username: str) -> None:
        self.path, self.username, self.events = path, username, []
        self._needle = f'"username":"{username}"'.encode()  # to parse only the lines that may be ours
        self._file = self._open()
        if self._file is not None:
            self._file.seek(0, 2)  # the file holds the whole session's requests: only ours from here count
        self._buffer = b""

    def _open(self) -> Any:
        with contextlib.suppress(FileNotFoundError):
            return self.path.open("rb")
        return None

    def read(self) -> list[dict]:
        while True:
            if self._file is None:
                self._file = self._open()
                if self._file is None:
                    return self.events
            try:
                rotated = self.path.stat().st_ino != os.fstat(self._file.fileno()).st_ino
            except FileNotFoundError:
                rotated = True
            # read after the check: once renamed, the old file gets nothing more, so nothing is lost
            *lines, self._buffer = (self._buffer + self._file.read()).split(b"\n")
            events = [json.loads(line) for line in lines if self._needle in line]
            self.events += [e for e in events if e["user"]["username"] == self.username]
            if not rotated:
                return self.events
            self._file.close()
            self._file, self._buffer = self._open(), b""

    async def settled(self, quiet: float = 1.5, timeout: float = 15) -> list[dict]:
        """The events once none came for `quiet` seconds: the server writes each one as its response ends."""
        deadline, count, since = time.monotonic() + timeout, -1, time.monotonic()
        while time.monotonic() < deadline:
            if len(self.read()) != count:
                count, since = len(self.events), time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            await asyncio.sleep(0.2)
        if self._file is not None:
            self._file.close()
        return self.events


def _call(event: dict) -> Call | None:
    """An audit event as (API group, resource[/subresource], verb, namespace); None for discovery (/api,
    /apis/..., allowed to every user), which no rule of the chart is about."""
    ref = event.get("objectRef") or {}
    if not ref.get("resource"):
        return None
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return ref.get("apiGroup") or "", resource, event["verb"], ref.get("namespace")


def release_manifests(helm: Path, tmp: Path, release: str, values: dict[str, Any]) -> list[dict]:
    """The release's ServiceAccount, RBAC and peering object, as `helm template` renders them."""
    out = run_helm(
        helm, "template", release, str(CHART), "--namespace", RELEASE_NAMESPACE,
        "--values", str(values_file(tmp, values)),
    ).stdout  # fmt: skip
    return [m for m in yaml.safe_load_all(out) if m and m["kind"] in IDENTITY | PEERING_KINDS]


def granted(roles: list[dict]) -> set[Permission]:
    return {
        (group, resource, verb)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


async def rules_in_force(api: KubeApi, username: str, manifests: list[dict]) -> None:
    """Wait until the API server authorizes every rendered rule: its RBAC caches follow new objects a moment
    later, and a 403 in that moment would read as a missing rule."""
    scoped = [(None, p) for p in granted(find(manifests, "ClusterRole"))] + [
        (role["metadata"]["namespace"], p) for role in find(manifests, "Role") for p in granted([role])
    ]

    async def allowed() -> bool:
        for namespace, (group, resource, verb) in scoped:
            name, _, sub = resource.partition("/")
            attributes = {"group": group, "resource": name, "subresource": sub, "verb": verb}
            attributes["namespace"] = namespace or ""
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {"user": username, "resourceAttributes": attributes},
            }
            path = resource_path("authorization.k8s.io/v1", "subjectaccessreviews")
            if not (await api.create(path, review))["status"].get("allowed"):
                return False
        return True

    deadline = time.monotonic() + 30
    while not await allowed():
        assert time.monotonic() < deadline, f"the rules rendered for {username} did not take effect in 30 s"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def operator(
    connection: kopf.ConnectionInfo, namespaces: list[str], peering: str
) -> AsyncIterator[None]:
    """kopf in its own thread with peering, cluster-wide or serving `namespaces`, as `torchyard operator run`
    does in the chart's Deployment (the harness's operator is cluster-wide and standalone)."""
    backend = PodBackend()
    memo = memo_for(OperatorConfig(connection=connection, namespaces=namespaces, report_grace=2.0), backend)
    options = {"clusterwide": not namespaces, "namespaces": namespaces, "standalone": False}
    registry = build_registry(backend)
    async with running_kopf(registry, memo, "operator", peering_name=peering, priority=1, **options):
        yield


async def scenario(cluster: Cluster) -> None:
    """Every path of the operator that talks to the API server, once."""
    api, ns = cluster.api, cluster.ns
    # a foreign pod holding the name of a job's pod: the operator reads it back and reports the clash
    foreign = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "clash-node-0"},
               "spec": {"containers": [{"name": "x", "image": "busybox"}]}}  # fmt: skip
    await api.create(resource_path("v1", "pods", ns), foreign)
    await cluster.create(train_job("clash", nodes=1))
    await cluster.wait_status(
        "TrainJob",
        "clash",
        lambda s: any(c.get("reason") == "ChildConflict" for c in s.get("conditions", [])),
        what="ChildConflict",
    )
    # a TestJob waiting for its TrainJob, which fails twice (gang restarts), succeeds, and is deleted (TTL)
    test = {"apiVersion": "torchyard.dev/v1alpha1", "kind": "TestJob", "metadata": {"name": "digits-eval"},
            "spec": {"image": "torchyard/trainer:0.1.0", "config": "configs/digits_mlp.py",
                     "fromTrainJob": {"name": "digits-mlp", "which": "latest"},
                     "ttlSecondsAfterFinished": 1}}  # fmt: skip
    await cluster.create(test)
    await cluster.volume_claim("runs")  # without it the scheduler holds the pods (claim not found)
    await cluster.create(train_job(ttlSecondsAfterFinished=1, workDir={"claimName": "runs"}))
    await cluster.running_pods(NODES)
    await cluster.kubelet.finish(NODES[1], 137)
    await cluster.running_pods(NODES, attempt=1)
    await cluster.kubelet.finish(NODES[1], 137)  # the second restart replaces the kept logs of the first
    await cluster.running_pods(NODES, attempt=2)
    await cluster.kubelet.finish(NODES[1], 0)
    await cluster.kubelet.finish(NODES[0], 0, termination(lastCheckpoint="/work_dir/epoch_1.pth"))
    await cluster.running_pods(["digits-eval-node-0"])
    await cluster.kubelet.finish("digits-eval-node-0", 0, termination(metrics={"accuracy/top1": 97.0}))
    for kind, name in (("TrainJob", "digits-mlp"), ("TestJob", "digits-eval")):
        await cluster.wait(lambda k=kind, n=name: _gone(cluster, k, n), timeout=30, what=f"{kind} {name} TTL")
    # the user deletes a job: the operator deletes its pods and its Service
    await api.delete(resource_path("torchyard.dev/v1alpha1", "trainjobs", ns, "clash"))
    await cluster.wait(lambda: _service_gone(cluster, "clash"), timeout=30, what="Service clash deleted")


async def _gone(cluster: Cluster, kind: str, name: str) -> bool:
    return await cluster.job(kind, name) is None


async def _service_gone(cluster: Cluster, name: str) -> bool:
    try:
        await cluster.api.get(resource_path("v1", "services", cluster.ns, name))
    except ApiError as err:
        return err.status == 404
    return False


async def record(helm: Path, tmp: Path, mode: str) -> Record:
    """Install a release's identity for `mode`, run the scenario as it, and read back what it asked for."""
    async with running_cluster() as cluster:
        release = f"rbac-{secrets.token_hex(4)}"  # its own ServiceAccount, ClusterRole and peering name
        namespaces = [] if mode == "clusterWide" else [cluster.ns]
        values: dict[str, Any] = {"replicaCount": 0, "peering": {"enabled": True, "name": release}}
        values["watch"] = {"mode": "namespaces", "namespaces": namespaces} if namespaces else {"mode": mode}
        manifests = release_manifests(helm, tmp, release, values)
        account = one(manifests, "ServiceAccount")["metadata"]["name"]
        username = f"system:serviceaccount:{RELEASE_NAMESPACE}:{account}"
        applied = yaml.safe_dump_all(manifests)
        await asyncio.to_thread(cluster.plane.kubectl, "apply", "-f", "-", input=applied)
        try:
            await rules_in_force(cluster.api, username, manifests)
            connection = cluster.plane.as_token(await operator_token(cluster.api, account))
            audit = AuditLog(cluster.plane.dir / "logs" / "audit.log", username)
            # failures are reported with the refusals, which usually explain them
            failures = []
            try:
                async with operator(connection, namespaces, release):
                    try:
                        await scenario(cluster)
                    except Exception as err:
                        failures.append(f"{type(err).__name__}: {err}")
            except AssertionError as err:  # it did not start, or did not stop (kopf retries refused calls)
                failures.append(str(err).splitlines()[0])
            events = await audit.settled()
        finally:
            delete = ("delete", "--ignore-not-found", "--wait=false", "-f", "-")
            await asyncio.to_thread(cluster.plane.kubectl, *delete, input=applied)
    calls: set[Call] = set()
    refused: dict[Call, str] = {}
    for event in events:
        call = _call(event)
        # the control plane is shared: cluster-wide, the operator also serves other sessions' namespaces,
        # where it meets their quotas and terminations; what the scenario needed is in its namespace
        if call is None or (not namespaces and call[3] not in (cluster.ns, None)):
            continue
        calls.add(call)
        status = event.get("responseStatus") or {}
        if status.get("code") == 403:
            decision = (event.get("annotations") or {}).get("authorization.k8s.io/decision")
            by = "RBAC" if decision == "forbid" else "admission"
            refused[call] = f"{by}: {status.get('message', '')}"
    assert calls, f"no request of {username} in {audit.path}: is scripts/cluster/up.sh's audit policy on?"
    return Record(cluster.ns, calls, refused, "; ".join(failures) or None)


@pytest.fixture(scope="module")
def recorded(helm, tmp_path_factory) -> dict[str, Record]:
    tmp = tmp_path_factory.mktemp("rbac")
    return {mode: asyncio.run(record(helm, tmp, mode)) for mode in ("clusterWide", "namespaces")}


def _ran_clean(what: str, record: Record) -> None:
    """Fail, with the server's reasons, when a request was refused or the scenario stopped short."""
    stopped = f"the scenario stopped: {record.failure}" if record.failure else ""
    if record.refused:
        refusals = "".join(f"\n  {c}: {message}" for c, message in sorted(record.refused.items(), key=str))
        pytest.fail(
            f"{what}: the API server refused the operator (403); the chart's RBAC "
            f"(charts/torchyard/templates/_rbac.tpl) lacks what these need:{refusals}\n{stopped}",
            pytrace=False,
        )
    if stopped:
        pytest.fail(f"{what}: {stopped}", pytrace=False)


def _compare(what: str, rendered: set[Permission], used: set[Permission]) -> None:
    missing, extra = sorted(used - rendered), sorted(rendered - used)
    if missing or extra:
        pytest.fail(
            f"{what}: the chart's RBAC (charts/torchyard/templates/_rbac.tpl) and the operator's API calls "
            f"differ\n  used but not granted: {missing}\n  granted but never used: {extra}",
            pytrace=False,
        )


def _without_peering(used: set[Permission]) -> set[Permission]:
    return {p for p in used if p[0] != "kopf.dev"}


def test_cluster_wide_rules_are_exactly_the_calls(recorded, render):
    record = recorded["clusterWide"]
    _ran_clean("clusterWide", record)
    used = {call[:3] for call in record.calls} | ADMISSION_REQUIRED
    for peering in (True, False):
        manifests = render({"watch": {"mode": "clusterWide"}, "peering": {"enabled": peering}})
        assert not find(manifests, "Role")
        expected = used if peering else _without_peering(used)
        _compare(f"clusterWide, peering={peering}", granted(find(manifests, "ClusterRole")), expected)


def test_namespaced_rules_are_exactly_the_calls(recorded, render):
    record = recorded["namespaces"]
    ns = record.namespace
    _ran_clean(f"namespace {ns}", record)
    outside = sorted(call for call in record.calls if call[3] not in (ns, None))
    assert not outside, f"serving namespace {ns}, the operator called into others: {outside}"
    # in the served namespace: the Role there; at cluster level (kopf's observation): the ClusterRole
    used = {call[:3] for call in record.calls if call[3] == ns} | ADMISSION_REQUIRED
    cluster_level = {call[:3] for call in record.calls if call[3] is None}
    for peering in (True, False):
        manifests = render(
            {"watch": {"mode": "namespaces", "namespaces": [ns]}, "peering": {"enabled": peering}}
        )
        expected = used if peering else _without_peering(used)
        _compare(
            f"namespace {ns}, peering={peering}", granted([one(manifests, "Role", namespace=ns)]), expected
        )
        cluster = granted(find(manifests, "ClusterRole"))
        _compare("cluster level, serving namespaces", cluster, cluster_level)
        assert all(verb in ("list", "watch", "get") for _, _, verb in cluster)  # read-only
    release = render({"watch": {"mode": "releaseNamespace"}})
    assert granted([one(release, "Role", namespace=RELEASE_NAMESPACE)]) == _without_peering(used)


def test_the_scenario_exercised_every_path(recorded):
    """Guards the scenario itself: each API-facing path of the operator showed up in the record."""
    record = recorded["namespaces"]
    used = {call[:3] for call in record.calls}
    stopped = f" (the scenario stopped: {record.failure})" if record.failure else ""
    for permission in [
        ("", "pods", "get"), ("", "pods", "delete"), ("", "services", "get"), ("", "services", "delete"),
        ("", "events", "create"), ("torchyard.dev", "trainjobs", "delete"),
        ("torchyard.dev", "testjobs", "delete"), ("torchyard.dev", "testjobs/status", "patch"),
        ("kopf.dev", "kopfpeerings", "patch"),
        # kopf's scanning: CRDs, and the namespaces it serves by name
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"), ("", "namespaces", "watch"),
    ]:  # fmt: skip
        assert permission in used, f"the scenario never called {permission}{stopped}"
