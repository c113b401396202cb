"""The container path for real: a kubelet node on containerd (`NODE=kubelet scripts/cluster/up.sh`) running
the images of `make images`, the operator as the chart's Deployment from its image, and the examples'
TrainJob and TestJob as pods in containers: gloo across two pods that find each other through the cluster
DNS, a container killed mid-run restarting the whole gang from the last checkpoint, and the TestJob reading
that run's best checkpoint.

Its own control plane in .cluster-kubelet (the other suites keep .cluster, with process nodes); containerd's
image store is shared through the user's cache, so images imported once (by `make demo-k8s`) are not imported
again. Where scripts/cluster/can-run-containers.sh says this machine cannot run containers, every test here
is skipped with its reason, which pytest's summary (-ra) prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO / ".cluster-kubelet"
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
HELM = REPO / ".tools" / "bin" / "helm"
TRAINER_UID = 1000  # images/trainer/Dockerfile's user; operator/kube/render.py RUN_AS

pytestmark = pytest.mark.e2e


def run(*argv: str | Path, timeout: float = 900, **env: str) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})  # fmt: skip
    command = " ".join(map(str, argv))
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def kubectl(*args: str, input: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(CLUSTER_DIR / "admin.kubeconfig")}
    done = subprocess.run([str(KUBECTL), *args], input=input, capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def get(kind: str, name: str, namespace: str = "default") -> dict:
    return json.loads(kubectl("-n", namespace, "get", kind, name, "-o", "json"))


def wait_for(what: str, check, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_phase(kind: str, name: str) -> str:
    return get(kind, name).get("status", {}).get("phase", "")


def ended(kind: str, name: str) -> dict:
    wait_for(f"{kind} {name} to end", lambda: job_phase(kind, name) in ("Succeeded", "Failed"))
    job = get(kind, name)
    assert job["status"]["phase"] == "Succeeded", json.dumps(job["status"], indent=1)
    return job


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The folder behind the examples' claim `runs`, writable by the trainer image's user."""
    can = subprocess.run([str(REPO / "scripts/cluster/can-run-containers.sh")], capture_output=True,
                         text=True)  # fmt: skip
    if can.returncode != 0:
        pytest.skip(f"the kubelet node needs containers, which cannot run here: {can.stdout.strip()}")
    run(REPO / "images/build.sh", timeout=1800)
    run(REPO / "scripts/cluster/up.sh", CLUSTER_DIR, NODE="kubelet", timeout=1800)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts/torchyard/crds"))
    run(HELM, "upgrade", "--install", "torchyard", REPO / "charts/torchyard", "-n", "torchyard-system",
        "--create-namespace", "--reset-values", "--wait=false",
        KUBECONFIG=str(CLUSTER_DIR / "admin.kubeconfig"))  # fmt: skip
    folder = tmp_path_factory.mktemp("runs")
    for sub in ("digits-mlp", "digits-mlp-test"):
        (folder / sub).mkdir()
        os.chown(folder / sub, TRAINER_UID, TRAINER_UID)
    claim = {"accessModes": ["ReadWriteMany"], "storageClassName": ""}
    kubectl("delete", "--ignore-not-found", "trainjobs,testjobs", "--all", "--wait", "--timeout=120s")
    kubectl("delete", "--ignore-not-found", "pvc/runs", "pv/kubelet-runs", "--wait", "--timeout=60s")
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "kubelet-runs"},
         "spec": {**claim, "capacity": {"storage": "1Gi"}, "hostPath": {"path": str(folder)},
                  "claimRef": {"namespace": "default", "name": "runs"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "runs", "namespace": "default"},
         "spec": {**claim, "volumeName": "kubelet-runs", "resources": {"requests": {"storage": "1Gi"}}}},
    ]))  # fmt: skip
    yield folder
    kubectl("delete", "--ignore-not-found", "trainjobs,testjobs", "--all", "--wait", "--timeout=120s")
    run(REPO / "scripts/cluster/down.sh", CLUSTER_DIR)


def test_the_operator_runs_from_its_image_as_the_charts_deployment(runs):
    kubectl("-n", "torchyard-system", "rollout", "status", "deployment/torchyard", "--timeout=300s")
    selector = "app.kubernetes.io/name=torchyard"
    pods = kubectl("-n", "torchyard-system", "get", "pods", "-l", selector, "-o", "json")
    pod = json.loads(pods)["items"][0]
    assert pod["spec"]["nodeName"] == "kubelet"
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
    assert pod["status"]["containerStatuses"][0]["imageID"], "the image is containerd's, not pulled"
    # its /metrics, through the API server's proxy to the pod's address on the pod network
    name = pod["metadata"]["name"]
    metrics = kubectl("get", "--raw", f"/api/v1/namespaces/torchyard-system/pods/{name}:8080/proxy/metrics")
    assert "torchyard_" in metrics


def test_a_container_killed_mid_run_restarts_the_gang_which_resumes_and_succeeds(runs):
    job = yaml.safe_load((REPO / "examples/trainjob.yaml").read_text())
    job["spec"]["cfgOptions"] = ["optim_wrapper.optimizer.lr=0.05", "train_cfg.max_epochs=8"]
    kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    # once epoch 2's checkpoint is written, kill node 1's trainer: its container exits 137
    wait_for("epoch 2's checkpoint", lambda: (runs / "digits-mlp" / "epoch_2.pth").exists(), timeout=300)
    pod = get("pod", "digits-mlp-node-1")
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    socket = CLUSTER_DIR / "run/containerd.sock"
    run("ctr", "--address", socket, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", container)
    done = ended("trainjob", "digits-mlp")
    assert done["status"]["restarts"] == 1, done["status"]
    log = (runs / "digits-mlp" / "train.log").read_text()
    assert "resumed from /work_dir/epoch_" in log, log[-2000:]
    assert (runs / "digits-mlp" / "epoch_8.pth").exists()
    for rank in (0, 1):
        status = get("pod", f"digits-mlp-node-{rank}")["status"]["containerStatuses"][0]
        assert status["containerID"].startswith("containerd://")
        assert status["state"]["terminated"]["exitCode"] == 0


def test_the_testjob_evaluates_the_best_checkpoint_of_that_run(runs):
    if job_phase("trainjob", "digits-mlp") != "Succeeded":
        pytest.fail("the TrainJob of the previous test did not succeed; this test evaluates its checkpoint")
    kubectl("apply", "-f", str(REPO / "examples/testjob.yaml"))
    done = ended("testjob", "digits-mlp-test")
    assert done["status"]["metrics"]["accuracy/top1"] > 50, done["status"]
    best = (runs / "digits-mlp" / "best_checkpoint").read_text().strip()
    assert Path(best).name in json.dumps(done["status"]), done["status"]
