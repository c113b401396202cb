"""SlurmJobs, the Python client for Slurm, as a notebook uses it, on the session's real Slurm."""

from __future__ import annotations

import pytest

from torchyard.operator import SlurmJobs
from torchyard.operator.api.spec import Phase, TestJobStatus
from torchyard.operator.errors import ClientError

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


def test_submit_wait_status_logs_list_and_cancel(slurm_cluster, yard, submit_dir):
    train = yard.example("trainjob.yaml", cfgOptions=["train_cfg.max_epochs=2"])
    test = yard.example("testjob.yaml")
    jobs = SlurmJobs(cwd=submit_dir)

    assert jobs.submit(yard.write_job(submit_dir, [train, test], "jobs.yaml").name) == ["digits-mlp",
                                                                                       "digits-mlp-test"]
    trained = jobs.wait("digits-mlp", timeout=600, poll_seconds=0.5)
    assert trained.phase is Phase.SUCCEEDED and trained.slurm_job_id
    assert trained.last_checkpoint.endswith("epoch_2.pth") and "accuracy/top1" in trained.metrics
    assert trained.conditions[0].type == "Succeeded"
    tested = jobs.wait("digits-mlp-test", timeout=600, poll_seconds=0.5)  # it waited for the TrainJob
    assert isinstance(tested, TestJobStatus) and tested.phase is Phase.SUCCEEDED
    assert tested.headline_metric.startswith("accuracy/top1: ") and tested.checkpoint
    assert "training finished" in jobs.logs("digits-mlp", tail=5)
    rows = {row.name: row for row in jobs.list()}
    assert (rows["digits-mlp"].kind, rows["digits-mlp"].phase, rows["digits-mlp"].nodes) == (
        "TrainJob", "Succeeded", 2)

    long = yard.example("trainjob.yaml", cfgOptions=["train_cfg.max_epochs=500"])
    long["metadata"]["name"] = "long"
    [name] = jobs.submit(long)  # a dict, validated as a file would be
    jobs.wait(name, timeout=120, poll_seconds=0.5, until=(Phase.RUNNING,))
    jobs.cancel(name)
    cancelled = jobs.wait(name, timeout=120, poll_seconds=0.5)
    assert (cancelled.phase, cancelled.conditions[0].reason) == (Phase.FAILED, "Cancelled")
    with pytest.raises(ClientError, match="no job 'nope' submitted from"):
        jobs.status("nope")
