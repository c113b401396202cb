"""slurm/decide.py (pure): Slurm job info + spec + status + now -> status and actions, by case."""

from __future__ import annotations

import datetime

import pytest

from torchyard.operator.api import conditions as st
from torchyard.operator.control.decide import rejected
from torchyard.operator.slurm.decide import SlurmView, decide

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
STAMP = "2026-01-02T03:04:05Z"


def later(seconds: float) -> datetime.datetime:
    return NOW + datetime.timedelta(seconds=seconds)


def job(state: str, reason: str = "None", job_id: str = "7", **fields: str) -> SlurmView:
    return SlurmView(job_id, {"JobId": job_id, "JobState": state, "Reason": reason, **fields})


def cond(status: dict, type_: str) -> dict:
    found = st.condition(status["conditions"], type_)
    assert found is not None, f"no {type_} condition in {status['conditions']}"
    return found


def test_a_new_job_is_submitted(train_job):
    d = decide(train_job(), {}, SlurmView(), NOW)
    assert d.submit and d.cancel is None
    assert d.status["phase"] == "Pending" and d.status["startTime"] == STAMP
    assert cond(d.status, st.CREATED)["reason"] == "Submitted"
    assert [e[1] for e in d.events] == ["Submitted"]


def test_queued_for_resources_is_pending_waiting_for_resources(train_job):
    submitted = decide(train_job(), {}, SlurmView(), NOW).status
    d = decide(train_job(), submitted, job("PENDING", "Resources"), NOW)
    assert not d.submit and d.status["phase"] == "Pending"
    created = cond(d.status, st.CREATED)
    assert (created["status"], created["reason"]) == ("True", "WaitingForResources")


def test_an_unsatisfiable_request_warns_once(train_job):
    d = decide(train_job(), {}, job("PENDING", "PartitionNodeLimit"), NOW)
    created = cond(d.status, st.CREATED)
    assert (created["status"], created["reason"]) == ("False", "Unschedulable")
    assert "spec.nodes" in created["message"] and d.events[0][:2] == ("Warning", "Unschedulable")
    again = decide(train_job(), d.status, job("PENDING", "PartitionNodeLimit"), later(10))
    assert again.events == [] and again.status == d.status


def test_running_sets_the_running_condition_and_counts_nodes(train_job):
    d = decide(train_job(nodes=2), {}, job("RUNNING", NodeList="n[1-2]"), NOW)
    assert d.status["phase"] == "Running" and d.status["active"] == 2
    assert cond(d.status, st.RUNNING)["status"] == "True"
    assert [e[1] for e in d.events] == ["Running"]
    again = decide(train_job(nodes=2), d.status, job("RUNNING", NodeList="n[1-2]"), later(10))
    assert again.status == d.status and again.events == []  # nothing changed: nothing to write


def test_a_requeued_job_is_restarting_and_counts_restarts(train_job):
    running = decide(train_job(), {}, job("RUNNING"), NOW).status
    d = decide(train_job(), running, job("PENDING", "BeginTime", Restarts="1"), later(5))
    assert d.status["phase"] == "Restarting" and d.status["restarts"] == 1
    assert cond(d.status, st.RESTARTING)["reason"] == "Requeued"
    assert cond(d.status, st.RUNNING)["status"] == "False"
    back = decide(train_job(), d.status, job("RUNNING", Restarts="1"), later(20))
    assert back.status["phase"] == "Running" and cond(back.status, st.RESTARTING)["status"] == "False"


def test_completed_succeeds_with_metrics_and_checkpoints_from_the_work_dir(train_job):
    progress = {
        "metrics": {"accuracy/top1": 91.5},
        "lastCheckpoint": "/w/epoch_2.pth",
        "bestCheckpoint": None,
    }
    running = decide(train_job(), {}, job("RUNNING"), NOW).status
    d = decide(train_job(), running, job("COMPLETED", ExitCode="0:0"), later(30), progress)
    assert d.status["phase"] == "Succeeded" and d.status["completionTime"] == "2026-01-02T03:04:35Z"
    assert d.status["metrics"] == {"accuracy/top1": 91.5} and d.status["lastCheckpoint"] == "/w/epoch_2.pth"
    assert "bestCheckpoint" not in d.status  # empty progress fields are not written
    succeeded = cond(d.status, st.SUCCEEDED)
    assert succeeded["reason"] == st.COMPLETED and "accuracy/top1=91.5" in succeeded["message"]
    assert cond(d.status, st.RUNNING)["status"] == "False"


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("FAILED", "Failed"),
        ("CANCELLED by 0", "Cancelled"),
        ("TIMEOUT", "TimeLimit"),
        ("PREEMPTED", "Preempted"),
        ("NODE_FAIL", "NodeFailure"),
        ("OUT_OF_MEMORY", "OutOfMemory"),
    ],
)
def test_slurm_failures_fail_the_job_with_their_reason(train_job, state, reason):
    running = decide(train_job(), {}, job("RUNNING"), NOW).status
    d = decide(train_job(), running, job(state, ExitCode="1:0"), later(30))
    assert d.status["phase"] == "Failed" and d.status["completionTime"]
    failed = cond(d.status, st.FAILED)
    assert (failed["status"], failed["reason"]) == ("True", reason)
    assert d.events[-1][:2] == ("Warning", reason) and not d.submit and d.cancel is None


def test_suspend_cancels_the_running_job(train_job):
    running = decide(train_job(activeDeadlineSeconds=60), {}, SlurmView(), NOW).status
    d = decide(train_job(suspend=True), running, job("RUNNING"), later(5))
    assert d.cancel == "7" and not d.submit
    assert d.status["phase"] == "Suspended" and d.status["startTime"] is None
    assert cond(d.status, st.SUSPENDED)["reason"] == st.JOB_SUSPENDED
    cancelled = decide(train_job(suspend=True), d.status, job("CANCELLED by 0"), later(10))
    assert cancelled.cancel is None and cancelled.status == d.status  # Suspended, not Failed


def test_unsuspend_submits_again(train_job):
    suspended = decide(train_job(suspend=True), {}, job("RUNNING"), NOW).status
    d = decide(train_job(), suspended, job("CANCELLED by 0"), later(60))
    assert d.submit and d.status["phase"] == "Pending" and d.status["startTime"] == "2026-01-02T03:05:05Z"
    resumed = cond(d.status, st.SUSPENDED)
    assert (resumed["status"], resumed["reason"]) == ("False", st.JOB_RESUMED)
    # the operator then observes the new job in the same step
    queued = decide(train_job(), d.status, job("PENDING", job_id="8"), later(60))
    assert not queued.submit and queued.status["phase"] == "Pending"


def test_unsuspend_adopts_a_resubmission_whose_status_write_was_lost(train_job):
    suspended = decide(train_job(suspend=True), {}, job("RUNNING"), NOW).status
    d = decide(train_job(), suspended, job("RUNNING", job_id="8"), later(60))
    assert not d.submit and d.status["phase"] == "Running"


def test_a_job_suspended_by_slurm_itself_stays_suspended(train_job):
    d = decide(train_job(), {}, job("SUSPENDED"), NOW)
    assert d.status["phase"] == "Suspended"
    again = decide(train_job(), d.status, job("SUSPENDED"), later(10))
    assert not again.submit and again.status == d.status and again.events == []


def test_the_deadline_cancels_and_fails(train_job):
    submitted = decide(train_job(activeDeadlineSeconds=60), {}, SlurmView(), NOW).status
    within = decide(train_job(activeDeadlineSeconds=60), submitted, job("RUNNING"), later(59))
    assert within.cancel is None and within.status["phase"] == "Running"
    d = decide(train_job(activeDeadlineSeconds=60), within.status, job("RUNNING"), later(60))
    assert d.cancel == "7" and d.status["phase"] == "Failed"
    assert cond(d.status, st.FAILED)["reason"] == st.DEADLINE_EXCEEDED
    after = decide(train_job(activeDeadlineSeconds=60), d.status, job("CANCELLED"), later(70))
    assert after.status == d.status and after.cancel is None  # stays DeadlineExceeded, not Cancelled


def test_ttl_deletes_the_finished_job(train_job):
    done = decide(train_job(ttlSecondsAfterFinished=100), {}, job("COMPLETED"), NOW)
    assert not done.delete_job
    assert not decide(
        train_job(ttlSecondsAfterFinished=100), done.status, SlurmView("7"), later(99)
    ).delete_job
    assert decide(train_job(ttlSecondsAfterFinished=100), done.status, SlurmView("7"), later(100)).delete_job
    assert not decide(train_job(), done.status, SlurmView("7"), later(10**6)).delete_job


def test_a_job_slurm_forgot_fails_as_unknown(train_job):
    running = decide(train_job(), {}, job("RUNNING"), NOW).status
    d = decide(train_job(), running, SlurmView("7", None), later(900))
    assert d.status["phase"] == "Failed" and cond(d.status, st.FAILED)["reason"] == "Unknown"


def test_a_test_job_waits_for_its_train_job(test_job, train_job):
    spec = {"checkpoint": None, "fromTrainJob": {"name": "digits-mlp"}}
    d = decide(
        test_job(**spec), {}, SlurmView(), NOW, train_job=train_job(), train_status={"phase": "Running"}
    )
    assert not d.submit and cond(d.status, st.CREATED)["reason"] == st.WAITING_FOR_TRAIN_JOB
    ok = decide(test_job(**spec), d.status, SlurmView(), NOW, None, train_job(), {"phase": "Succeeded"})
    assert ok.submit
    gone = decide(test_job(**spec), d.status, SlurmView(), NOW, None, train_job(), {"phase": "Failed"})
    assert not gone.submit and cond(gone.status, st.FAILED)["reason"] == st.TRAIN_JOB_FAILED


def test_rejected_fails_with_the_reason():
    status = rejected({"phase": "Pending"}, st.INVALID_SPEC, "sbatch refused: Invalid partition name", NOW)
    assert status["phase"] == "Failed" and cond(status, st.FAILED)["reason"] == st.INVALID_SPEC
