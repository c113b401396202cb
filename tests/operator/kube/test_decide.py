"""The operator's decisions, as pure functions: a job, its status and pods in; status and actions out."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from torchyard.contract.termination import Termination
from torchyard.operator.api import conditions as st
from torchyard.operator.control.decide import rfc3339
from torchyard.operator.kube.decide import CREATE_BATCH, TERMINATING_WAIT_SECONDS, decide
from torchyard.operator.kube.observe import PodState, job_key, pod_state
from torchyard.operator.kube.render import LABEL_ATTEMPT, LABEL_RANK

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def pod(rank: int, phase: str = "Running", attempt: int = 0, **kw) -> PodState:
    return PodState(f"digits-mlp-node-{rank}", "trainjob", "digits-mlp", rank, attempt, phase, **kw)


def failed(
    rank: int, code: int = 1, message: dict | None = None, attempt: int = 0, ago: float = 60
) -> PodState:
    finished = rfc3339(NOW - datetime.timedelta(seconds=ago))
    term = Termination.parse(json.dumps(message)) if message else None
    return pod(rank, "Failed", attempt, exit_code=code, finished_at=finished, termination=term)


def cond(status: dict, type_: str) -> dict:
    return st.condition(status["conditions"], type_) or {}


def test_new_job_creates_service_and_all_pods(train_job):
    d = decide(train_job(), {}, [], NOW)
    kinds = [(m["kind"], m["metadata"]["name"]) for m in d.create]
    assert kinds == [("Service", "digits-mlp"), ("Pod", "digits-mlp-node-0"), ("Pod", "digits-mlp-node-1")]
    assert all(m["metadata"]["labels"][LABEL_ATTEMPT] == "0" for m in d.create[1:])
    assert d.status["phase"] == "Pending" and d.status["startTime"] == rfc3339(NOW)
    assert cond(d.status, st.CREATED)["reason"] == st.PODS_CREATED


def test_a_large_gang_is_created_in_bounded_batches_and_none_counts_as_lost(train_job):
    job = train_job(nodes=CREATE_BATCH * 2 + 7)
    d = decide(job, {}, [], NOW)
    assert [m["kind"] for m in d.create] == ["Service"] + ["Pod"] * CREATE_BATCH
    assert cond(d.status, st.CREATED)["reason"] == st.CREATING_PODS and d.requeue and not d.events
    # the first batch already runs while the rest does not exist yet: waiting, not lost
    pods = [pod(rank) for rank in range(CREATE_BATCH)]
    d = decide(job, d.status, pods, NOW)
    assert [m["metadata"]["name"] for m in d.create] == [
        f"digits-mlp-node-{rank}" for rank in range(CREATE_BATCH, CREATE_BATCH * 2)
    ]
    assert d.status["phase"] == "Pending" and d.status["restarts"] == 0
    pods += [pod(rank, "Pending") for rank in range(CREATE_BATCH, CREATE_BATCH * 2)]
    d = decide(job, d.status, pods, NOW)
    assert len(d.create) == 7 and cond(d.status, st.CREATED)["reason"] == st.PODS_CREATED
    assert d.events == [("Normal", st.PODS_CREATED, f"created {job.spec.nodes} pod(s) of attempt 1 and the "
                         "headless Service")]
    pods += [pod(rank) for rank in range(CREATE_BATCH * 2, job.spec.nodes)]
    d = decide(job, d.status, pods[1:], NOW)  # once all exist, a vanished pod is lost: the gang restarts
    assert d.status["phase"] == "Restarting" and cond(d.status, st.RESTARTING)["reason"] == st.POD_LOST


def test_all_running_then_all_succeeded(train_job):
    d = decide(train_job(), {"phase": "Pending"}, [pod(0), pod(1)], NOW)
    assert (d.status["phase"], d.status["active"], d.create, d.delete) == ("Running", 2, [], [])
    message = json.dumps(
        {
            "status": "succeeded",
            "exitCode": 0,
            "metrics": {"accuracy/top1": 97.7},
            "epoch": 5,
            "lastCheckpoint": "/work_dir/epoch_5.pth",
        }
    )
    done = [
        pod(0, "Succeeded", exit_code=0, termination=Termination.parse(message)),
        pod(1, "Succeeded", exit_code=0),
    ]
    d = decide(train_job(), d.status, done, NOW)
    assert d.status["phase"] == "Succeeded" and d.status["completionTime"] == rfc3339(NOW)
    assert d.status["metrics"] == {"accuracy/top1": 97.7} and d.status["epoch"] == 5
    assert d.status["lastCheckpoint"] == "/work_dir/epoch_5.pth"
    assert cond(d.status, st.SUCCEEDED)["reason"] == st.COMPLETED and d.delete == []  # logs stay


def test_one_node_exited_zero_is_still_running(train_job):
    d = decide(train_job(), {"phase": "Running"}, [pod(0, "Succeeded", exit_code=0), pod(1)], NOW)
    assert d.status["phase"] == "Running"


def test_failure_restarts_the_whole_gang(train_job):
    report = {
        "status": "failed",
        "exitCode": 1,
        "reason": "RuntimeError",
        "message": "peer lost",
        "retryable": True,
    }
    d = decide(train_job(), {"phase": "Running"}, [failed(0, message=report), pod(1)], NOW)
    assert d.status["restarts"] == 1 and d.status["phase"] == "Restarting"
    assert sorted(d.delete) == ["digits-mlp-node-0", "digits-mlp-node-1"] and d.create == []
    restarting = cond(d.status, st.RESTARTING)
    assert restarting["reason"] == st.POD_FAILED and "peer lost" in restarting["message"]
    assert "restart 1 of 3" in restarting["message"]


def test_new_attempt_waits_for_old_pods_then_creates(train_job):
    status = {"phase": "Restarting", "restarts": 1}
    d = decide(train_job(), status, [pod(1, deleting=True)], NOW)
    assert d.create == [] and d.delete == [] and d.status["phase"] == "Restarting"
    d = decide(train_job(), status, [], NOW)
    assert [m["metadata"]["labels"][LABEL_ATTEMPT] for m in d.create[1:]] == ["1", "1"]
    d = decide(train_job(), d.status, [pod(0, attempt=1), pod(1, attempt=1)], NOW)
    assert d.status["phase"] == "Running" and cond(d.status, st.RESTARTING).get("status") != "True"


def test_old_pods_stuck_terminating_are_reported_after_a_bounded_wait(train_job):
    status = {"phase": "Restarting", "restarts": 1}
    deleted = rfc3339(NOW - datetime.timedelta(seconds=TERMINATING_WAIT_SECONDS - 5))
    d = decide(train_job(), status, [pod(1, deleting=True, deleted_at=deleted)], NOW)
    assert d.requeue == pytest.approx(5) and not d.events and d.create == []
    later = NOW + datetime.timedelta(seconds=10)
    d = decide(train_job(), d.status, [pod(1, deleting=True, deleted_at=deleted)], later)
    restarting = cond(d.status, st.RESTARTING)
    assert restarting["reason"] == st.PODS_STUCK_TERMINATING and "digits-mlp-node-1" in restarting["message"]
    assert "--force --grace-period=0 digits-mlp-node-1" in restarting["message"] and d.create == []
    assert [e[1] for e in d.events] == [st.PODS_STUCK_TERMINATING]
    again = decide(train_job(), d.status, [pod(1, deleting=True, deleted_at=deleted)], later)
    assert not again.events  # said once, not at every look


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (
            {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
             "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]},
            "Unschedulable",
        ),
        (
            {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
             "reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]},
            "ImagePullBackOff",
        ),
    ],
)  # fmt: skip
def test_pods_that_cannot_start_say_why_in_the_job(train_job, status, reason):
    body = {"metadata": {"name": "digits-mlp-node-1", "labels": {LABEL_RANK: "1"}}, "status": status}
    stuck = pod_state(body)
    assert stuck.waiting == reason
    d = decide(train_job(), {"phase": "Pending"}, [pod(0), stuck], NOW)
    running = cond(d.status, st.RUNNING)
    assert running["status"] == "False" and running["reason"] == reason
    assert running["message"].startswith(f"node 1 (pod digits-mlp-node-1): {reason}: ")
    assert d.events == [("Warning", reason, running["message"])]
    assert not decide(train_job(), d.status, [pod(0), stuck], NOW).events


def test_non_finite_metrics_stay_out_of_status_but_in_the_headline(test_job):
    metrics = {"psnr": float("inf"), "ssim": 1.0}  # an exact reproduction
    report = Termination.parse(json.dumps({"status": "succeeded", "exitCode": 0, "metrics": metrics}))
    done = PodState("e-node-0", "testjob", "e", 0, 0, "Succeeded", exit_code=0, termination=report)
    d = decide(test_job(), {"phase": "Running"}, [done], NOW)
    assert d.status["metrics"] == {"ssim": 1.0} and d.status["headlineMetric"] == "psnr: inf"
    json.dumps(d.status, allow_nan=False)  # what the API server accepts
    assert ("Warning", st.METRIC_NOT_FINITE) in [e[:2] for e in d.events]


def test_a_pod_whose_create_was_refused_is_created_again_not_counted_lost(train_job):
    refused = st.set_condition([], st.CREATED, "False", st.CREATE_REFUSED, "exceeded quota", rfc3339(NOW))
    d = decide(train_job(), {"phase": "Pending", "conditions": refused}, [pod(0)], NOW)
    assert [m["metadata"]["name"] for m in d.create if m["kind"] == "Pod"] == ["digits-mlp-node-1"]
    assert d.status["restarts"] == 0 and d.delete == []


def test_exited_pods_of_an_old_attempt_are_deleted(train_job):
    d = decide(train_job(), {"phase": "Restarting", "restarts": 1}, [failed(0), pod(1, "Succeeded")], NOW)
    assert sorted(d.delete) == ["digits-mlp-node-0", "digits-mlp-node-1"] and d.create == []


def test_backoff_limit_exceeded_fails_and_stops_pods(train_job):
    d = decide(
        train_job(backoffLimit=2),
        {"phase": "Running", "restarts": 2},
        [failed(1, attempt=2), pod(0, attempt=2)],
        NOW,
    )
    assert d.status["phase"] == "Failed" and d.status["restarts"] == 2
    failed_cond = cond(d.status, st.FAILED)
    assert failed_cond["reason"] == st.BACKOFF_LIMIT_EXCEEDED and "backoffLimit=2" in failed_cond["message"]
    assert d.delete == ["digits-mlp-node-0"]  # the running one; the failed pod stays for its logs


def test_non_retryable_fails_at_once_with_the_trainers_message(train_job):
    report = {
        "status": "failed",
        "exitCode": 3,
        "reason": "ConfigError",
        "message": "model.typo: unknown key",
        "retryable": False,
    }
    d = decide(train_job(), {"phase": "Running"}, [failed(0, 1, report), pod(1)], NOW)
    assert d.status["phase"] == "Failed" and d.status["restarts"] == 0
    message = cond(d.status, st.FAILED)["message"]
    assert cond(d.status, st.FAILED)["reason"] == st.NON_RETRYABLE_ERROR
    assert "ConfigError: model.typo: unknown key" in message
    assert d.delete == ["digits-mlp-node-1"]


def test_silent_failure_waits_briefly_for_rank_zero(train_job):
    status = {"phase": "Running"}
    d = decide(train_job(), status, [pod(0), failed(1, 137, ago=2)], NOW, report_grace=10)
    assert d.status.get("restarts", 0) == 0 and d.delete == [] and d.requeue == pytest.approx(8)
    d = decide(train_job(), status, [pod(0), failed(1, 137, ago=11)], NOW, report_grace=10)
    assert d.status["restarts"] == 1


CRASH = {"status": "failed", "exitCode": 1, "reason": "RuntimeError", "message": "boom", "retryable": True}


def test_a_restart_keeps_the_logs_of_the_failed_pods_of_the_ending_attempt(train_job):
    status = {"phase": "Running", "restarts": 1}
    pods = [pod(0, attempt=1), failed(1, 137, attempt=1), failed(2, 1, CRASH, attempt=1)]

    d = decide(train_job(nodes=3), status, pods, NOW)

    assert d.keep_logs is not None
    assert d.keep_logs.attempt == 1 and d.keep_logs.pods == ["digits-mlp-node-1", "digits-mlp-node-2"]
    assert "restarting all 3 node(s)" in d.keep_logs.why
    # a job that fails for good keeps its exited pods (and their logs) until its TTL: nothing to copy
    final = decide(train_job(backoffLimit=1, nodes=3), status, pods, NOW)
    assert final.status["phase"] == "Failed" and final.keep_logs is None
    # the next pass finds the old pods deleting: their logs are kept already
    again = decide(train_job(nodes=3), d.status, [dataclasses.replace(p, deleting=True) for p in pods], NOW)
    assert again.keep_logs is None


def test_restart_policy_exit_code_fails_on_the_trainers_1_to_127_and_restarts_a_killed_node(train_job):
    job = train_job(restartPolicy="ExitCode")
    d = decide(job, {"phase": "Running"}, [failed(0, 1, CRASH), pod(1)], NOW)
    assert d.status["phase"] == "Failed" and d.status["restarts"] == 0
    failure = cond(d.status, st.FAILED)
    assert failure["reason"] == st.NOT_RESTARTED_BY_POLICY
    assert "exit code 1 is permanent under restartPolicy ExitCode" in failure["message"]
    # a node killed without a word from rank 0: its 137 restarts the gang, after rank 0's grace
    d = decide(job, {"phase": "Running"}, [pod(0), failed(1, 137, ago=2)], NOW, report_grace=10)
    assert d.status.get("restarts", 0) == 0 and d.requeue == pytest.approx(8)
    d = decide(job, {"phase": "Running"}, [pod(0), failed(1, 137, ago=11)], NOW, report_grace=10)
    assert d.status["restarts"] == 1 and d.status["phase"] == "Restarting"
    # and a pod that vanished left no exit code at all: restarted too
    assert decide(job, {"phase": "Running"}, [pod(0)], NOW).status["restarts"] == 1


def test_restart_policy_never_fails_at_the_first_failure_or_loss(train_job):
    job = train_job(restartPolicy="Never")
    for pods in ([pod(0), failed(1, 137, ago=2)], [pod(0)]):
        d = decide(job, {"phase": "Running"}, pods, NOW, report_grace=10)
        assert d.status["phase"] == "Failed" and d.status["restarts"] == 0
        assert cond(d.status, st.FAILED)["reason"] == st.NOT_RESTARTED_BY_POLICY
        assert "restartPolicy Never" in cond(d.status, st.FAILED)["message"]


def test_restart_policy_on_failure_is_the_default_and_restarts_a_crash(train_job):
    assert train_job().spec.restart_policy == "OnFailure"
    d = decide(train_job(), {"phase": "Running"}, [failed(0, 1, CRASH), pod(1)], NOW)
    assert d.status["restarts"] == 1


def test_an_evicted_or_preempted_pod_restarts_the_gang_without_spending_backoff_limit(train_job):
    job = train_job(backoffLimit=0, restartPolicy="Never")
    evicted = pod(1, deleting=True, deleted_at=rfc3339(NOW), disruption="EvictionByEvictionAPI")
    d = decide(job, {"phase": "Running"}, [pod(0), evicted], NOW)
    assert (d.status["phase"], d.status["restarts"], d.status["disruptions"]) == ("Restarting", 1, 1)
    restarting = cond(d.status, st.RESTARTING)
    assert restarting["reason"] == st.POD_DISRUPTED
    assert "was taken away by Kubernetes (EvictionByEvictionAPI)" in restarting["message"]
    assert "disruption 1 of disruptionLimit=10, backoffLimit unspent" in restarting["message"]
    assert d.delete == ["digits-mlp-node-0"] and d.events[0][:2] == ("Warning", st.POD_DISRUPTED)
    # a kubelet's eviction (node pressure) ends the pod Failed, reason Evicted: the same
    kubelet_evicted = pod(0, "Failed", attempt=1, exit_code=137, disruption="Evicted")
    d = decide(job, d.status, [kubelet_evicted, pod(1, attempt=1)], NOW)
    assert (d.status["restarts"], d.status["disruptions"]) == (2, 2)
    # a later real failure still finds backoffLimit (0) unspent by them, and it is spent
    d = decide(job, d.status, [failed(0, 137, attempt=2), pod(1, attempt=2)], NOW)
    assert d.status["phase"] == "Failed" and cond(d.status, st.FAILED)["reason"] == st.NOT_RESTARTED_BY_POLICY


def test_a_preempted_pod_already_deleted_still_counts_as_a_disruption_and_blocks_nothing(train_job):
    grave = pod(1, deleting=True, gone=True, disruption="PreemptionByScheduler")  # the informer's memory
    d = decide(train_job(), {"phase": "Running"}, [pod(0), grave], NOW)
    assert cond(d.status, st.RESTARTING)["reason"] == st.POD_DISRUPTED and d.delete == ["digits-mlp-node-0"]
    d = decide(train_job(), d.status, [grave], NOW)  # node 0 is gone too: the next attempt starts
    created = [m["metadata"]["name"] for m in d.create]
    assert created == ["digits-mlp", "digits-mlp-node-0", "digits-mlp-node-1"]


def test_past_the_disruption_limit_an_eviction_is_a_failure(train_job):
    job = train_job(disruptionLimit=0)
    evicted = pod(1, deleting=True, deleted_at=rfc3339(NOW), disruption="PreemptionByScheduler")
    d = decide(job, {"phase": "Running"}, [pod(0), evicted], NOW)
    assert d.status["restarts"] == 1 and d.status.get("disruptions", 0) == 0
    assert cond(d.status, st.RESTARTING)["reason"] == st.POD_LOST
    assert "restart 1 of 3" in cond(d.status, st.RESTARTING)["message"]


def test_the_disruption_reason_comes_from_the_pods_condition_or_a_kubelets_eviction():
    body = {"metadata": {"name": "p", "labels": {}}, "status": {"phase": "Running", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]}}
    assert pod_state(body).disruption == "PreemptionByScheduler"
    body["status"] = {"phase": "Failed", "reason": "Evicted"}
    assert pod_state(body).disruption == "Evicted"
    body["status"] = {"phase": "Failed", "reason": "Error"}
    assert pod_state(body).disruption == ""


def test_every_failed_pod_of_an_ending_attempt_gets_its_own_event(train_job):
    oom = PodState("digits-mlp-node-1", "trainjob", "digits-mlp", 1, 0, "Failed", exit_code=137,
                   exit_reason="OOMKilled", finished_at=rfc3339(NOW))  # fmt: skip
    d = decide(train_job(nodes=3), {"phase": "Running"}, [failed(0, 1, CRASH), oom, pod(2)], NOW)
    assert [(kind, reason) for kind, reason, _ in d.events] == [("Warning", st.POD_FAILED)] * 2
    assert "RuntimeError: boom" in d.events[0][2]  # the restart names rank 0's report
    assert d.events[1][2].startswith("node 1 (pod digits-mlp-node-1) exited with code 137 (OOMKilled)")


def test_vanished_pod_of_a_running_attempt_restarts_the_gang(train_job):
    d = decide(train_job(), {"phase": "Running"}, [pod(0)], NOW)
    assert d.status["restarts"] == 1 and cond(d.status, st.RESTARTING)["reason"] == st.POD_LOST


def test_missing_pod_of_a_pending_attempt_is_created(train_job):
    d = decide(train_job(), {"phase": "Pending"}, [pod(0, "Pending")], NOW)
    assert [m["metadata"]["name"] for m in d.create] == ["digits-mlp-node-1"]


def test_suspend_stops_pods_and_resume_starts_again(train_job):
    d = decide(train_job(suspend=True), {"phase": "Running", "startTime": "x"}, [pod(0), pod(1)], NOW)
    assert d.status["phase"] == "Suspended" and sorted(d.delete) == ["digits-mlp-node-0", "digits-mlp-node-1"]
    assert cond(d.status, st.SUSPENDED)["status"] == "True" and d.status["startTime"] is None
    d = decide(train_job(), d.status, [], NOW)
    assert cond(d.status, st.SUSPENDED)["reason"] == st.JOB_RESUMED and len(d.create) == 3


def test_deadline(train_job):
    start = rfc3339(NOW - datetime.timedelta(seconds=100))
    d = decide(
        train_job(activeDeadlineSeconds=60), {"phase": "Running", "startTime": start}, [pod(0), pod(1)], NOW
    )
    assert d.status["phase"] == "Failed" and cond(d.status, st.FAILED)["reason"] == st.DEADLINE_EXCEEDED
    assert len(d.delete) == 2
    d = decide(
        train_job(activeDeadlineSeconds=160), {"phase": "Running", "startTime": start}, [pod(0), pod(1)], NOW
    )
    assert d.status["phase"] == "Running" and d.requeue == pytest.approx(60)


def test_ttl_deletes_the_job_once_due(train_job):
    done = {"phase": "Succeeded", "completionTime": rfc3339(NOW - datetime.timedelta(seconds=30))}
    d = decide(train_job(ttlSecondsAfterFinished=100), done, [pod(0, "Succeeded")], NOW)
    assert not d.delete_job and d.requeue == pytest.approx(70)
    d = decide(train_job(ttlSecondsAfterFinished=10), done, [pod(0, "Succeeded")], NOW)
    assert d.delete_job


def test_finished_job_stops_leftover_pods_but_keeps_exited_ones(train_job):
    d = decide(train_job(), {"phase": "Failed"}, [failed(0), pod(1)], NOW)
    assert d.delete == ["digits-mlp-node-1"] and d.create == []


def test_test_job_waits_for_its_train_job(test_job, train_job):
    job = test_job(checkpoint=None, fromTrainJob={"name": "digits-mlp"})
    d = decide(job, {}, [], NOW)
    assert d.create == [] and cond(d.status, st.CREATED)["reason"] == st.WAITING_FOR_TRAIN_JOB
    train = train_job(workDir={"claimName": "runs"})
    d = decide(job, {}, [], NOW, train, {"phase": "Running"})
    assert d.create == [] and "Running" in cond(d.status, st.CREATED)["message"]
    d = decide(job, {}, [], NOW, train, {"phase": "Failed"})
    assert d.status["phase"] == "Failed" and cond(d.status, st.FAILED)["reason"] == st.TRAIN_JOB_FAILED
    d = decide(job, {}, [], NOW, train, {"phase": "Succeeded"})
    args = d.create[1]["spec"]["containers"][0]["command"]
    assert "/work_dir/best_checkpoint" in args


def test_test_job_metrics_and_headline(test_job):
    message = json.dumps(
        {
            "status": "succeeded",
            "exitCode": 0,
            "checkpoint": "/ckpt/best.pth",
            "metrics": {"FID-Full-50k/fid": 3.65, "IS/is": 9.1},
        }
    )
    pods = [
        PodState(
            "digits-eval-node-0",
            "testjob",
            "digits-eval",
            0,
            0,
            "Succeeded",
            exit_code=0,
            termination=Termination.parse(message),
        )
    ]
    d = decide(test_job(), {"phase": "Running"}, pods, NOW)
    assert d.status["metrics"] == {"FID-Full-50k/fid": 3.65, "IS/is": 9.1}
    assert (
        d.status["headlineMetric"] == "FID-Full-50k/fid: 3.65" and d.status["checkpoint"] == "/ckpt/best.pth"
    )


def test_conditions_keep_their_transition_time():
    conditions = st.set_condition([], "Running", "True", "A", "m", "t1")
    conditions = st.set_condition(conditions, "Running", "True", "B", "m2", "t2")
    assert conditions == [
        {"type": "Running", "status": "True", "reason": "B", "message": "m2", "lastTransitionTime": "t1"}
    ]
    conditions = st.set_condition(conditions, "Running", "False", "C", "", "t3")
    assert conditions[0]["lastTransitionTime"] == "t3"


def test_termination_message_parsing():
    assert Termination.parse("") is None
    assert Termination.parse("Traceback ...\nKilled") is None  # a log tail is never read
    term = Termination.parse('{"status": "failed", "exitCode": 2, "retryable": false, "epoch": 3}')
    assert (term.status, term.exit_code, term.retryable, term.details) == ("failed", 2, False, {"epoch": 3})


def test_a_log_tail_in_the_termination_message_never_reaches_status_or_events(train_job):
    """Under FallbackToLogsOnError a kubelet puts the log's last lines there; readers of trainjobs must not
    see what only pods/log may show."""
    from torchyard.operator.kube.render import render_k8s

    body = render_k8s(train_job())[1]
    tail = "loading s3://bucket with AWS_SECRET_ACCESS_KEY=hunter2\nKilled"
    finished = rfc3339(NOW - datetime.timedelta(seconds=60))  # past the wait for rank 0's report
    terminated = {"exitCode": 1, "finishedAt": finished, "message": tail}
    body["status"] = {"phase": "Failed", "containerStatuses": [{"state": {"terminated": terminated}}]}

    d = decide(train_job(), {"phase": "Running"}, [pod_state(body), pod(1)], NOW)

    told = json.dumps([d.status, d.events])
    assert "Restarting" in told and "exited with code 1" in told
    assert "hunter2" not in told and "Killed" not in told


def test_pods_ask_for_the_trainers_message_only(train_job):
    from torchyard.operator.kube.render import render_k8s

    for body in render_k8s(train_job())[1:]:
        assert body["spec"]["containers"][0]["terminationMessagePolicy"] == "File"


def test_pod_state_from_a_pod_body(train_job):
    from torchyard.operator.kube.render import render_k8s

    body = render_k8s(train_job())[2]
    body["metadata"]["labels"][LABEL_ATTEMPT] = "2"
    body["status"] = {
        "phase": "Failed",
        "containerStatuses": [{"state": {"terminated": {"exitCode": 137, "finishedAt": "t"}}}],
    }
    state = pod_state(body)
    assert (state.rank, state.attempt, state.phase, state.exit_code, state.kind) == (
        1,
        2,
        "Failed",
        137,
        "trainjob",
    )
    assert job_key(body) == ("default", "trainjob", "digits-mlp")


def test_the_trainer_container_speaks_for_the_pod_not_a_sidecar():
    labels = {"torchyard.dev/kind": "trainjob", "torchyard.dev/job-name": "x", LABEL_RANK: "0"}
    statuses = [
        {"name": "trainjob", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
        {"name": "shipper", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
    ]
    body = {"metadata": {"name": "x-node-0", "labels": labels},
            "status": {"phase": "Failed", "containerStatuses": statuses}}  # fmt: skip
    state = pod_state(body)
    assert (state.exit_code, state.exit_reason) == (137, "OOMKilled")
