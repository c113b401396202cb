"""`torchyard dev-cluster`: pod -> local process rewriting (fast), and the real end-to-end runs (e2e) on the
control plane of `make cluster`: `torchyard dev-cluster` (a node) + `torchyard operator run` as processes, a
TrainJob created via the API, the real scheduler binding its pods, two torchrun "nodes" training
configs/digits_mlp.py with DDP."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from operator_harness import RELEASE, RELEASE_NAMESPACE, TEST_NODE_KEY, control_plane, isolated_namespace

from torchyard.operator.api.spec import load_job
from torchyard.operator.dev.agent import Runner
from torchyard.operator.dev.pod_process import expand, local_pod
from torchyard.operator.kube.render import render_k8s

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
        "import sys, torchyard.operator.control.handlers, torchyard.operator.dev.agent, "
        "torchyard.operator.dev.pod_process, torchyard.operator.dev.node, "
        "torchyard.operator.dev.local_cluster, "
        "torchyard.operator.cli.operator; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


class DevCluster:
    """What a user runs on the real control plane of `make cluster`, each in a namespace of its own: a
    `torchyard dev-cluster` node (pods as local processes) and `torchyard operator run` as the chart's
    ServiceAccount, as processes; jobs are created through the Kubernetes Python client as the admin."""

    def __init__(self, tmp: Path) -> None:
        import kubernetes

        self.plane = control_plane()
        self.tmp, self.ns = tmp, f"e2e-{secrets.token_hex(4)}"
        self.procs: list[subprocess.Popen] = []
        kubernetes.config.load_kube_config(str(self.plane.dir / "admin.kubeconfig"))
        self.core = kubernetes.client.CoreV1Api()
        self.api = kubernetes.client.CustomObjectsApi()
        self._namespace()
        self.kubeconfig = tmp / "operator.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(self._operator_kubeconfig()))
        self.logs = [open(tmp / "dev-cluster.log", "wb"), open(tmp / "operator.log", "wb")]  # noqa: SIM115
        admin = {**os.environ, "KUBECONFIG": str(self.plane.dir / "admin.kubeconfig")}
        self.procs.append(
            subprocess.Popen(
                [
                    TORCHYARD,
                    "dev-cluster",
                    "--node",
                    self.ns,
                    "--label",
                    f"{TEST_NODE_KEY}={self.ns}",
                    "--taint",
                    f"{TEST_NODE_KEY}={self.ns}:NoSchedule",
                    "--volumes",
                    str(tmp / "volumes"),
                    "--state",
                    str(tmp / "state"),
                    "--workdir",
                    str(REPO),
                ],
                stdout=self.logs[0],
                stderr=subprocess.STDOUT,
                env=admin,
            )
        )
        self._wait(lambda: b"is Ready" in (tmp / "dev-cluster.log").read_bytes(), 60, "the node")
        self.procs.append(
            subprocess.Popen(
                [TORCHYARD, "operator", "run"],
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                stdout=self.logs[1],
                stderr=subprocess.STDOUT,
            )
        )

    def _namespace(self) -> None:
        """The namespace, its pods sent to this test's node only, and the claim `runs` bound to a volume
        that is the folder tmp/volumes/runs (the node mounts it, as a kubelet mounts a hostPath volume)."""
        metadata = {"name": self.ns, "annotations": isolated_namespace(self.ns)}
        self.core.create_namespace({"metadata": metadata})
        accounts = self.core.list_namespaced_service_account
        self._wait(lambda: accounts(self.ns).items, 30, "the namespace's default ServiceAccount")
        folder = self.tmp / "volumes" / "runs"
        folder.mkdir(parents=True)
        self.core.create_persistent_volume(
            {
                "metadata": {"name": self.ns},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "hostPath": {"path": str(folder)},
                    "claimRef": {"namespace": self.ns, "name": "runs"},
                },
            }
        )
        self.core.create_namespaced_persistent_volume_claim(
            self.ns,
            {
                "metadata": {"name": "runs"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": self.ns,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )

    def _operator_kubeconfig(self) -> dict:
        token = self.core.create_namespaced_service_account_token(
            RELEASE, RELEASE_NAMESPACE, {"spec": {"expirationSeconds": 7200}}
        ).status.token
        cluster = {"server": self.plane.server, "certificate-authority": str(self.plane.dir / "pki/ca.crt")}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator"}}],
            "current-context": "c",
        }

    def create(self, job: dict) -> None:
        self.api.create_namespaced_custom_object("torchyard.dev", "v1alpha1", self.ns, "trainjobs", job)

    def status(self, name: str) -> dict:
        job = self.api.get_namespaced_custom_object("torchyard.dev", "v1alpha1", self.ns, "trainjobs", name)
        return job.get("status") or {}

    def events(self, reasons: tuple[str, ...]) -> list[str]:
        return [e.message for e in self.core.list_namespaced_event(self.ns).items if e.reason in reasons]

    def pid(self, pod: str) -> int:
        return int((self.tmp / "state" / self.ns / f"{pod}.pid").read_text())

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
        for kind in ("trainjobs", "testjobs"):
            group = ("torchyard.dev", "v1alpha1", self.ns, kind)
            for job in self.api.list_namespaced_custom_object(*group)["items"]:
                self.api.delete_namespaced_custom_object(*group, job["metadata"]["name"])
                unblock = {"metadata": {"finalizers": None}}  # no operator runs any more
                self.api.patch_namespaced_custom_object(*group, job["metadata"]["name"], unblock)
        self.core.delete_namespace(self.ns)
        self.core.delete_persistent_volume(self.ns)
        self.core.delete_node(self.ns)


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
