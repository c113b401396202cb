"""A Node as a kubelet keeps it: registered once, its Lease renewed and its Ready condition fresh.

The node lifecycle controller of a real control plane marks a Node whose Lease stops being renewed
unreachable (after --node-monitor-grace-period, 40-50 s) and taints it, and pod GC force-deletes pods bound
to a Node that does not exist: whatever runs pods (the dev-cluster's processes, the tests' scripted node)
keeps one of these beating for as long as it runs.

    async with NodeHeartbeat(api, node_manifest("dev-cluster"), capacity):
        ...   # pods bound to "dev-cluster" by the scheduler are ours to run
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import platform
from typing import Any

import aiohttp

from torchyard.operator.control.kubeapi import KubeApi, resource_path
from torchyard.operator.errors import ApiError

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_SECONDS = 10  # what a kubelet does: a quarter of the lease
STATUS_SECONDS = 60
# Processes share the host with no limits, so the node offers more than the machine has; the scheduler
# still refuses a pod asking for more than this.
DEFAULT_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "110"}
AGENT_LABEL = "torchyard.dev/node-agent"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
logger = logging.getLogger("torchyard.node")


def rfc3339(micro: bool = False) -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def node_manifest(
    name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """The Node object (pure): the standard well-known labels, `labels`, and `taints`."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": ARCH,
                AGENT_LABEL: "processes",
                **(labels or {}),
            },
        },
        "spec": {"taints": taints} if taints else {},
    }


def parse_taint(text: str) -> dict[str, str]:
    """`key=value:Effect` or `key:Effect`, as `kubectl taint` writes them."""
    spec, _, effect = text.rpartition(":")
    key, _, value = spec.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(
            f"taint {text!r} must be KEY[=VALUE]:EFFECT, EFFECT one of NoSchedule, "
            "PreferNoSchedule, NoExecute"
        )
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


def node_status(capacity: dict[str, str], now: str) -> dict[str, Any]:
    """The status a healthy node reports (pure)."""

    def condition(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("Ready", "True", "KubeletReady", "torchyard node agent is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": "localhost"},
        ],
        "nodeInfo": {
            "architecture": ARCH,
            "operatingSystem": "linux",
            "kubeletVersion": "torchyard-node-agent",
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "processes://local",
            "kernelVersion": platform.release(),
            "osImage": platform.platform(),
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


class NodeHeartbeat:
    """Registers `manifest` (or takes over an existing Node of that name) and keeps it alive until exit.

    A failure to renew is retried at the next beat; one the API server keeps refusing (403: the
    credentials are not this node's) ends the heartbeat with an error that `failed` carries."""

    def __init__(
        self, api: KubeApi, manifest: dict[str, Any], capacity: dict[str, str] | None = None
    ) -> None:
        self.api, self.manifest = api, manifest
        self.name = manifest["metadata"]["name"]
        self.capacity = dict(capacity or DEFAULT_CAPACITY)
        self.failed: asyncio.Future[None] | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> NodeHeartbeat:
        await self.register()
        self.failed = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def register(self) -> None:
        nodes = resource_path("v1", "nodes")
        try:
            await self.api.create(nodes, self.manifest)
            logger.info(f"registered node {self.name}")
        except ApiError as err:
            if err.status != 409:
                raise
            labels = self.manifest["metadata"]["labels"]
            await self.api.patch(f"{nodes}/{self.name}", {"metadata": {"labels": labels}})
            logger.info(f"node {self.name} exists already: taking it over")
        await self.post_status()
        await self.renew_lease()

    async def post_status(self) -> None:
        path = resource_path("v1", "nodes", None, self.name, "status")
        await self.api.patch(path, {"status": node_status(self.capacity, rfc3339())})

    async def renew_lease(self) -> None:
        path = resource_path("coordination.k8s.io/v1", "leases", LEASE_NAMESPACE, self.name)
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": rfc3339(True),
        }
        try:
            await self.api.patch(path, {"spec": spec})
        except ApiError as err:
            if err.status != 404:
                raise
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name}}
            await self.api.create(path.rsplit("/", 1)[0], {**lease, "spec": spec})

    async def _beat(self) -> None:
        since_status = 0.0
        refused = 0
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            since_status += RENEW_SECONDS
            try:
                await self.renew_lease()
                if since_status >= STATUS_SECONDS:
                    await self.post_status()
                    since_status = 0.0
                refused = 0
            except ApiError as err:
                refused += 1
                logger.warning(f"node {self.name}: heartbeat refused ({err})")
                if err.status in (401, 403) and refused >= 3 and self.failed is not None:
                    self.failed.set_exception(
                        RuntimeError(f"the API server keeps refusing node {self.name}'s heartbeat: {err}")
                    )
                    return
            except (OSError, aiohttp.ClientError) as err:
                logger.warning(f"node {self.name}: heartbeat failed, retrying ({err})")
