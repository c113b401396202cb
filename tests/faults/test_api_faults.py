"""The API connection breaks during a job (kopf in-process against the emulator, a simulated kubelet):

- the server answers 500 to everything the operator does (its job reads, watches and status writes, pod
  creates and deletes) for a few seconds, right when a node fails and the gang must restart;
- the emulator's server is stopped and started again on the same port (connection refused meanwhile).

Either way the operator logs the failures, retries with a growing delay, and converges: the restart happens
once, no pod is created twice, and the job succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

import aiohttp.test_utils
import aiohttp.web_runner
import aiohttp.web_server
import attrs
import kmock
import pytest
from emulator_harness import NS, Cluster, running_operator, termination, train_job

from torchyard.operator.emulator import Emulator

pytestmark = pytest.mark.asyncio
NODES = ["digits-mlp-node-0", "digits-mlp-node-1"]


@attrs.define(kw_only=True)
class FlakyEmulator(Emulator):
    """Answers 500 to the operator's requests while `failing_until` (time.monotonic) is in the future."""

    failing_until: float = 0.0
    failed: int = 0

    async def _handle_k8s(self, request):
        resource = request.resource
        operators = resource is not None and (
            resource.plural == "trainjobs"
            or (resource.plural == "pods" and request.action in (kmock.action.CREATE, kmock.action.DELETE))
        )
        if operators and time.monotonic() < self.failing_until:
            self.failed += 1
            raise kmock.KubernetesError(status=500, reason="InternalError", message="injected by the test")
        return await super()._handle_k8s(request)


class QuickServer(aiohttp.test_utils.RawTestServer):
    """Stops at once: aiohttp's test server otherwise waits 60 s for the operator's open watches to end."""

    async def _make_runner(self, debug: bool = True, **kwargs):
        server = aiohttp.web_server.Server(self._handler, loop=self._loop, debug=debug, **kwargs)
        return aiohttp.web_runner.ServerRunner(server, debug=debug, shutdown_timeout=0.5, **kwargs)


@contextlib.asynccontextmanager
async def cluster_on(emulator: Emulator, port: int | None = None):
    async with kmock.Server(emulator, port=port, server_cls=QuickServer) as server:
        cluster = Cluster(emulator, str(server.url).rstrip("/"))
        kubelet = asyncio.create_task(cluster.kubelet.run())
        try:
            yield cluster
        finally:
            kubelet.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await kubelet
            await cluster.api.close()


def _retry_delays(caplog) -> list[float]:
    return [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"reconcile failed, retrying in ([\d.]+) s", r.getMessage()))
    ]


async def test_500s_during_a_gang_restart_are_retried_with_backoff(caplog):
    caplog.set_level(logging.WARNING)
    emulator = FlakyEmulator()
    async with emulator, cluster_on(emulator) as cluster, running_operator(cluster):
        await cluster.create(train_job())
        await cluster.running_pods(NODES, attempt=0)
        emulator.failing_until = time.monotonic() + 4
        await cluster.kubelet.finish(NODES[1], exit_code=1)  # a node dies: the operator must restart the gang
        await asyncio.sleep(4)
        status = await cluster.wait_status("TrainJob", "digits-mlp", lambda s: s.get("restarts") == 1, 30)
        await cluster.running_pods(NODES, attempt=1)
        await cluster.kubelet.finish(NODES[1], 0)
        await cluster.kubelet.finish(NODES[0], 0, termination())
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded", timeout=30)

    assert emulator.failed > 0
    assert status["restarts"] == 1
    for pod in NODES:  # once per attempt, never twice
        assert emulator.writes["CREATE", "pods", NS, pod] == 2, emulator.writes
    delays = _retry_delays(caplog)
    assert len(delays) >= 3 and delays[:3] == sorted(delays[:3]) and delays[0] < delays[2], delays


async def test_api_server_stopped_and_restarted_mid_job(caplog, unused_tcp_port):
    caplog.set_level(logging.WARNING)
    emulator = Emulator()
    async with emulator:
        async with cluster_on(emulator, unused_tcp_port) as cluster:
            # One operator across both servers: it is started on the first and must outlive its death.
            operator = running_operator(cluster)
            await operator.__aenter__()
            try:
                await cluster.create(train_job())
                await cluster.running_pods(NODES, attempt=0)
            except BaseException:
                await operator.__aexit__(None, None, None)
                raise
        try:
            await asyncio.sleep(3)  # the server is down: every request of the operator is refused
            async with cluster_on(emulator, unused_tcp_port) as cluster:
                await cluster.kubelet.finish(NODES[1], 0)
                await cluster.kubelet.finish(NODES[0], 0, termination())
                status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded", timeout=60)
        finally:
            await operator.__aexit__(None, None, None)

    assert status["restarts"] == 0
    for pod in NODES:
        assert emulator.writes["CREATE", "pods", NS, pod] == 1, emulator.writes
    assert any(
        "connect" in r.getMessage().lower() or "refused" in r.getMessage().lower()
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ), [r.getMessage() for r in caplog.records]
