"""The kubelet node's control plane, started once for tests/cluster: its own folder (.cluster-kubelet; the
other suites keep .cluster, with process nodes), the images of `make images` imported into its containerd
(whose image store is in the user's cache, so images imported once, by `make demo-k8s`, are not imported
again), and the chart installed as users install it. Where scripts/cluster/can-run-containers.sh says this
machine cannot run containers, every test here is skipped with its reason, which pytest's summary (-ra)
prints."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .kubelet_helpers import CLUSTER_DIR, KUBECONFIG, KUBECTL, REPO, helm, kubectl, run


@pytest.fixture(scope="package")
def kubelet_cluster():
    can = subprocess.run([str(REPO / "scripts/cluster/can-run-containers.sh")], capture_output=True,
                         text=True)  # fmt: skip
    if can.returncode != 0:
        pytest.skip(f"the kubelet node needs containers, which cannot run here: {can.stdout.strip()}")
    run(REPO / "images/build.sh", timeout=1800)
    # a fresh control plane: objects of an earlier run (an operator pod whose container the last stop
    # killed, jobs, volumes) would be found again in its etcd
    run(REPO / "scripts/cluster/down.sh", CLUSTER_DIR)
    shutil.rmtree(CLUSTER_DIR, ignore_errors=True)
    try:
        run(REPO / "scripts/cluster/up.sh", CLUSTER_DIR, NODE="kubelet", timeout=1800)
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts/torchyard/crds"))
        helm("upgrade", "--install", "torchyard", REPO / "charts/torchyard", "--create-namespace",
             "--reset-values", "--wait=false")  # fmt: skip
        yield CLUSTER_DIR
    finally:
        # the operator removes its finalizers while it runs; a cluster left up would hold the host's node
        delete_jobs = ["delete", "--ignore-not-found", "trainjobs,testjobs", "--all", "-A", "--timeout=120s"]
        subprocess.run([str(KUBECTL), "--kubeconfig", str(KUBECONFIG), *delete_jobs], capture_output=True,
                       timeout=180)  # fmt: skip
        run(REPO / "scripts/cluster/down.sh", CLUSTER_DIR)
