"""The container path for real: a kubelet node on containerd (conftest.py) running the images of
`make images`, the operator as the chart's Deployment from its image, and the examples' TrainJob and TestJob
as pods in containers: gloo across two pods that find each other through the cluster DNS, a container killed
mid-run restarting the whole gang from the last checkpoint, and the TestJob reading that run's best
checkpoint."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from .kubelet_helpers import (
    CLUSTER_DIR,
    KUBECONFIG,
    REPO,
    ended,
    get,
    job_phase,
    kubectl,
    operator_pods,
    run,
    wait_for,
)

TRAINER_UID = 1000  # images/trainer/Dockerfile's user; operator/kube/render.py RUN_AS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(kubelet_cluster, tmp_path_factory) -> Path:
    """The folder behind the examples' claim `runs`, writable by the trainer image's user."""
    folder = tmp_path_factory.mktemp("runs")
    for sub in ("digits-mlp", "digits-mlp-test"):
        (folder / sub).mkdir()
        os.chown(folder / sub, TRAINER_UID, TRAINER_UID)
    claim = {"accessModes": ["ReadWriteMany"], "storageClassName": ""}
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "kubelet-runs"},
         "spec": {**claim, "capacity": {"storage": "1Gi"}, "hostPath": {"path": str(folder)},
                  "claimRef": {"namespace": "default", "name": "runs"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "runs", "namespace": "default"},
         "spec": {**claim, "volumeName": "kubelet-runs", "resources": {"requests": {"storage": "1Gi"}}}},
    ]))  # fmt: skip
    return folder


def test_the_operator_runs_from_its_image_as_the_charts_deployment(runs):
    kubectl("-n", "torchyard-system", "rollout", "status", "deployment/torchyard", "--timeout=300s")
    [pod] = operator_pods()
    assert pod["spec"]["nodeName"] == "kubelet"
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
    assert pod["status"]["containerStatuses"][0]["imageID"], "the image is containerd's, not pulled"
    # its /metrics, through the API server's proxy to the pod's address on the pod network
    name = pod["metadata"]["name"]
    metrics = kubectl("get", "--raw", f"/api/v1/namespaces/torchyard-system/pods/{name}:8080/proxy/metrics")
    assert "torchyard_" in metrics


def test_a_container_killed_mid_run_restarts_the_gang_which_resumes_and_succeeds(runs):
    job = yaml.safe_load((REPO / "examples/trainjob.yaml").read_text())
    # an epoch takes ~0.15 s in a container here: enough of them that the kill lands mid-run
    job["spec"]["cfgOptions"] = ["optim_wrapper.optimizer.lr=0.05", "train_cfg.max_epochs=300"]
    kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    # once a first checkpoint is written, kill node 1's trainer: its container exits 137
    wait_for("a first checkpoint", lambda: (runs / "digits-mlp" / "last_checkpoint").exists(), timeout=300)
    pod = get("pod", "digits-mlp-node-1")
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    socket = CLUSTER_DIR / "run/containerd.sock"
    run("ctr", "--address", socket, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", container)
    done = ended("trainjob", "digits-mlp")
    assert done["status"]["restarts"] == 1, done["status"]
    log = (runs / "digits-mlp" / "train.log").read_text()
    assert "resumed from /work_dir/epoch_" in log, log[-2000:]
    assert (runs / "digits-mlp" / "epoch_300.pth").exists()
    for rank in (0, 1):
        status = get("pod", f"digits-mlp-node-{rank}")["status"]["containerStatuses"][0]
        assert status["containerID"].startswith("containerd://")
        assert status["state"]["terminated"]["exitCode"] == 0


def test_torchyard_logs_and_status_read_the_containers(runs):
    def torchyard(*args: str) -> str:
        return run(sys.executable, "-m", "torchyard.operator.cli.main", *args, KUBECONFIG=str(KUBECONFIG))

    if job_phase("trainjob", "digits-mlp") != "Succeeded":
        pytest.fail("the TrainJob of the previous test did not succeed; this test reads its pods' logs")
    assert "training finished: " in torchyard("logs", "digits-mlp")  # rank 0's container, via its kubelet
    torchyard("logs", "digits-mlp", "--node", "1")  # node 1's pod answers too (run() checks the exit code)
    status = torchyard("status", "digits-mlp")
    assert re.search(r"^phase +Succeeded$", status, re.M), status
    assert re.search(r"^restarts +1 ", status, re.M), status
    # the killed attempt's logs, read from the kubelet before the restart deleted its pods
    kept = get("configmap", "digits-mlp-previous-logs")
    assert "node-1.log" in kept["data"] and kept["metadata"]["annotations"]["torchyard.dev/attempt"] == "0"
    assert not any(text.startswith("[no log") for text in kept["data"].values()), kept["data"]
    assert any(re.search(r"epoch \d+/300", text) for text in kept["data"].values()), kept["data"]
    assert torchyard("logs", "digits-mlp", "--previous", "--node", "1") == kept["data"]["node-1.log"]


def test_the_testjob_evaluates_the_best_checkpoint_of_that_run(runs):
    if job_phase("trainjob", "digits-mlp") != "Succeeded":
        pytest.fail("the TrainJob of the previous test did not succeed; this test evaluates its checkpoint")
    kubectl("apply", "-f", str(REPO / "examples/testjob.yaml"))
    done = ended("testjob", "digits-mlp-test")
    assert done["status"]["metrics"]["accuracy/top1"] > 50, done["status"]
    best = (runs / "digits-mlp" / "best_checkpoint").read_text().strip()
    assert Path(best).name in json.dumps(done["status"]), done["status"]
