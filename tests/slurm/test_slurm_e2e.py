"""`torchyard slurm` on a real Slurm (tests/slurm/cluster.sh: nodes n1, n2 on this host), no mocks.

A 2-node DDP run of the examples' TrainJob matches `torchyard run` of the same spec; a TestJob evaluates its
checkpoint; a job stopped near its time limit checkpoints, requeues itself and ends with the same metrics,
and so does one an admin requeues mid-run; cancel; two jobs on one node get different ports; requests
Slurm cannot meet fail clearly.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torchyard.operator.slurm.bridge import RECORD, read_record
from torchyard.operator.slurm.client import SlurmClient

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]

TRAIN = "trainjob.yaml"


@pytest.fixture(scope="module")
def trained(slurm_cluster, yard, tmp_path_factory):
    """The examples' TrainJob (2 nodes x 1 process) through `slurm submit --wait`, and a local run of it."""
    submit = yard.workspace(tmp_path_factory.mktemp("slurm-train"))
    job = yard.write_job(submit, yard.example(TRAIN), TRAIN)
    result = yard.torchyard("slurm", "submit", str(job), "--wait", cwd=submit)
    assert result.returncode == 0, result.stderr
    local = yard.workspace(tmp_path_factory.mktemp("local-train"))
    ran = yard.torchyard("run", str(yard.write_job(local, yard.example(TRAIN), TRAIN)), cwd=local)
    assert ran.returncode == 0, ran.stderr
    return {
        "submit": submit,
        "job_id": result.stdout.split()[0],
        "work_dir": submit / "work_dirs/digits-mlp",
        "local": yard.val_metrics(local / "work_dirs/digits-mlp"),
        "stderr": result.stderr,
    }


def test_two_node_training_matches_a_local_run(trained, yard):
    work_dir = trained["work_dir"]
    assert "RUNNING" in trained["stderr"] and "COMPLETED" in trained["stderr"]
    assert (work_dir / "last_checkpoint").read_text().strip().endswith("epoch_5.pth")
    slurm_metrics = yard.val_metrics(work_dir)
    assert slurm_metrics["epoch"] == 5
    assert slurm_metrics == trained["local"]  # same seed, deterministic: bit-identical metrics
    # both nodes took part: rank 1's log exists and the master was node n1's NodeAddr (n1 does not resolve)
    err = (work_dir / f"slurm-{trained['job_id']}.err").read_text()
    assert re.search(r"job \d+ on n\[1-2\], master 127\.0\.0\.1:\d+", err), err


def test_status_finds_the_job_by_name_id_and_file(trained, yard):
    submit = trained["submit"]
    for target in ("digits-mlp", trained["job_id"], TRAIN):
        result = yard.torchyard("slurm", "status", target, cwd=submit)
        assert result.returncode == 0, result.stderr
        assert re.search(r"^state\s+COMPLETED -> Succeeded", result.stdout, re.MULTILINE), result.stdout
        assert re.search(r"^checkpoint\s+\S+epoch_5\.pth$", result.stdout, re.MULTILINE), result.stdout
        assert re.search(r"^exit code\s+0:0$", result.stdout, re.MULTILINE)
    # another login node: any other directory, by job id (squeue knows where the record is)
    elsewhere = yard.torchyard("slurm", "status", trained["job_id"], cwd=Path("/"))
    assert "TrainJob digits-mlp" in elsewhere.stdout, elsewhere.stderr
    listed = yard.torchyard("slurm", "list", cwd=submit)
    assert re.search(rf"^{trained['job_id']}\s+TrainJob\s+digits-mlp\s+COMPLETED", listed.stdout, re.M)
    logs = yard.torchyard("slurm", "logs", "digits-mlp", cwd=submit)
    assert "training finished" in logs.stdout


def test_test_job_evaluates_the_checkpoint(trained, yard):
    submit = trained["submit"]
    job = yard.write_job(submit, yard.example("testjob.yaml"), "testjob.yaml")
    result = yard.torchyard("slurm", "submit", str(job), "--train-job", TRAIN, "--wait", cwd=submit)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads((submit / "work_dirs/digits-mlp-test/metrics.json").read_text())
    vals = [json.loads(line) for line in (trained["work_dir"] / "scalars.jsonl").read_text().splitlines()]
    best = max((row for row in vals if row["mode"] == "val"), key=lambda row: row["accuracy/top1"])
    assert Path(evaluated["checkpoint"]).name == f"best_accuracy_top1_epoch_{best['epoch']}.pth"
    # the same weights on the held-out test split: what torchyard-test here says of that checkpoint
    here = subprocess.run([str(Path(sys.executable).with_name("torchyard-test")),
                           str(REPO / "configs/digits_mlp.py"), evaluated["checkpoint"], "--work-dir",
                           str(submit / "here")], capture_output=True, text=True, timeout=300)
    assert here.returncode == 0, here.stderr[-3000:]
    assert evaluated["metrics"] == json.loads((submit / "here/metrics.json").read_text())["metrics"]
    status = yard.torchyard("slurm", "status", "digits-mlp-test", cwd=submit)
    assert re.search(r"^state\s+COMPLETED -> Succeeded", status.stdout, re.M), status.stdout


def test_stop_near_the_time_limit_checkpoints_requeues_and_finishes(trained, yard, tmp_path):
    """USR1 to the batch script (what --signal=B:USR1@N does near the limit, sent early here)."""
    submit = yard.workspace(tmp_path / "submit")
    job = yard.write_job(submit, yard.example(TRAIN), TRAIN)
    result = yard.torchyard("slurm", "submit", str(job), cwd=submit)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    work_dir = submit / "work_dirs/digits-mlp"
    yard.wait_until(lambda: (work_dir / "scalars.jsonl").exists(), what="training to start")
    client = SlurmClient()
    client.cancel(job_id, signal="USR1", batch=True)

    def requeued():
        info = client.show_job(job_id)
        return info and info["JobState"] == "PENDING" and info.get("Restarts") == "1"

    yard.wait_until(requeued, timeout=120, what="the job to requeue itself")
    # Slurm holds a requeued job for cred_expire (cluster.sh: 10 s; default 120 s): Restarting, not Failed
    waited = yard.torchyard("slurm", "status", job_id, cwd=submit)
    assert re.search(r"^state\s+PENDING -> Restarting \(Requeued\)", waited.stdout, re.M), waited.stdout
    yard.wait_until(lambda: yard.slurm_state(job_id)[0] == "COMPLETED", timeout=300, what="completion")
    out = (work_dir / f"slurm-{job_id}.out").read_text()
    err = (work_dir / f"slurm-{job_id}.err").read_text()
    assert "stopped at a checkpoint (slurm.maxRequeues); requeueing job" in err, err
    assert "stopped by signal 15" in err and "Connection closed by peer" not in err, err
    saved = re.search(r"stopped by signal 15; resume from (\S+\.pth)", err)  # iter_N, or epoch_N at its end
    assert saved, "no checkpoint at the stop: did training finish before USR1 arrived?\n" + err
    assert f"resumed from {saved.group(1)}" in out
    assert yard.val_metrics(work_dir) == trained["local"]  # resume is bit-identical


def test_an_admin_requeue_mid_run_checkpoints_and_resumes(trained, yard, tmp_path):
    """`scontrol requeue` of a running job: Slurm sends SIGTERM (SIGKILL after KillWait), queues it again."""
    submit = yard.workspace(tmp_path / "submit")
    job = yard.write_job(submit, yard.example(TRAIN), TRAIN)
    job_id = yard.torchyard("slurm", "submit", str(job), cwd=submit).stdout.strip()
    work_dir = submit / "work_dirs/digits-mlp"
    yard.wait_until(lambda: (work_dir / "epoch_1.pth").exists(), what="the first epoch's checkpoint")
    SlurmClient().requeue(job_id)
    yard.wait_until(lambda: yard.slurm_state(job_id)[0] == "COMPLETED", timeout=300, what="completion")

    err = (work_dir / f"slurm-{job_id}.err").read_text()
    saved = re.search(r"stopped by signal 15; resume from (\S+\.pth)", err)
    assert saved and "Connection closed by peer" not in err, err
    assert f"resumed from {saved.group(1)}" in (work_dir / f"slurm-{job_id}.out").read_text()
    assert SlurmClient().show_job(job_id)["Restarts"] == "1"
    assert yard.val_metrics(work_dir) == trained["local"]  # resume is bit-identical


def test_a_preempted_job_requeues_and_resumes_without_spending_backoff_limit(trained, yard, tmp_path):
    """A job of partition urgent (PriorityTier 2, cluster.sh) needs both whole nodes: Slurm preempts the
    TrainJob (PreemptMode=REQUEUE) and queues it again; backoffLimit 0 would stop any restart of ours."""
    submit = yard.workspace(tmp_path / "submit")
    job = yard.write_job(submit, yard.example(TRAIN, backoffLimit=0), TRAIN)
    job_id = yard.torchyard("slurm", "submit", str(job), cwd=submit).stdout.strip()
    work_dir = submit / "work_dirs/digits-mlp"
    yard.wait_until(lambda: (work_dir / "epoch_1.pth").exists(), what="the first epoch's checkpoint")
    urgent = tmp_path / "urgent.sh"
    urgent.write_text("#!/bin/bash\n#SBATCH --partition=urgent --nodes=2 --exclusive --output=/dev/null\n"
                      "sleep 3\n")
    urgent_id = SlurmClient().sbatch(urgent, cwd=tmp_path)
    yard.wait_until(lambda: yard.slurm_state(job_id)[0] == "COMPLETED", timeout=300, what="completion")

    assert yard.slurm_state(urgent_id)[0] == "COMPLETED"
    assert SlurmClient().show_job(job_id)["Restarts"] == "1"
    err = (work_dir / f"slurm-{job_id}.err").read_text()
    assert "no requeue left" not in err and "requeueing job" not in err, err  # Slurm's requeue, not ours
    saved = re.search(r"stopped by signal 15; resume from (\S+\.pth)", err)
    assert saved, err
    assert f"resumed from {saved.group(1)}" in (work_dir / f"slurm-{job_id}.out").read_text()
    assert yard.val_metrics(work_dir) == trained["local"]  # resume is bit-identical
    status = yard.torchyard("slurm", "status", job_id, cwd=submit)
    assert re.search(r"^state\s+COMPLETED -> Succeeded", status.stdout, re.M), status.stdout


def test_cancel(slurm_cluster, yard, submit_dir):
    spec = yard.example(TRAIN, cfgOptions=["train_cfg.max_epochs=500"])
    result = yard.torchyard("slurm", "submit", str(yard.write_job(submit_dir, spec)), cwd=submit_dir)
    job_id = result.stdout.strip()
    yard.wait_until(lambda: yard.slurm_state(job_id)[0] == "RUNNING", what="RUNNING")
    cancelled = yard.torchyard("slurm", "cancel", "digits-mlp", cwd=submit_dir)
    assert cancelled.returncode == 0 and f"cancelled job {job_id}" in cancelled.stderr
    yard.wait_until(lambda: yard.slurm_state(job_id)[0] == "CANCELLED", timeout=60, what="CANCELLED")
    status = yard.torchyard("slurm", "status", "digits-mlp", cwd=submit_dir)
    assert re.search(r"^state\s+CANCELLED -> Failed \(Cancelled\)", status.stdout, re.M), status.stdout


def test_two_jobs_on_one_node_get_different_ports(slurm_cluster, yard, submit_dir):
    ids = {}
    for name in ("one", "two"):
        spec = yard.example(
            TRAIN,
            nodes=1,
            workDir={"path": f"work_dirs/{name}"},
            slurm={"extraArgs": ["--nodelist=n1"]},
        )
        spec["metadata"]["name"] = name
        result = yard.torchyard(
            "slurm", "submit", str(yard.write_job(submit_dir, spec, f"{name}.yaml")), cwd=submit_dir
        )
        assert result.returncode == 0, result.stderr
        ids[name] = result.stdout.strip()
    yard.wait_until(
        lambda: all(yard.slurm_state(i)[0] == "RUNNING" for i in ids.values()), what="both RUNNING at once"
    )
    for job_id in ids.values():
        yard.wait_until(lambda j=job_id: yard.slurm_state(j)[0] == "COMPLETED", timeout=300, what="COMPLETED")
    ports = set()
    for name, job_id in ids.items():
        err = (submit_dir / f"work_dirs/{name}/slurm-{job_id}.err").read_text()
        ports.add(re.search(rf"job {job_id} on n1, master 127\.0\.0\.1:(\d+)", err).group(1))
    assert len(ports) == 2


def test_unknown_partition_is_a_clear_error(slurm_cluster, yard, submit_dir):
    spec = yard.example(TRAIN, slurm={"partition": "nosuch"})
    result = yard.torchyard("slurm", "submit", str(yard.write_job(submit_dir, spec)), cwd=submit_dir)
    assert result.returncode == 1
    assert "partition does not exist" in result.stderr and "sinfo -s" in result.stderr, result.stderr


def test_more_nodes_than_the_cluster_has_fails_at_once(slurm_cluster, yard, submit_dir):
    spec = yard.example(TRAIN, nodes=3)
    result = yard.torchyard(
        "slurm", "submit", str(yard.write_job(submit_dir, spec)), "--wait", cwd=submit_dir
    )
    assert result.returncode == 1
    # Slurm's first reason may be PartitionConfig, later PartitionNodeLimit: both mean "never"
    assert re.search(r"cannot start \(Partition(NodeLimit|Config)\)", result.stderr), result.stderr
    assert "spec.nodes" in result.stderr and "Cancelled job" in result.stderr
    job_id = result.stdout.strip()
    assert yard.slurm_state(job_id)[0] in ("CANCELLED", "")


def test_busy_nodes_are_reported_as_waiting_for_resources(slurm_cluster, yard, submit_dir):
    client = SlurmClient()
    blocker = subprocess.run(
        ["sbatch", "--parsable", "-N2", "--exclusive", "-o", "/dev/null", "--wrap", "sleep 120"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    try:
        yard.wait_until(lambda: yard.slurm_state(blocker)[0] == "RUNNING", what="the blocker to run")
        result = yard.torchyard(
            "slurm", "submit", str(yard.write_job(submit_dir, yard.example(TRAIN))), cwd=submit_dir
        )
        job_id = result.stdout.strip()
        yard.wait_until(lambda: yard.slurm_state(job_id)[1] == "Resources", what="Reason=Resources")
        status = yard.torchyard("slurm", "status", "digits-mlp", cwd=submit_dir)
        assert re.search(r"^state\s+PENDING -> Pending \(WaitingForResources\)", status.stdout, re.M)
        assert "waits for free nodes" in status.stdout
        record = read_record(submit_dir / "work_dirs/digits-mlp")
        assert record is not None and record.job_id == job_id and (record.last_reason == "Resources")
        assert (submit_dir / "work_dirs/digits-mlp" / RECORD).exists()
        client.cancel(job_id)
    finally:
        client.cancel(blocker)
