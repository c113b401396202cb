"""The kmock-based API emulator harness, kept only where a test must change what the server does: injected
500s (tests/faults/test_api_faults.py). Every other scenario runs on the real control plane
(operator_harness.py, whose job views and kopf runner this reuses).

    async with running_cluster() as cluster, running_operator(cluster) as op:
        await cluster.create(job_dict)
        await cluster.kubelet.finish("digits-mlp-node-1", exit_code=1)
        await cluster.wait_phase("TrainJob", "digits-mlp", "Restarting")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock
import kopf

from torchyard.operator.control.handlers import build_registry, memo_for
from torchyard.operator.control.kubeapi import KubeApi, resource_path
from torchyard.operator.control.loop import OperatorConfig
from torchyard.operator.errors import ApiError
from torchyard.operator.kube.backend import PodBackend

from .emulator import Emulator, now_rfc3339
from .operator_harness import JobsView, running_kopf

NS = "default"
PODS = resource_path("v1", "pods", NS)


class Kubelet:
    """Drives pod phases like a kubelet would: new pods run at once; tests end them with `finish`."""

    def __init__(self, api: KubeApi, auto_run: bool = True) -> None:
        self.api, self.auto_run = api, auto_run
        self.created: list[str] = []  # every pod creation seen, in order (duplicates would show here)

    async def run(self) -> None:
        async for event in self.api.watch(PODS):
            pod = event["object"]
            if event["type"] == "ADDED" and (pod.get("status") or {}).get("phase") == "Pending":
                self.created.append(pod["metadata"]["name"])
                if self.auto_run:
                    await self.start(pod["metadata"]["name"])

    async def start(self, name: str) -> None:
        await self._status(name, {"phase": "Running", "startTime": now_rfc3339()})

    async def finish(self, name: str, exit_code: int = 0, message: str | None = None) -> None:
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "finishedAt": now_rfc3339(),
        }
        if message is not None:
            terminated["message"] = message
        state = {"name": "trainjob", "ready": False, "state": {"terminated": terminated}}
        await self._status(
            name, {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [state]}
        )

    async def _status(self, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(ApiError):
            await self.api.patch(resource_path("v1", "pods", NS, name, "status"), {"status": status})


class Cluster(JobsView):
    """The emulator's namespace `default`, with a kubelet that starts every new pod at once."""

    def __init__(self, emulator: Emulator, url: str) -> None:
        super().__init__(kopf.ConnectionInfo(server=url, insecure=True), NS)
        self.emulator, self.url = emulator, url
        self.kubelet = Kubelet(self.api)


@contextlib.asynccontextmanager
async def running_cluster(kubelet: bool = True) -> AsyncIterator[Cluster]:
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        cluster = Cluster(emulator, str(server.url).rstrip("/"))
        task = asyncio.create_task(cluster.kubelet.run()) if kubelet else None
        try:
            yield cluster
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await cluster.api.close()


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, **config: Any) -> AsyncIterator[kopf.Memo]:
    """kopf in its own thread and event loop (as in its own process), talking to the emulator."""
    config.setdefault("report_grace", 0.3)
    backend = PodBackend()
    memo = memo_for(OperatorConfig(connection=cluster.info, **config), backend)
    async with running_kopf(build_registry(backend), memo, name="operator"):
        yield memo
