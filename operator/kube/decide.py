"""The operator's decisions (pure): a job, its status and its pods in; the status to write and actions out.

One attempt is one gang: the Service and a pod per node, each pod labelled with the attempt number (the
job's `restarts`). Any pod of the attempt failing ends the attempt: all its pods are deleted and, once they
are gone, the next attempt's pods are created (they resume from the work dir's last checkpoint). A failure
that spec.restartPolicy does not restart (contract/restarts.py; by default one the trainer says a restart
cannot fix), an exhausted backoffLimit or the deadline fail the job at once. Finished jobs keep their
exited pods (their logs) until ttlSecondsAfterFinished.

    decision = decide(job, status, pods, now)
    # apply: keep the logs of decision.keep_logs, then create decision.create, delete decision.delete (pod
    # names), the job if decision.delete_job,
    # post decision.events, write decision.status if it differs, come back after decision.requeue seconds
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from torchyard.contract.restarts import EXIT_CODE, ON_FAILURE, verdict
from torchyard.operator.api import conditions as st
from torchyard.operator.api.spec import Job, Phase, TestJob, TrainJob
from torchyard.operator.control.decide import (
    Decision,
    Stage,
    StatusBuilder,
    expire,
    lifecycle,
    may_start,
    parse_time,
)
from torchyard.operator.errors import RenderError
from torchyard.operator.kube.logs import configmap_name
from torchyard.operator.kube.observe import PodState
from torchyard.operator.kube.render import LABEL_ATTEMPT, render_k8s

# A node that dies without a word (SIGKILL, OOM) leaves no termination message; the others usually fail
# right after and rank 0 reports why. Wait this long for that report before deciding whether to retry.
REPORT_GRACE_SECONDS = 10.0
# Pods created per pass. The Job controller creates up to 500 at once; a tenth of that keeps one large
# job from holding the shared operator's memory and the API server's attention for long.
CREATE_BATCH = 50
BATCH_PAUSE_SECONDS = 1.0  # a fallback only: the new pods' watch events start the next batch sooner
# How long after its deletionTimestamp (which already includes the grace period) an old pod may linger
# before the job says it is stuck: a kubelet confirms a deletion within seconds when its node is up.
TERMINATING_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class KeepLogs:
    """Read these pods' logs before deleting them (kube/logs.py keeps them): attempt `attempt` ended `why`."""

    attempt: int
    why: str
    pods: list[str]


@dataclass
class PodDecision(Decision):
    create: list[dict[str, Any]] = field(default_factory=list)  # manifests, not yet adopted
    delete: list[str] = field(default_factory=list)  # pod names
    keep_logs: KeepLogs | None = None


class _Builder(StatusBuilder):
    """Accumulates one pod-path decision: status edits, pods to create or delete, events."""

    def __init__(self, status: dict[str, Any], now: datetime.datetime) -> None:
        super().__init__(PodDecision(status=status), now)

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
) -> PodDecision:
    """What to do next for `job`; `train_job`/`train_status`: the TrainJob a TestJob's fromTrainJob names."""
    b = _Builder(status, now)
    spec = job.spec
    stage = lifecycle(b, job, stopped="pods stopped")
    attempt = b.status["restarts"]
    if stage is Stage.SUSPENDED:
        b.remove(pods)
        _count(b, [p for p in pods if p.attempt == attempt])
        return b.d
    if stage is not Stage.RUN:
        b.stop(pods)  # what still runs; a finished job keeps its exited pods (their logs) until its TTL
        return b.d

    current = {p.rank: p for p in pods if p.attempt == attempt and not p.deleting}
    stale = [p for p in pods if (p.attempt != attempt or p.deleting) and not p.gone]
    _count(b, list(current.values()))
    _record(b, job, current.get(0))

    failed = sorted((p for p in current.values() if p.phase == "Failed"), key=lambda p: p.rank)
    # a pod the API server refused to create was never there: it is created again, not mourned as lost
    created = (st.condition(b.status["conditions"], st.CREATED) or {}).get("reason")
    refused = created == st.CREATE_REFUSED
    creating = created == st.CREATING_PODS and bool(current)
    lost = [] if refused or creating else _lost(job, current)
    if failed or lost:
        ended = {p.rank for p in failed} | set(lost)
        disrupted = sorted((p for p in pods if p.attempt == attempt and p.disruption and p.rank in ended),
                           key=lambda p: p.rank)  # fmt: skip
        _attempt_failed(b, job, failed, lost, disrupted, list(current.values()), report_grace)
        return b.d

    if stale:  # the previous attempt's pods must be gone before the new ones (same names) are created
        b.remove(stale)
        _stuck_terminating(b, stale)
        return b.d
    if not current or refused or creating or all(p.phase == "Pending" for p in current.values()):
        missing = [rank for rank in range(spec.nodes) if rank not in current]
        if missing:
            _create(b, job, attempt, missing, train_job, train_status, bool(current), creating)
            return b.d

    if all(p.phase == "Succeeded" for p in current.values()) and len(current) == spec.nodes:
        b.mark_succeeded(f"all {spec.nodes} node(s) exited 0")
        b.stop(pods)
        expire(b, spec.ttl_seconds_after_finished)
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
    disrupted: list[PodState],
    current: list[PodState],
    report_grace: float,
) -> None:
    spec = job.spec
    disruptions = b.status.get("disruptions", 0)
    if disrupted and disruptions < spec.disruption_limit:
        # Kubernetes took a pod away (eviction, preemption): not the job's failure, so neither backoffLimit
        # nor restartPolicy applies
        pod = disrupted[0]
        b.status["disruptions"] = disruptions + 1
        what = f"node {pod.rank} (pod {pod.name}) was taken away by Kubernetes ({pod.disruption})"
        limit = spec.disruption_limit
        count = f"disruption {disruptions + 1} of disruptionLimit={limit}, backoffLimit unspent"
        _restart(b, job, current, st.POD_DISRUPTED, what, count)
        _other_failures(b, failed, told=pod)
        return
    reported = [p for p in failed if p.termination is not None and p.termination.status is not None]
    first = (reported or failed or [None])[0]
    code = (first.termination, first.exit_code) if first is not None else (None, None)  # a lost pod: none
    restart, why = verdict(spec.restart_policy, *code)
    what = first.describe() if first is not None else f"the pod of node {lost[0]} disappeared"
    if not reported and any(p.active for p in current) and (restart or spec.restart_policy == EXIT_CODE):
        # Only a node without a report failed so far: give rank 0 a moment to say whether a retry helps
        # (and, under ExitCode, with which exit code the trainer ended).
        finished = [t for t in (parse_time(p.finished_at) for p in failed) if t is not None]
        waited = (b.now - min(finished)).total_seconds() if finished else report_grace
        if waited < report_grace:
            b.requeue(report_grace - waited)
            return
    if not restart:
        final = st.NON_RETRYABLE_ERROR if spec.restart_policy == ON_FAILURE else st.NOT_RESTARTED_BY_POLICY
        b.fail(final, f"{what}; {why}", current)
        _other_failures(b, failed, told=first)
        return
    reason = st.POD_FAILED if first is not None else st.POD_LOST
    failures = b.status["restarts"] - disruptions
    if failures >= spec.backoff_limit:
        b.fail(
            st.BACKOFF_LIMIT_EXCEEDED,
            f"{what}; no restarts left ({failures} of backoffLimit={spec.backoff_limit} used); pods stopped",
            current,
        )
        _other_failures(b, failed, told=first)
        return
    _restart(b, job, current, reason, what, f"restart {failures + 1} of {spec.backoff_limit}")
    _other_failures(b, failed, told=first)


def _other_failures(b: _Builder, failed: list[PodState], told: PodState | None) -> None:
    """An event for each failed pod of the ending attempt beyond the one its restart or failure names:
    `kubectl describe` then shows every node that went wrong, and how."""
    b.d.events += [("Warning", st.POD_FAILED, p.describe()) for p in failed if p is not told]


def _restart(b: _Builder, job: Job, current: list[PodState], reason: str, what: str, count: str) -> None:
    """End this attempt: its pods go, and the next attempt's resume from the last checkpoint."""
    message = f"{what}; restarting all {job.spec.nodes} node(s) from the last checkpoint ({count})"
    failed = [p.name for p in sorted(current, key=lambda p: p.rank) if p.phase == "Failed"]
    if failed:
        b.d.keep_logs = KeepLogs(b.status["restarts"], message, failed)
        message += f"; the failed pods' logs are kept in ConfigMap {configmap_name(job.metadata.name)}"
    b.status["restarts"] += 1
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
    creating: bool,
) -> None:
    """Create the pods of `ranks`, at most CREATE_BATCH per pass: memory and API requests stay bounded
    however large the gang, and the next batch follows as soon as the pods of this one are seen."""
    if not may_start(b, job, train_job, train_status):
        return
    batch = ranks[:CREATE_BATCH]
    try:
        service, *pods = render_k8s(job, train_job, batch)
    except RenderError as err:
        b.mark_failed(st.INVALID_SPEC, str(err))
        return
    for pod in pods:
        pod["metadata"]["labels"][LABEL_ATTEMPT] = str(attempt)
    b.d.create += ([] if partial else [service]) + pods
    if not b.status.get("startTime"):
        b.status["startTime"] = b.stamp
    done = job.spec.nodes - len(ranks) + len(batch)
    if done < job.spec.nodes:
        message = f"created {done} of {job.spec.nodes} pods of attempt {attempt + 1} ({CREATE_BATCH} a pass)"
        b.cond(st.CREATED, "False", st.CREATING_PODS, message)
        b.requeue(BATCH_PAUSE_SECONDS)
        return
    count = job.spec.nodes if creating else len(ranks)
    message = f"created {count} pod(s) of attempt {attempt + 1} and the headless Service"
    b.cond(st.CREATED, "True", st.PODS_CREATED, message)
    if not partial or creating:
        b.d.events.append(("Normal", st.PODS_CREATED, message))


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
