"""Scenario-test harness on the real control plane of `make cluster` (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler of one pinned release): the operator in-process, authenticated as
the Helm chart's ServiceAccount (so the chart's RBAC is enforced), and a scripted node per test.

Each `running_cluster()` gets a namespace of its own and a Node that only its pods can land on (the real
PodNodeSelector and PodTolerationRestriction admission plugins add the node selector and the toleration to
every pod of the namespace), so tests never see each other's pods. The real scheduler binds the pods; the
scripted node (a kubelet whose containers the test ends with `finish`) reports their status.

    async with running_cluster() as cluster, running_operator(cluster) as op:
        await cluster.create(job_dict)
        await cluster.kubelet.finish("digits-mlp-node-1", exit_code=1)
        await cluster.wait_phase("TrainJob", "digits-mlp", "Restarting")
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from torchyard.operator.control.handlers import build_registry, memo_for
from torchyard.operator.control.kubeapi import KubeApi, job_path, list_watch, resource_path
from torchyard.operator.control.loop import OperatorConfig
from torchyard.operator.dev.local_cluster import LocalControlPlane
from torchyard.operator.dev.node import NodeHeartbeat, node_manifest, rfc3339
from torchyard.operator.errors import ApiError
from torchyard.operator.kube.backend import PodBackend

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("TORCHYARD_CLUSTER_DIR", REPO / ".cluster"))
TOOLS = Path(os.environ.get("TORCHYARD_TOOLS", REPO / ".tools"))
RELEASE, RELEASE_NAMESPACE = "torchyard", "torchyard-system"
TEST_NODE_KEY = "torchyard.dev/test-namespace"

TRAIN = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TrainJob",
    "metadata": {"name": "digits-mlp"},
    "spec": {"image": "torchyard/trainer:0.1.0", "config": "configs/digits_mlp.py", "nodes": 2},
}


def train_job(name: str = "digits-mlp", **spec: Any) -> dict[str, Any]:
    data = copy.deepcopy(TRAIN)
    data["metadata"]["name"] = name
    data["spec"].update(spec)
    return data


def termination(status: str = "succeeded", code: int = 0, **details: Any) -> str:
    return json.dumps({"status": status, "exitCode": code, "reason": "", "message": "", **details})


def isolated_namespace(namespace: str) -> dict[str, str]:
    """Annotations that send every pod of `namespace` to the node labelled and tainted with its name (the
    PodNodeSelector and PodTolerationRestriction admission plugins add the selector and the toleration)."""
    toleration = {"key": TEST_NODE_KEY, "operator": "Equal", "value": namespace, "effect": "NoSchedule"}
    return {
        "scheduler.alpha.kubernetes.io/node-selector": f"{TEST_NODE_KEY}={namespace}",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([toleration]),
    }


@dataclass
class ControlPlane(LocalControlPlane):
    """The running control plane, and whether this test session started it."""

    started_here: bool = False

    def kubectl(self, *args: str, input: str | None = None) -> str:
        done = self.run_kubectl(*args, input=input)
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout

    def run_kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """`kubectl args...` as the admin, failing or not (`--as=USER` impersonates a user)."""
        return super().kubectl(TOOLS / "bin" / "kubectl", *args, input=input)


_control_plane: ControlPlane | None = None


def control_plane() -> ControlPlane:
    """The control plane of scripts/cluster/up.sh, started once per test session (stopped at its end by
    tests/conftest.py when this session started it) with the Helm chart installed (operator scaled to 0:
    tests run it in-process). It must be built already: `make cluster-build` (make test does it)."""
    global _control_plane
    if _control_plane is not None:
        return _control_plane
    built = subprocess.run(
        [str(REPO / "scripts/cluster/build.sh"), "--check"], capture_output=True, text=True
    )
    if built.returncode != 0:
        raise AssertionError(
            "the real Kubernetes control plane is not built: run `make cluster-build` (a cold build takes "
            f"~15 min) or `make test`, which builds it\n{built.stderr}"
        )
    up = subprocess.run(
        [str(REPO / "scripts/cluster/up.sh"), str(CLUSTER_DIR)], capture_output=True, text=True, timeout=300
    )
    if up.returncode != 0:
        raise AssertionError(f"scripts/cluster/up.sh failed:\n{up.stderr}\n{up.stdout}")
    found = LocalControlPlane.at(CLUSTER_DIR)
    plane = ControlPlane(found.dir, found.server, started_here="already running" not in up.stderr)
    # Helm installs a chart's CRDs only the first time: a control plane of an earlier session has old ones
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts/torchyard/crds"))
    helm = subprocess.run(
        [
            str(TOOLS / "bin" / "helm"),
            "upgrade",
            "--install",
            RELEASE,
            str(REPO / "charts" / "torchyard"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--set",
            "replicaCount=0",
            "--set",
            "watch.mode=clusterWide",  # each test has a namespace of its own
        ],
        env={**os.environ, "KUBECONFIG": str(CLUSTER_DIR / "admin.kubeconfig")},
        capture_output=True,
        text=True,
    )
    if helm.returncode != 0:
        raise AssertionError(f"helm install of charts/torchyard failed:\n{helm.stderr}")
    _wait_for_job_policy(plane)
    _control_plane = plane
    return plane


# A user who may create TrainJobs and nothing else: the job policy refuses everything they create.
_PROBE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: torchyard-policy-probe}
rules: [{apiGroups: [torchyard.dev], resources: [trainjobs], verbs: [create]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: torchyard-policy-probe}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: torchyard-policy-probe}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: torchyard-policy-probe}]
"""


def _wait_for_job_policy(plane: ControlPlane, timeout: float = 30) -> None:
    """Until the API server enforces the chart's job policy: a new policy and binding take a moment to reach
    its admission chain, and tests that rely on it would otherwise pass a job that should be refused."""
    plane.kubectl("apply", "-f", "-", input=_PROBE)
    probe = json.dumps(TRAIN | {"metadata": {"name": "policy-probe", "namespace": "default"}})
    deadline = time.monotonic() + timeout
    while True:
        done = plane.run_kubectl(
            "--as=torchyard-policy-probe", "create", "--dry-run=server", "-f", "-", input=probe
        )
        if "ValidatingAdmissionPolicy" in done.stderr:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the chart's job policy is not enforced after {timeout} s: {done.stderr}")
        time.sleep(0.2)


def stop_control_plane() -> None:
    """At the end of the session: stop the control plane if this session started it."""
    if _control_plane is not None and _control_plane.started_here:
        subprocess.run([str(REPO / "scripts/cluster/down.sh"), str(_control_plane.dir)], capture_output=True)


async def operator_token(api: KubeApi, account: str = RELEASE) -> str:
    """A token of the chart's ServiceAccount (TokenRequest), as its pod would get one."""
    path = resource_path("v1", "serviceaccounts", RELEASE_NAMESPACE, account, "token")
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    return (await api.create(path, request))["status"]["token"]


class Kubelet:
    """The test's node: registered and kept Ready (operator/dev/node.py); pods the scheduler binds to it
    start running at once (`auto_run`); tests end them with `finish`; deleted pods go at once, as after a
    quick exit."""

    def __init__(self, api: KubeApi, namespace: str, auto_run: bool = True) -> None:
        self.api, self.namespace, self.auto_run = api, namespace, auto_run
        self.name = namespace
        self.created: list[str] = []  # every pod bound to this node, in order (duplicates would show here)
        self._seen: set[str] = set()

    def manifest(self) -> dict[str, Any]:
        taint = {"key": TEST_NODE_KEY, "value": self.namespace, "effect": "NoSchedule"}
        return node_manifest(self.name, {TEST_NODE_KEY: self.namespace}, [taint])

    async def run(self) -> None:
        path = resource_path("v1", "pods", self.namespace)
        await list_watch(self.api, path, self._event, fieldSelector=f"spec.nodeName={self.name}")

    async def _event(self, type_: str, pod: dict[str, Any]) -> None:
        if type_ in ("ADDED", "MODIFIED"):
            await self._handle(pod)

    async def _handle(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            await self.api.delete(
                resource_path("v1", "pods", self.namespace, meta["name"]), grace_seconds=0, uid=meta["uid"]
            )
            return
        if meta["uid"] in self._seen or (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            return
        self._seen.add(meta["uid"])
        self.created.append(meta["name"])
        if self.auto_run:
            await self.start(meta["name"])

    async def start(self, name: str) -> None:
        await self._status(name, {"phase": "Running", "startTime": rfc3339()})

    async def finish(self, name: str, exit_code: int = 0, message: str | None = None) -> None:
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "finishedAt": rfc3339(),
        }
        if message is not None:
            terminated["message"] = message
        try:
            pod = await self.api.get(resource_path("v1", "pods", self.namespace, name))
        except ApiError:
            return  # deleted meanwhile: a kubelet has nothing left to report
        state = {
            # as a kubelet reports it: per container, so the trainer's status is told from a sidecar's
            "name": pod["spec"]["containers"][0]["name"],
            "image": "x",
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {"terminated": terminated},
        }
        await self._status(
            name, {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [state]}
        )

    async def _status(self, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(ApiError):
            await self.api.patch(
                resource_path("v1", "pods", self.namespace, name, "status"), {"status": status}
            )


class JobsView:
    """The jobs and pods of one namespace through `api` (any API server): create, read, wait."""

    def __init__(self, info: kopf.ConnectionInfo, namespace: str) -> None:
        self.info, self.ns = info, namespace
        self.api = KubeApi(info)

    async def create(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create as kubectl does: unknown fields are refused (fieldValidation=Strict), not dropped."""
        return await self.api.create(job_path(job["kind"], self.ns), job, fieldValidation="Strict")

    async def create_or_refusal(self, job: dict[str, Any]) -> ApiError | None:
        """Create `job`; the API server's refusal (the CRD schema, admission) if it refuses."""
        try:
            await self.create(job)
        except ApiError as err:
            if 400 <= err.status < 500:
                return err
            raise
        return None

    async def job(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.api.get(job_path(kind, self.ns, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def patch_spec(self, kind: str, name: str, **spec: Any) -> None:
        await self.api.patch(job_path(kind, self.ns, name), {"spec": spec})

    async def pods(self) -> dict[str, dict[str, Any]]:
        items = (await self.api.get(resource_path("v1", "pods", self.ns)))["items"]
        return {pod["metadata"]["name"]: pod for pod in items}

    async def events(self, name: str) -> list[dict[str, Any]]:
        """The events about object `name`, in the order the server stored them."""
        items = (await self.api.get(resource_path("v1", "events", self.ns)))["items"]
        about = [e for e in items if e["involvedObject"]["name"] == name]
        return sorted(about, key=lambda e: int(e["metadata"]["resourceVersion"]))

    async def wait(self, check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result is not None and result is not False:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
            await asyncio.sleep(0.1)

    async def wait_status(
        self, kind: str, name: str, predicate: Callable[[dict], bool], timeout: float = 30, what: str = ""
    ) -> dict[str, Any]:
        async def check() -> dict | None:
            job = await self.job(kind, name)
            status = (job or {}).get("status") or {}
            return status if predicate(status) else None

        return await self.wait(check, timeout, what)

    async def wait_phase(self, kind: str, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        return await self.wait_status(
            kind, name, lambda s: s.get("phase") == phase, timeout, f"phase {phase}"
        )

    async def wait_pods(self, predicate: Callable[[dict], bool], timeout: float = 30, what: str = "") -> dict:
        async def check() -> dict | None:
            pods = await self.pods()
            return pods if predicate(pods) else None

        return await self.wait(check, timeout, what)

    async def running_pods(self, names: list[str], attempt: int = 0) -> dict:
        def ok(pods: dict) -> bool:
            return all(
                name in pods
                and pods[name]["status"].get("phase") == "Running"
                and pods[name]["metadata"]["labels"].get("torchyard.dev/attempt") == str(attempt)
                for name in names
            )

        return await self.wait_pods(ok, what=f"{names} running in attempt {attempt}")

class Cluster(JobsView):
    """One test's view of the real control plane: its namespace, an admin client, its node."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        super().__init__(plane.admin(), namespace)
        self.plane = plane
        self.kubelet = Kubelet(self.api, namespace)
        self.created: list[str] = []  # every pod created in the namespace (seen by a watch), in order
        self.volumes: list[str] = []  # PersistentVolumes made for the namespace's claims

    async def volume_claim(self, name: str) -> None:
        """A PersistentVolumeClaim bound to a PersistentVolume made for it (a folder on this host)."""
        volume = f"{self.ns}-{name}"
        await self.api.create(
            resource_path("v1", "persistentvolumes"),
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "hostPath": {"path": f"/tmp/torchyard-tests/{volume}"},
                    "claimRef": {"namespace": self.ns, "name": name},
                },
            },
        )
        self.volumes.append(volume)
        await self.api.create(
            resource_path("v1", "persistentvolumeclaims", self.ns),
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": volume,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )

    async def watch_creations(self) -> None:
        seen: set[str] = set()

        async def note(type_: str, pod: dict[str, Any]) -> None:
            if type_ == "ADDED" and pod["metadata"]["uid"] not in seen:
                seen.add(pod["metadata"]["uid"])
                self.created.append(pod["metadata"]["name"])

        await list_watch(self.api, resource_path("v1", "pods", self.ns), note)

    async def setup(self) -> None:
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.ns, "annotations": isolated_namespace(self.ns)},
        }
        await self.api.create(resource_path("v1", "namespaces"), namespace)

        async def has_default_account() -> bool:  # pods are refused until the controller manager made it
            try:
                return bool(await self.api.get(resource_path("v1", "serviceaccounts", self.ns, "default")))
            except ApiError:
                return False

        await self.wait(has_default_account, 30, "the namespace's default ServiceAccount")

    async def teardown(self) -> None:
        """Let the namespace go: its jobs first, their finalizers dropped (no operator serves them any more,
        and the next test's cluster-wide operator must not pick them up), then the namespace and the node
        (pod GC removes whatever was still bound to it)."""
        for kind in ("TrainJob", "TestJob"):
            for job in (await self.api.get(job_path(kind, self.ns)))["items"]:
                path = job_path(kind, self.ns, job["metadata"]["name"])
                with contextlib.suppress(ApiError):
                    await self.api.delete(path)
                    await self.api.patch(path, {"metadata": {"finalizers": None}})
        with contextlib.suppress(ApiError):
            await self.api.delete(resource_path("v1", "namespaces", None, self.ns))
        for name in [*self.volumes, self.kubelet.name]:
            with contextlib.suppress(ApiError):
                plural = "persistentvolumes" if name in self.volumes else "nodes"
                await self.api.delete(resource_path("v1", plural, None, name))


@contextlib.asynccontextmanager
async def running_cluster(kubelet: bool = True) -> AsyncIterator[Cluster]:
    plane = await asyncio.to_thread(control_plane)
    cluster = Cluster(plane, f"t-{secrets.token_hex(4)}")
    tasks: list[asyncio.Task] = []
    try:
        await cluster.setup()
        tasks.append(asyncio.create_task(cluster.watch_creations()))
        async with contextlib.AsyncExitStack() as stack:
            if kubelet:
                await stack.enter_async_context(NodeHeartbeat(cluster.api, cluster.kubelet.manifest()))
                tasks.append(asyncio.create_task(cluster.kubelet.run()))
            yield cluster
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await cluster.teardown()
        await cluster.api.close()


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, **config: Any) -> AsyncIterator[kopf.Memo]:
    """kopf in its own thread and event loop (as in its own process), logged in as the chart's
    ServiceAccount: a call the chart's RBAC does not allow fails as it would in the cluster."""
    config.setdefault("report_grace", 2.0)  # a loaded machine may take that long between two pods' reports
    connection = cluster.plane.as_token(await operator_token(cluster.api))
    backend = PodBackend()
    memo = memo_for(OperatorConfig(connection=connection, **config), backend)
    async with running_kopf(build_registry(backend), memo, name="operator"):
        yield memo


@contextlib.asynccontextmanager
async def running_kopf(
    registry: kopf.OperatorRegistry, memo: kopf.Memo, name: str, **options: Any
) -> AsyncIterator[None]:
    """Any kopf registry (the pod or the Slurm backend) running in its own thread until the block ends;
    `options` go to kopf.operator. By default cluster-wide and standalone, as the chart's default runs it.
    Tests run one at a time and each takes its jobs away when it ends (Cluster.teardown); two test
    sessions on one control plane would serve each other's jobs. (Serving one namespace needs Namespace
    list/watch, which the cluster-wide rules rightly lack: kopf then retries for ~55 s.)"""
    stop, ready = threading.Event(), threading.Event()
    options = {"clusterwide": True, "standalone": True, **options}
    operator = kopf.operator(
        registry=registry,
        settings=kopf.OperatorSettings(),
        memo=memo,
        stop_flag=stop,
        ready_flag=ready,
        **options,
    )
    thread = threading.Thread(target=asyncio.run, args=(operator,), name=name, daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 20), "the operator did not start"
    try:
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive(), "the operator did not stop"
