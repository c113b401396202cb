"""The API connection breaks during a job (kopf in-process, a scripted kubelet):

- the server answers 500 to everything the operator does (its job reads, watches and status writes, pod
  creates and deletes) for a few seconds, right when a node fails and the gang must restart: a real API
  server cannot be made to do that on cue, so this one runs against the emulator;
- the real control plane's kube-apiserver is killed and the control plane started again (connection
  refused meanwhile).

Either way the operator logs the failures, retries with a growing delay, and converges: the restart happens
once, no pod is created twice, and the job succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import time

import aiohttp.test_utils
import aiohttp.web_runner
import aiohttp.web_server
import attrs
import kmock
import pytest

from ..operator.emulator import Emulator
from ..operator.emulator_harness import NS, Cluster, running_operator
from ..operator.operator_harness import REPO, termination, train_job
from ..operator.operator_harness import running_cluster as real_cluster
from ..operator.operator_harness import running_operator as real_operator

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
async def cluster_on(emulator: Emulator):
    async with kmock.Server(emulator, server_cls=QuickServer) as server:
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


async def test_the_real_control_plane_killed_and_restarted_mid_job(caplog):
    """kube-apiserver SIGKILLed while a job runs; scripts/cluster/up.sh then restarts the control plane (on
    the same ports) as an admin would. The operator, which never stopped, converges without a restart."""
    caplog.set_level(logging.WARNING)
    async with real_cluster() as cluster, real_operator(cluster):
        await cluster.create(train_job())
        await cluster.running_pods(NODES, attempt=0)
        apiserver = int((cluster.plane.dir / "run/kube-apiserver.pid").read_text())
        os.kill(apiserver, signal.SIGKILL)
        await asyncio.sleep(3)  # the server is down: every request of the operator is refused
        up = await asyncio.to_thread(
            subprocess.run, [str(REPO / "scripts/cluster/up.sh"), str(cluster.plane.dir)], capture_output=True
        )
        assert up.returncode == 0, up.stderr.decode()[-2000:]
        await cluster.kubelet.finish(NODES[1], 0)
        await cluster.kubelet.finish(NODES[0], 0, termination())
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded", timeout=120)

    assert status["restarts"] == 0
    assert sorted(cluster.created) == NODES  # each pod created once
    assert any(
        "connect" in r.getMessage().lower() or "refused" in r.getMessage().lower()
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ), [r.getMessage() for r in caplog.records]
