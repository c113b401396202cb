"""`torchyard dev-cluster`: pod -> local process rewriting (fast), and the real end-to-end runs (e2e) on the
control plane of `make cluster`: `torchyard dev-cluster` (a node) + `torchyard operator run` as processes, a
TrainJob created via the API, the real scheduler binding its pods, two torchrun "nodes" training
configs/digits_mlp.py with DDP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from torchyard.operator.api.spec import load_job
from torchyard.operator.dev.agent import Runner
from torchyard.operator.dev.pod_process import expand, local_pod
from torchyard.operator.kube.render import render_k8s

from ..operator_harness import control_plane
from .agent_harness import REPO, TORCHYARD, DevCluster, example


def test_local_pod_resolves_the_service_name_ports_and_volumes(tmp_path):
    job = load_job(yaml.safe_load((REPO / "examples/trainjob.yaml").read_text()))
    pod = render_k8s(job)[2]  # node 1
    ports: dict = {}
    local = local_pod(pod, tmp_path / "volumes", tmp_path / "state", ports)
    port = str(ports["default", "digits-mlp", 29500])
    assert "--master-addr=127.0.0.1" in local.argv and f"--master-port={port}" in local.argv
    assert local.env["MASTER_ADDR"] == local.env["PET_MASTER_ADDR"] == "127.0.0.1"
    assert local.env["MASTER_PORT"] == local.env["PET_MASTER_PORT"] == port
    work_dir = str((tmp_path / "volumes/runs/digits-mlp").resolve())
    assert local.argv[local.argv.index("--work-dir") + 1] == work_dir
    assert local.directories == [tmp_path / "volumes/runs/digits-mlp"]
    again = local_pod(render_k8s(job)[1], tmp_path / "volumes", tmp_path / "state", ports)
    assert f"--master-port={port}" in again.argv  # every node of a job agrees on the port


def test_expand_follows_kubernetes():
    assert expand("$(A)-$$(A)-$(B)", {"A": "x"}) == "x-$(A)-$(B)"


@pytest.fixture
def dev_cluster(tmp_path):
    cluster = DevCluster(tmp_path)
    yield cluster
    cluster.close()


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_two_node_ddp_training_through_the_operator(dev_cluster):
    dev_cluster.create(example())
    status = dev_cluster.wait_phase("digits-mlp", {"Succeeded", "Failed"}, timeout=600)
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 0 and status["epoch"] == 5
    assert status["metrics"]["accuracy/top1"] > 50
    assert status["lastCheckpoint"].endswith("epoch_5.pth") and Path(status["lastCheckpoint"]).exists()


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_sigkill_of_one_node_restarts_the_gang_which_resumes(dev_cluster, tmp_path):
    dev_cluster.create(example(cfgOptions=["optim_wrapper.optimizer.lr=0.05", "train_cfg.max_epochs=20"]))
    work_dir = tmp_path / "volumes/runs/digits-mlp"
    dev_cluster._wait(lambda: (work_dir / "last_checkpoint").exists(), 600, "a first checkpoint")
    # node 1's torchrun; the node agent then kills the rest of its group, as when a container's PID 1 dies
    os.kill(dev_cluster.pid("digits-mlp-node-1"), signal.SIGKILL)
    status = dev_cluster.wait_phase("digits-mlp", {"Succeeded", "Failed"}, timeout=900)
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 1 and status["epoch"] == 20
    restarting = next(c for c in status["conditions"] if c["type"] == "Restarting")
    assert restarting["status"] == "False"
    restarts = dev_cluster.events(("PodFailed", "PodLost"))
    assert len(restarts) == 1 and "restart 1 of 3" in restarts[0], restarts
    log = (work_dir / "train.log").read_text()
    assert "resumed from" in log, log[-2000:]


def test_a_node_the_api_server_refuses_stops_with_the_reason(tmp_path):
    """NodeRestriction: the credentials of node dev-cluster may not register another node; the agent says
    so and exits instead of running on without a node."""
    plane = control_plane()
    env = {**os.environ, "KUBECONFIG": str(plane.dir / "node-dev-cluster.kubeconfig")}
    done = subprocess.run(
        [TORCHYARD, "dev-cluster", "--node", "not-dev-cluster", "--state", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "403" in last and "not-dev-cluster" in last, done.stderr[-2000:]


@pytest.mark.asyncio
async def test_the_pod_watch_takes_bookmarks_and_relists_after_410(tmp_path):
    """A real server sends BOOKMARK events (only a resourceVersion) and ERROR 410 when its history is
    compacted; the first used to crash the watch (KeyError: 'name')."""
    events = [
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "7"}}},
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"}},
    ]

    class Api:
        lists, resumed_from = 0, []

        async def request(self, method, path, **params):
            self.lists += 1
            return {"metadata": {"resourceVersion": str(self.lists)}, "items": []}

        async def watch(self, path, version, **selectors):
            self.resumed_from.append(version)
            if version != "1":
                raise asyncio.CancelledError  # the test ends here
            for event in events:
                yield event

    api = Api()
    runner = Runner(api, tmp_path, tmp_path)
    with pytest.raises(asyncio.CancelledError):
        await runner.run()
    assert api.lists == 2 and api.resumed_from == ["1", "2"]  # listed, watched, relisted after the 410
    assert not runner.failed.done() and not runner.procs
