"""The kmock-based API emulator harness, kept only where a test must change what the server does: injected
500s and a server stopped mid-job (tests/faults/test_api_faults.py). Every other scenario runs on the real
control plane (operator_harness.py).

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
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf
from emulator import Emulator, now_rfc3339

from torchyard.operator.controller import OperatorConfig, job_path
from torchyard.operator.handlers import build_registry, memo_for
from torchyard.operator.kube import ApiError, KubeApi, resource_path

NS = "default"
PODS = resource_path("v1", "pods", NS)

TRAIN = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TrainJob",
    "metadata": {"name": "digits-mlp", "namespace": NS},
    "spec": {"image": "torchyard/trainer:0.1.0", "config": "configs/digits_mlp.py", "nodes": 2},
}


def train_job(name: str = "digits-mlp", **spec: Any) -> dict[str, Any]:
    data = copy.deepcopy(TRAIN)
    data["metadata"]["name"] = name
    data["spec"].update(spec)
    return data


def termination(status: str = "succeeded", code: int = 0, **details: Any) -> str:
    return json.dumps({"status": status, "exitCode": code, "reason": "", "message": "", **details})


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


class Cluster:
    def __init__(self, emulator: Emulator, url: str) -> None:
        self.emulator, self.url = emulator, url
        self.info = kopf.ConnectionInfo(server=url, insecure=True)
        self.api = KubeApi(self.info)
        self.kubelet = Kubelet(self.api)

    async def create(self, job: dict[str, Any]) -> dict[str, Any]:
        return await self.api.create(job_path(job["kind"], NS), job)

    async def job(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.api.get(job_path(kind, NS, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def patch_spec(self, kind: str, name: str, **spec: Any) -> None:
        await self.api.patch(job_path(kind, NS, name), {"spec": spec})

    async def pods(self) -> dict[str, dict[str, Any]]:
        items = (await self.api.get(PODS))["items"]
        return {pod["metadata"]["name"]: pod for pod in items}

    async def wait(self, check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result is not None and result is not False:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
            await asyncio.sleep(0.05)

    async def wait_status(
        self, kind: str, name: str, predicate: Callable[[dict], bool], timeout: float = 20, what: str = ""
    ) -> dict[str, Any]:
        async def check() -> dict | None:
            job = await self.job(kind, name)
            status = (job or {}).get("status") or {}
            return status if predicate(status) else None

        return await self.wait(check, timeout, what)

    async def wait_phase(self, kind: str, name: str, phase: str, timeout: float = 20) -> dict[str, Any]:
        return await self.wait_status(
            kind, name, lambda s: s.get("phase") == phase, timeout, f"phase {phase}"
        )

    async def wait_pods(self, predicate: Callable[[dict], bool], timeout: float = 20, what: str = "") -> dict:
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
    memo = memo_for(OperatorConfig(connection=cluster.info, **config))
    async with running_kopf(build_registry(), memo, name="operator"):
        yield memo


@contextlib.asynccontextmanager
async def running_kopf(registry: kopf.OperatorRegistry, memo: kopf.Memo, name: str) -> AsyncIterator[None]:
    """Any kopf registry (the pod or the Slurm backend) running in its own thread until the block ends."""
    stop, ready = threading.Event(), threading.Event()
    operator = kopf.operator(
        registry=registry,
        settings=kopf.OperatorSettings(),
        clusterwide=True,
        standalone=True,
        memo=memo,
        stop_flag=stop,
        ready_flag=ready,
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
