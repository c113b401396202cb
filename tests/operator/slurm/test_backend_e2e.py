"""The operator's Slurm mode end to end: kopf in-process against the real control plane of `make cluster`,
jobs on the real Slurm of tests/slurm/cluster.sh (nodes n1, n2 on this host), no mocks.

A TrainJob created in the API server is submitted through sbatch, trains on 2 nodes in its namespace's work
dir and ends Succeeded with its metrics in status; a job id in a user's annotation is ignored; deleting a
running job scancels it (the finalizer); suspend scancels it (Suspended) and unsuspend submits it again,
resuming from its checkpoint, to Succeeded; activeDeadlineSeconds scancels and fails it.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from torchyard.operator.control.handlers import build_registry, memo_for
from torchyard.operator.control.kubeapi import job_path
from torchyard.operator.control.loop import OperatorConfig
from torchyard.operator.slurm.backend import JOB_ID, SlurmBackend

from ..operator_harness import Cluster, running_cluster, running_kopf, train_job

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.asyncio]

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def submit_dir(tmp_path) -> Path:
    """Where the operator submits from, like a checkout: configs/ (linked) and work_dirs/."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    return tmp_path


@contextlib.asynccontextmanager
async def slurm_operator(cluster: Cluster, submit_dir: Path) -> AsyncIterator[kopf.Memo]:
    """`torchyard operator run --backend slurm`, in its own thread and event loop, against the API server."""
    backend = SlurmBackend(submit_dir, poll_seconds=0.5)
    memo = memo_for(OperatorConfig(connection=cluster.info), backend)
    async with running_kopf(build_registry(backend), memo, name="slurm-operator"):
        yield memo


def slurm_state(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30
    ).stdout.strip()


async def cancelled(cluster: Cluster, job_id: str) -> None:
    """Until Slurm has ended the job for good (not COMPLETING: the nodes are free for the next test)."""

    async def check() -> bool:
        return slurm_state(job_id) == "CANCELLED"

    await cluster.wait(check, 60, f"Slurm job {job_id} CANCELLED")


async def finished(cluster: Cluster, name: str, timeout: float = 180) -> dict[str, Any]:
    """The status once the job ended; it must have succeeded (else the status says why, at once)."""
    status = await cluster.wait_status(
        "TrainJob", name, lambda s: s.get("phase") in ("Succeeded", "Failed"), timeout, "the job to end"
    )
    assert status["phase"] == "Succeeded", status
    return status


def digits(name: str, epochs: int, **spec: Any) -> dict[str, Any]:
    return train_job(
        name, cfgOptions=["optim_wrapper.optimizer.lr=0.05", f"train_cfg.max_epochs={epochs}"], **spec
    )


async def slurm_job_id(cluster: Cluster, name: str, other_than: str | None = None) -> str:
    async def check() -> str | None:
        job = await cluster.job("TrainJob", name) or {}
        found = (job.get("status") or {}).get(JOB_ID)
        return found if found and found != other_than else None

    return await cluster.wait(check, 30, f"a Slurm job id other than {other_than}")


async def test_a_trainjob_runs_on_slurm_and_succeeds_with_metrics(slurm_cluster, submit_dir):
    async with running_cluster(kubelet=False) as cluster, slurm_operator(cluster, submit_dir):
        await cluster.create(digits("slurm-ok", 2, ttlSecondsAfterFinished=3600))
        job_id = await slurm_job_id(cluster, "slurm-ok")
        await cluster.wait_phase("TrainJob", "slurm-ok", "Running", timeout=60)
        status = await finished(cluster, "slurm-ok")
    assert slurm_state(job_id) == "COMPLETED"
    assert status["metrics"]["accuracy/top1"] > 50, status
    work_dir = submit_dir / "work_dirs" / cluster.ns / "slurm-ok"  # per namespace: tenants never share
    assert status["lastCheckpoint"] == str(work_dir / "epoch_2.pth")
    assert status["bestCheckpoint"].endswith("epoch_2.pth") and status["completionTime"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (
        conditions["Succeeded"]["reason"] == "Completed"
        and "accuracy/top1=" in conditions["Succeeded"]["message"]
    )
    assert conditions["Running"]["status"] == "False" and conditions["Created"]["status"] == "True"
    assert "training finished" in (work_dir / f"slurm-{job_id}.out").read_text()


async def test_deleting_a_running_job_cancels_it(slurm_cluster, submit_dir):
    async with running_cluster(kubelet=False) as cluster, slurm_operator(cluster, submit_dir):
        await cluster.create(digits("slurm-del", 500))
        job_id = await slurm_job_id(cluster, "slurm-del")
        await cluster.wait_phase("TrainJob", "slurm-del", "Running", timeout=60)
        assert slurm_state(job_id) == "RUNNING"
        await cluster.api.delete(job_path("TrainJob", cluster.ns, "slurm-del"))

        async def gone() -> bool:
            return await cluster.job("TrainJob", "slurm-del") is None

        await cluster.wait(gone, 60, "the finalizer to let the job go")
        await cancelled(cluster, job_id)


async def test_a_job_id_annotation_is_never_trusted(slurm_cluster, submit_dir):
    """Before, the Slurm job id was read from a user-settable annotation: a TrainJob annotated with another
    job's id showed that job's state and scancelled it on suspend and on delete."""
    async with running_cluster(kubelet=False) as cluster, slurm_operator(cluster, submit_dir):
        await cluster.create(digits("victim", 500))
        victim = await slurm_job_id(cluster, "victim")
        await cluster.wait_phase("TrainJob", "victim", "Running", timeout=60)
        spoof = digits("spoof", 1, suspend=True)
        spoof["metadata"]["annotations"] = {"torchyard.dev/slurm-job-id": victim}
        await cluster.create(spoof)
        status = await cluster.wait_phase("TrainJob", "spoof", "Suspended", timeout=30)
        assert JOB_ID not in status and victim not in str(status)
        await cluster.api.delete(job_path("TrainJob", cluster.ns, "spoof"))

        async def gone() -> bool:
            return await cluster.job("TrainJob", "spoof") is None

        await cluster.wait(gone, 60, "the finalizer to let the spoofing job go")
        assert slurm_state(victim) == "RUNNING"
        await cluster.api.delete(job_path("TrainJob", cluster.ns, "victim"))
        await cancelled(cluster, victim)


async def test_suspend_cancels_and_unsuspend_resumes_to_success(slurm_cluster, submit_dir):
    async with running_cluster(kubelet=False) as cluster, slurm_operator(cluster, submit_dir):
        work_dir = submit_dir / "work_dirs" / cluster.ns / "slurm-sus"
        await cluster.create(digits("slurm-sus", 6))
        first = await slurm_job_id(cluster, "slurm-sus")

        async def checkpointed() -> bool:
            return (work_dir / "epoch_1.pth").exists()

        await cluster.wait(checkpointed, 90, "the first checkpoint")
        await cluster.patch_spec("TrainJob", "slurm-sus", suspend=True)
        status = await cluster.wait_phase("TrainJob", "slurm-sus", "Suspended", timeout=30)
        assert "startTime" not in status  # activeDeadlineSeconds counts again from the resubmission

        await cancelled(cluster, first)
        assert "epoch_6.pth" not in {p.name for p in work_dir.iterdir()}

        await cluster.patch_spec("TrainJob", "slurm-sus", suspend=False)
        second = await slurm_job_id(cluster, "slurm-sus", other_than=first)
        status = await finished(cluster, "slurm-sus")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Suspended"]["status"] == "False" and conditions["Suspended"]["reason"] == "Resumed"
    assert status["lastCheckpoint"] == str(work_dir / "epoch_6.pth")
    assert "resumed from" in (work_dir / f"slurm-{second}.out").read_text()
    assert slurm_state(second) == "COMPLETED"


async def test_active_deadline_cancels_and_fails(slurm_cluster, submit_dir):
    async with running_cluster(kubelet=False) as cluster, slurm_operator(cluster, submit_dir):
        await cluster.create(digits("slurm-late", 500, activeDeadlineSeconds=3))
        job_id = await slurm_job_id(cluster, "slurm-late")
        status = await cluster.wait_phase("TrainJob", "slurm-late", "Failed", timeout=30)
        await cancelled(cluster, job_id)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "DeadlineExceeded" and f"Slurm job {job_id} cancelled" in failed["message"]
