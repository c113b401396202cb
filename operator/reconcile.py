"""The operator's decisions (pure): a job, its status and its pods in; the status to write and actions out.

One attempt is one gang: the Service and a pod per node, each pod labelled with the attempt number (the
job's `restarts`). Any pod of the attempt failing ends the attempt: all its pods are deleted and, once they
are gone, the next attempt's pods are created (they resume from the work dir's last checkpoint). A failure
a restart cannot fix (the trainer says `retryable: false`), an exhausted backoffLimit or the deadline fail
the job at once. Finished jobs keep their exited pods (their logs) until ttlSecondsAfterFinished.

    decision = decide(job, status, pods, now)
    # apply: create decision.create, delete decision.delete (pod names), the job if decision.delete_job,
    # post decision.events, write decision.status if it differs, come back after decision.requeue seconds
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from torchyard.operator import status as st
from torchyard.operator.api import Job, Phase, TestJob, TrainJob
from torchyard.operator.command import RenderError
from torchyard.operator.render_k8s import render_k8s
from torchyard.operator.status import PodState

TERMINAL = (Phase.SUCCEEDED.value, Phase.FAILED.value)
# A node that dies without a word (SIGKILL, OOM) leaves no termination message; the others usually fail
# right after and rank 0 reports why. Wait this long for that report before deciding whether to retry.
REPORT_GRACE_SECONDS = 10.0
# How long after its deletionTimestamp (which already includes the grace period) an old pod may linger
# before the job says it is stuck: a kubelet confirms a deletion within seconds when its node is up.
TERMINATING_WAIT_SECONDS = 120.0
WAIT_FOR_TRAIN_JOB_SECONDS = 5.0


@dataclass
class Decision:
    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)  # manifests, not yet adopted
    delete: list[str] = field(default_factory=list)  # pod names
    delete_job: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)
    requeue: float | None = None  # seconds until the next look, even without any event


def rfc3339(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class StatusBuilder:
    """Status edits of one decision, every condition stamped with the same `now` (shared by both backends)."""

    def __init__(self, decision: Any, now: datetime.datetime) -> None:
        self.now, self.stamp = now, rfc3339(now)
        self.d = decision
        self.d.status = {**decision.status, "conditions": list(decision.status.get("conditions") or [])}

    @property
    def status(self) -> dict[str, Any]:
        return self.d.status

    def cond(self, type_: str, value: str, reason: str, message: str) -> None:
        self.status["conditions"] = st.set_condition(
            self.status["conditions"], type_, value, reason, message, self.stamp
        )

    def clear(self, type_: str, reason: str, message: str = "") -> None:
        self.status["conditions"] = st.clear_condition(
            self.status["conditions"], type_, reason, message, self.stamp
        )

    def phase(self, phase: Phase, reason: str, message: str, warning: bool = False) -> None:
        if self.status.get("phase") != phase.value:
            self.d.events.append(("Warning" if warning else "Normal", reason, message))
        self.status["phase"] = phase.value

    def warn_on_change(self, type_: str, value: str, reason: str, message: str) -> None:
        """Set a condition, with a Warning event when its reason or message is new."""
        before = st.condition(self.status["conditions"], type_) or {}
        if (before.get("status"), before.get("reason"), before.get("message")) != (value, reason, message):
            self.d.events.append(("Warning", reason, message))
        self.cond(type_, value, reason, message)

    def mark_failed(self, reason: str, message: str) -> None:
        self.cond(st.FAILED, "True", reason, message)
        self.clear(st.RUNNING, reason, message)
        self.clear(st.RESTARTING, reason, message)
        self.status["completionTime"] = self.stamp
        self.phase(Phase.FAILED, reason, message, warning=True)


class _Builder(StatusBuilder):
    """Accumulates one pod-path decision: status edits, pods to create or delete, events."""

    def __init__(self, status: dict[str, Any], now: datetime.datetime) -> None:
        super().__init__(Decision(status=status), now)

    def requeue(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.d.requeue = seconds if self.d.requeue is None else min(self.d.requeue, seconds)

    def stop(self, pods: list[PodState]) -> None:
        self.d.delete += [p.name for p in pods if p.active and not p.deleting and p.name not in self.d.delete]

    def remove(self, pods: list[PodState]) -> None:
        """Delete pods whether or not they still run (exited pods of an old attempt block new names)."""
        self.d.delete += [p.name for p in pods if not p.deleting and p.name not in self.d.delete]

    def fail(self, reason: str, message: str, pods: list[PodState]) -> None:
        self.mark_failed(reason, message)
        self.stop(pods)


def decide(
    job: Job,
    status: dict[str, Any],
    pods: list[PodState],
    now: datetime.datetime,
    train_job: TrainJob | None = None,
    train_status: dict[str, Any] | None = None,
    report_grace: float = REPORT_GRACE_SECONDS,
) -> Decision:
    """What to do next for `job`; `train_job`/`train_status`: the TrainJob a TestJob's fromTrainJob names."""
    b = _Builder(status, now)
    b.status.setdefault("phase", Phase.PENDING.value)
    b.status.setdefault("restarts", 0)
    spec = job.spec
    if b.status["phase"] in TERMINAL:
        _finished(b, job, pods)
        return b.d
    if spec.suspend:
        b.remove(pods)
        message = "spec.suspend is true: pods stopped; set it to false to resume from the last checkpoint"
        b.cond(st.SUSPENDED, "True", st.JOB_SUSPENDED, message)
        b.clear(st.RUNNING, st.JOB_SUSPENDED, message)
        b.status["startTime"] = None  # as for Kubernetes Jobs, activeDeadlineSeconds restarts on resume
        b.phase(Phase.SUSPENDED, st.JOB_SUSPENDED, message)
        _count(b, [p for p in pods if p.attempt == b.status["restarts"]])
        return b.d
    if b.status["phase"] == Phase.SUSPENDED.value:
        message = "spec.suspend is false: starting again from the last checkpoint"
        b.cond(st.SUSPENDED, "False", st.JOB_RESUMED, message)
        b.phase(Phase.PENDING, st.JOB_RESUMED, message)

    start = parse_time(b.status.get("startTime"))
    if spec.active_deadline_seconds and start is not None:
        left = (start - now).total_seconds() + spec.active_deadline_seconds
        if left <= 0:
            b.fail(
                st.DEADLINE_EXCEEDED,
                f"the job ran longer than activeDeadlineSeconds={spec.active_deadline_seconds}; pods stopped",
                pods,
            )
            return b.d
        b.requeue(left)

    attempt = b.status["restarts"]
    current = {p.rank: p for p in pods if p.attempt == attempt and not p.deleting}
    stale = [p for p in pods if p.attempt != attempt or p.deleting]
    _count(b, list(current.values()))
    _record(b, job, current.get(0))

    failed = sorted((p for p in current.values() if p.phase == "Failed"), key=lambda p: p.rank)
    # a pod the API server refused to create was never there: it is created again, not mourned as lost
    refused = (st.condition(b.status["conditions"], st.CREATED) or {}).get("reason") == st.CREATE_REFUSED
    lost = [] if refused else _lost(job, current)
    if failed or lost:
        _attempt_failed(b, job, failed, lost, list(current.values()), report_grace)
        return b.d

    if stale:  # the previous attempt's pods must be gone before the new ones (same names) are created
        b.remove(stale)
        _stuck_terminating(b, stale)
        return b.d
    if not current or refused or all(p.phase == "Pending" for p in current.values()):
        missing = [rank for rank in range(spec.nodes) if rank not in current]
        if missing:
            _create(b, job, attempt, missing, train_job, train_status, bool(current))
            return b.d

    if all(p.phase == "Succeeded" for p in current.values()) and len(current) == spec.nodes:
        message = f"all {spec.nodes} node(s) exited 0"
        metrics = b.status.get("metrics") or {}
        if metrics:
            message += "; " + ", ".join(f"{k}={v:g}" for k, v in list(metrics.items())[:4])
        b.cond(st.SUCCEEDED, "True", st.COMPLETED, message)
        b.clear(st.RUNNING, st.COMPLETED, message)
        b.clear(st.RESTARTING, st.COMPLETED, message)
        b.status["completionTime"] = b.stamp
        b.phase(Phase.SUCCEEDED, st.COMPLETED, message)
        _finished(b, job, pods)
    elif waiting := sorted((p for p in current.values() if p.waiting), key=lambda p: p.rank):
        why = [f"node {p.rank} (pod {p.name}): {p.waiting}: {p.waiting_message}" for p in waiting]
        message = "; ".join(why)
        b.warn_on_change(st.RUNNING, "False", waiting[0].waiting, message)
    elif all(p.phase in ("Running", "Succeeded") for p in current.values()):
        message = f"all {spec.nodes} node(s) running" + (f" (attempt {attempt + 1})" if attempt else "")
        b.cond(st.RUNNING, "True", st.ALL_NODES_RUNNING, message)
        b.clear(st.RESTARTING, st.ALL_NODES_RUNNING, message)
        b.phase(Phase.RUNNING, st.ALL_NODES_RUNNING, message)
    return b.d


def _stuck_terminating(b: _Builder, stale: list[PodState]) -> None:
    """Old pods that a node never finishes deleting (its node is down or gone) block the next attempt,
    whose pods have the same names: after a bounded wait, say so and what to do; never force it here."""
    stuck = []
    for pod in stale:
        since = parse_time(pod.deleted_at)
        if since is None:
            continue
        left = (since - b.now).total_seconds() + TERMINATING_WAIT_SECONDS
        if left <= 0:
            stuck.append(pod.name)
        else:
            b.requeue(left)
    if stuck:
        message = (
            f"pod(s) {', '.join(stuck)} still terminating {TERMINATING_WAIT_SECONDS:.0f} s after their grace "
            "period: their node may be down; the next attempt waits for them. If the node is gone for good: "
            f"kubectl delete pod --force --grace-period=0 {' '.join(stuck)}"
        )
        b.warn_on_change(st.RESTARTING, "True", st.PODS_STUCK_TERMINATING, message)


def _finished(b: _Builder, job: Job, pods: list[PodState]) -> None:
    """A finished job: stop what still runs, keep exited pods for their logs, delete the job after its TTL."""
    b.stop(pods)
    ttl = job.spec.ttl_seconds_after_finished
    done = parse_time(b.status.get("completionTime"))
    if ttl is None or done is None:
        return
    left = (done - b.now).total_seconds() + ttl
    if left <= 0:
        b.d.delete_job = True
    else:
        b.requeue(left)


def _lost(job: Job, current: dict[int, PodState]) -> list[int]:
    """Ranks whose pod vanished while the attempt was under way (a lone re-created pod could never rejoin)."""
    if not current or all(p.phase == "Pending" for p in current.values()):
        return []
    return [rank for rank in range(job.spec.nodes) if rank not in current]


def _attempt_failed(
    b: _Builder,
    job: Job,
    failed: list[PodState],
    lost: list[int],
    current: list[PodState],
    report_grace: float,
) -> None:
    spec = job.spec
    reported = [p for p in failed if p.termination is not None and p.termination.status is not None]
    first = (reported or failed or [None])[0]
    if first is not None and not first.retryable():
        b.fail(st.NON_RETRYABLE_ERROR, f"{first.describe()}; a restart cannot fix this", current)
        return
    if not reported and any(p.active for p in current):
        # Only a node without a report failed so far: give rank 0 a moment to say whether a retry helps.
        finished = [t for t in (parse_time(p.finished_at) for p in failed) if t is not None]
        waited = (b.now - min(finished)).total_seconds() if finished else report_grace
        if waited < report_grace:
            b.requeue(report_grace - waited)
            return
    what = first.describe() if first is not None else f"the pod of node {lost[0]} disappeared"
    reason = st.POD_FAILED if first is not None else st.POD_LOST
    restarts = b.status["restarts"]
    if restarts >= spec.backoff_limit:
        b.fail(
            st.BACKOFF_LIMIT_EXCEEDED,
            f"{what}; no restarts left ({restarts} of backoffLimit={spec.backoff_limit} used); pods stopped",
            current,
        )
        return
    message = (
        f"{what}; restarting all {spec.nodes} node(s) from the last checkpoint "
        f"(restart {restarts + 1} of {spec.backoff_limit})"
    )
    b.status["restarts"] = restarts + 1
    b.cond(st.RESTARTING, "True", reason, message)
    b.clear(st.RUNNING, reason, message)
    b.d.events.append(("Warning", reason, message))
    b.status["phase"] = Phase.RESTARTING.value
    b.remove(current)


def _create(
    b: _Builder,
    job: Job,
    attempt: int,
    ranks: list[int],
    train_job: TrainJob | None,
    train_status: dict[str, Any] | None,
    partial: bool,
) -> None:
    ref = job.spec.from_train_job if isinstance(job, TestJob) and job.spec.command is None else None
    if ref is not None:
        waiting = train_job_problem(ref.name, train_job, train_status)
        if waiting:
            failed = (train_status or {}).get("phase") == Phase.FAILED.value
            if failed:
                b.fail(st.TRAIN_JOB_FAILED, waiting, [])
            else:
                b.cond(st.CREATED, "False", st.WAITING_FOR_TRAIN_JOB, waiting)
                b.requeue(WAIT_FOR_TRAIN_JOB_SECONDS)
            return
    try:
        service, *pods = render_k8s(job, train_job)
    except RenderError as err:
        b.fail(st.INVALID_SPEC, str(err), [])
        return
    for pod in pods:
        pod["metadata"]["labels"][st.LABEL_ATTEMPT] = str(attempt)
    b.d.create += ([] if partial else [service]) + [pods[rank] for rank in ranks]
    message = f"created {len(ranks)} pod(s) of attempt {attempt + 1} and the headless Service"
    b.cond(st.CREATED, "True", st.PODS_CREATED, message)
    if not b.status.get("startTime"):
        b.status["startTime"] = b.stamp
    if not partial:
        b.d.events.append(("Normal", st.PODS_CREATED, message))


def train_job_problem(name: str, train_job: TrainJob | None, train_status: dict[str, Any] | None) -> str:
    """Why the TestJob cannot start yet ('' when it can): its TrainJob must exist and have a checkpoint."""
    if train_job is None:
        return f"waiting for TrainJob {name!r} (spec.fromTrainJob) to exist in this namespace"
    train_status = train_status or {}
    phase = train_status.get("phase", Phase.PENDING.value)
    if phase == Phase.SUCCEEDED.value or train_status.get("lastCheckpoint"):
        return ""
    if phase == Phase.FAILED.value:
        return f"TrainJob {name!r} failed without a checkpoint to evaluate"
    return f"waiting for TrainJob {name!r} to succeed or save a checkpoint (it is {phase})"


def _count(b: _Builder, current: list[PodState]) -> None:
    b.status["active"] = sum(p.phase == "Running" for p in current)
    b.status["succeeded"] = sum(p.phase == "Succeeded" for p in current)
    b.status["failed"] = sum(p.phase == "Failed" for p in current)


def _record(b: _Builder, job: Job, rank0: PodState | None) -> None:
    """Copy rank 0's termination message (metrics, progress, checkpoints) into the status."""
    if rank0 is None or rank0.termination is None:
        return
    details = rank0.termination.details
    metrics = details.get("metrics")
    if isinstance(metrics, dict) and metrics:
        finite, dropped = st.status_metrics(metrics)
        if dropped and b.status.get("metrics") != finite:
            message = f"left out of status.metrics, JSON cannot hold them: {', '.join(dropped)} (not finite)"
            b.d.events.append(("Warning", st.METRIC_NOT_FINITE, message))
        b.status["metrics"] = finite
        if isinstance(job, TestJob):
            b.status["headlineMetric"] = st.headline(metrics)
    for key in ("epoch", "iter"):
        if isinstance(details.get(key), int):
            b.status[key] = details[key]
    names = ("lastCheckpoint", "bestCheckpoint") if isinstance(job, TrainJob) else ("checkpoint",)
    for key in names:
        if isinstance(details.get(key), str) and details[key]:
            b.status[key] = details[key]
