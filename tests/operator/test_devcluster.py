"""`torchyard dev-cluster`: pod -> local process rewriting (fast), and the real end-to-end runs (e2e):
`torchyard dev-cluster --emulator` + `torchyard operator run` as processes, a TrainJob created via the API,
two torchrun "nodes" training configs/digits_mlp.py with DDP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from torchyard.operator.api import load_job
from torchyard.operator.devcluster import expand, local_pod
from torchyard.operator.render_k8s import render_k8s

REPO = Path(__file__).resolve().parents[2]
TORCHYARD = str(Path(sys.executable).parent / "torchyard")


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


def test_operator_modules_never_import_torch():
    code = (
        "import sys, torchyard.operator.handlers, torchyard.operator.devcluster, "
        "torchyard.operator.emulator, "
        "torchyard.operator.cli_operator; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevCluster:
    """The two processes a user starts, plus a kubectl-like client."""

    def __init__(self, tmp: Path) -> None:
        import kubernetes

        self.tmp, self.kubeconfig = tmp, tmp / "kubeconfig"
        port = _free_port()
        self.logs = [open(tmp / "dev-cluster.log", "wb"), open(tmp / "operator.log", "wb")]  # noqa: SIM115
        self.procs = [
            subprocess.Popen(
                [
                    TORCHYARD,
                    "dev-cluster",
                    "--emulator",
                    "--port",
                    str(port),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--volumes",
                    str(tmp / "volumes"),
                    "--state",
                    str(tmp / "state"),
                    "--workdir",
                    str(REPO),
                ],
                stdout=self.logs[0],
                stderr=subprocess.STDOUT,
            )
        ]
        self._wait(lambda: self.kubeconfig.exists(), 60, "the emulator")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.procs.append(
            subprocess.Popen(
                [TORCHYARD, "operator", "run"], env=env, stdout=self.logs[1], stderr=subprocess.STDOUT
            )
        )
        kubernetes.config.load_kube_config(str(self.kubeconfig))
        self.api = kubernetes.client.CustomObjectsApi()

    def create(self, job: dict) -> None:
        self.api.create_namespaced_custom_object("torchyard.dev", "v1alpha1", "default", "trainjobs", job)

    def status(self, name: str) -> dict:
        job = self.api.get_namespaced_custom_object("torchyard.dev", "v1alpha1", "default", "trainjobs", name)
        return job.get("status") or {}

    def wait_phase(self, name: str, phases: set[str], timeout: float) -> dict:
        return self._wait(
            lambda: self.status(name) if self.status(name).get("phase") in phases else None,
            timeout,
            f"{name} in {phases}",
        )

    def _wait(self, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            if any(proc.poll() is not None for proc in self.procs):
                break
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; logs in {self.tmp}:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join((self.tmp / n).read_text()[-3000:] for n in ("dev-cluster.log", "operator.log"))

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()


@pytest.fixture
def dev_cluster(tmp_path):
    cluster = DevCluster(tmp_path)
    yield cluster
    cluster.close()


def _example(**spec) -> dict:
    job = yaml.safe_load((REPO / "examples/trainjob.yaml").read_text())
    job["spec"].update(spec)
    return job


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_two_node_ddp_training_through_the_operator(dev_cluster):
    dev_cluster.create(_example())
    status = dev_cluster.wait_phase("digits-mlp", {"Succeeded", "Failed"}, timeout=600)
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 0 and status["epoch"] == 5
    assert status["metrics"]["accuracy/top1"] > 50
    assert status["lastCheckpoint"].endswith("epoch_5.pth") and Path(status["lastCheckpoint"]).exists()


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_sigkill_of_one_node_restarts_the_gang_which_resumes(dev_cluster, tmp_path):
    dev_cluster.create(_example(cfgOptions=["optim_wrapper.optimizer.lr=0.05", "train_cfg.max_epochs=20"]))
    work_dir = tmp_path / "volumes/runs/digits-mlp"
    dev_cluster._wait(lambda: (work_dir / "last_checkpoint").exists(), 600, "a first checkpoint")
    pid = int((tmp_path / "state/default/digits-mlp-node-1.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # node 1's torchrun; the runner then kills the rest of its group
    status = dev_cluster.wait_phase("digits-mlp", {"Succeeded", "Failed"}, timeout=900)
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 1 and status["epoch"] == 20
    restarting = next(c for c in status["conditions"] if c["type"] == "Restarting")
    assert restarting["status"] == "False"
    import kubernetes

    events = kubernetes.client.CoreV1Api().list_namespaced_event("default").items
    restarts = [e.message for e in events if e.reason in ("PodFailed", "PodLost")]
    assert len(restarts) == 1 and "restart 1 of 3" in restarts[0], restarts
    log = (work_dir / "train.log").read_text()
    assert "resumed from" in log, log[-2000:]
