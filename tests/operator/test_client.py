"""The Python client and `torchyard submit | status | list | cancel` on the real control plane, as a user
runs them: through an admin kubeconfig, the operator in-process, the scripted node ending the pods. The logs
of real containers are read in tests/cluster (a kubelet serves them)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import pytest
import yaml

from torchyard.operator.client import STARTED, Client
from torchyard.operator.errors import ApiError, ClientError

from .operator_harness import running_cluster, running_operator, termination, train_job

pytestmark = pytest.mark.asyncio
NODES = ["digits-mlp-node-0", "digits-mlp-node-1"]


def torchyard(cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(cluster.plane.dir / "admin.kubeconfig")}
    return subprocess.run([sys.executable, "-m", "torchyard.operator.cli.main", *args, "-n", cluster.ns],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


async def test_the_client_submits_waits_lists_and_cancels():
    async with running_cluster() as cluster, running_operator(cluster):
        client = Client(cluster.ns, str(cluster.plane.dir / "admin.kubeconfig"))
        assert await asyncio.to_thread(client.submit, train_job()) == ["digits-mlp"]
        started = await asyncio.to_thread(client.wait, "digits-mlp", None, 60, 0.2, STARTED)
        assert started.phase.value == "Running"
        await cluster.running_pods(NODES)
        await cluster.kubelet.finish(NODES[1], 0)
        await cluster.kubelet.finish(NODES[0], 0, termination(metrics={"accuracy/top1": 97.7}, epoch=5))
        done = await asyncio.to_thread(client.wait, "digits-mlp", timeout=60, poll_seconds=0.2)
        assert (done.phase.value, done.metrics, done.epoch) == ("Succeeded", {"accuracy/top1": 97.7}, 5)
        [row] = await asyncio.to_thread(client.list)
        assert (row.kind, row.name, row.phase, row.nodes) == ("TrainJob", "digits-mlp", "Succeeded", 2)
        with pytest.raises(ClientError, match="TrainJob digits-mlp has nodes 0-1, not node 2"):
            await asyncio.to_thread(client.logs, "digits-mlp", 2)
        with pytest.raises(ClientError, match="digits-mlp has not been restarted after a failure"):
            await asyncio.to_thread(client.previous_logs, "digits-mlp", 1)
        await asyncio.to_thread(client.cancel, "digits-mlp")
        await cluster.wait(lambda: _gone(client), what="the job deleted")


async def _gone(client: Client) -> bool:
    try:
        await asyncio.to_thread(client.get, "digits-mlp")
    except ApiError as err:
        return err.status == 404
    return False


async def test_the_commands_say_what_happened_in_one_line(tmp_path):
    async with running_cluster() as cluster, running_operator(cluster):
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(train_job()))
        submitted = await asyncio.to_thread(torchyard, cluster, "submit", str(tmp_path / "job.yaml"))
        assert submitted.returncode == 0 and submitted.stdout == "digits-mlp\n", submitted.stderr
        await cluster.running_pods(NODES)
        status = await asyncio.to_thread(torchyard, cluster, "status", "digits-mlp")
        assert status.returncode == 0 and re.search(r"^phase +Running$", status.stdout, re.M), status.stdout
        listed = await asyncio.to_thread(torchyard, cluster, "list")
        assert listed.stdout.splitlines()[1].split()[:4] == ["TrainJob", "digits-mlp", "Running", "2"]
        bad_node = await asyncio.to_thread(torchyard, cluster, "logs", "digits-mlp", "--node", "5")
        assert (bad_node.returncode, bad_node.stderr) == (
            2, "torchyard logs: TrainJob digits-mlp has nodes 0-1, not node 5\n")
        both = await asyncio.to_thread(torchyard, cluster, "logs", "digits-mlp", "--previous", "--follow")
        assert (both.returncode, both.stderr) == (
            2, "torchyard logs: --previous prints what was kept of a finished attempt: drop --follow\n")
        cancelled = await asyncio.to_thread(torchyard, cluster, "cancel", "digits-mlp")
        assert cancelled.returncode == 0, cancelled.stderr
        missing = await asyncio.to_thread(torchyard, cluster, "status", "no-such-job")
        assert missing.returncode == 1 and missing.stderr == (
            f"torchyard status: no TrainJob or TestJob 'no-such-job' in namespace {cluster.ns}; "
            "`torchyard list` shows its jobs\n")
