"""Operator decisions in Slurm mode (pure): a job, its status and its Slurm job in; status and actions out.

The Slurm counterpart of reconcile.py. One TrainJob/TestJob is one Slurm job at a time (the bridge submits
it; Slurm itself requeues it near its time limit, counted in `restarts`). Slurm states map onto the pod
path's phases and conditions through slurm_state.job_phase; the condition types and the reasons shared with
the pod path (Completed, DeadlineExceeded, Suspended, Resumed, InvalidSpec...) are status.py's constants.

- no Slurm job yet: submit (a TestJob with fromTrainJob first waits for its TrainJob, as on the pod path);
- spec.suspend: scancel, phase Suspended; back to false: submit again (resume: auto continues from the
  work dir's last checkpoint), startTime (and so activeDeadlineSeconds) starting over, as for pods;
- activeDeadlineSeconds passed: scancel, Failed with DeadlineExceeded;
- finished: ttlSecondsAfterFinished after completionTime, delete the job object.
Metrics and checkpoints come from the work dir (`progress`), so status shows them as on the pod path.

    decision = decide(job, status, SlurmView(job_id, info), now, progress)
    # apply: scancel decision.cancel, submit if decision.submit (then decide again with the new job),
    # write decision.status if it differs, post decision.events, delete the object if decision.delete_job
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from torchyard.operator import slurm_state as ss
from torchyard.operator import status as st
from torchyard.operator.api import Job, Phase, TestJob, TrainJob
from torchyard.operator.reconcile import TERMINAL, StatusBuilder, parse_time, train_job_problem

SUBMITTED = ss.SUBMITTED  # condition reason: sbatch accepted the job


@dataclass(frozen=True)
class SlurmView:
    """The Slurm job this object owns, as last seen."""

    job_id: str | None = None  # None: nothing submitted for this object yet
    info: dict[str, str] | None = None  # `scontrol show job` fields; None: Slurm does not know the job

    @property
    def state(self) -> str:
        return ss.base_state((self.info or {}).get("JobState", ""))

    @property
    def active(self) -> bool:
        """Queued or running: it would still use (or wait for) nodes."""
        return self.info is not None and bool(self.state) and not ss.is_terminal(self.state)


@dataclass
class SlurmDecision:
    status: dict[str, Any]
    submit: bool = False
    cancel: str | None = None  # a Slurm job id to scancel
    delete_job: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)


class _Builder(StatusBuilder):
    def __init__(self, status: dict[str, Any], now: datetime.datetime) -> None:
        super().__init__(SlurmDecision(status=status), now)

    def fail(self, reason: str, message: str) -> None:
        self.mark_failed(reason, message)

    def counts(self, nodes: int, phase: Phase | None) -> None:
        """Per-node counts as on the pod path: the allocation's nodes are running, succeeded or failed."""
        self.status["active"] = nodes if phase is Phase.RUNNING else 0
        self.status["succeeded"] = nodes if phase is Phase.SUCCEEDED else 0
        self.status["failed"] = nodes if phase is Phase.FAILED else 0


def decide(
    job: Job,
    status: dict[str, Any],
    slurm: SlurmView,
    now: datetime.datetime,
    progress: dict[str, Any] | None = None,
    train_job: TrainJob | None = None,
    train_status: dict[str, Any] | None = None,
) -> SlurmDecision:
    """What to do next for `job` whose Slurm job is `slurm`. `progress`: status fields read from the work
    dir (metrics, lastCheckpoint...); `train_job`/`train_status`: the TrainJob of a TestJob's fromTrainJob."""
    b = _Builder(status, now)
    b.status.setdefault("phase", Phase.PENDING.value)
    b.status.setdefault("restarts", 0)
    spec = job.spec
    if b.status["phase"] in TERMINAL:
        _expire(b, job)
        return b.d
    b.status.update({key: value for key, value in (progress or {}).items() if value})

    if spec.suspend:
        message = (
            "spec.suspend is true: the Slurm job is cancelled; set it to false to submit it again, "
            "resuming from the last checkpoint"
        )
        if slurm.active:
            b.d.cancel = slurm.job_id
        b.cond(st.SUSPENDED, "True", st.JOB_SUSPENDED, message)
        b.clear(st.RUNNING, st.JOB_SUSPENDED, message)
        b.status["startTime"] = None  # as for Kubernetes Jobs, activeDeadlineSeconds restarts on resume
        b.counts(spec.nodes, None)
        b.phase(Phase.SUSPENDED, st.JOB_SUSPENDED, message)
        return b.d
    if b.status["phase"] == Phase.SUSPENDED.value and slurm.state != "SUSPENDED":  # (Slurm's own suspend)
        message = "spec.suspend is false: submitting again, resuming from the last checkpoint"
        b.cond(st.SUSPENDED, "False", st.JOB_RESUMED, message)
        b.phase(Phase.PENDING, st.JOB_RESUMED, message)
        if not slurm.active:  # the cancelled job; an active one is our resubmission, seen again
            _submit(b, job, train_job, train_status)
            return b.d

    start = parse_time(b.status.get("startTime"))
    deadline = spec.active_deadline_seconds
    if deadline and start is not None and (now - start).total_seconds() >= deadline:
        if slurm.active:
            b.d.cancel = slurm.job_id
        b.counts(spec.nodes, None)
        b.fail(
            st.DEADLINE_EXCEEDED,
            f"the job ran longer than activeDeadlineSeconds={deadline}; Slurm job {slurm.job_id} cancelled",
        )
        return b.d

    if slurm.job_id is None:
        _submit(b, job, train_job, train_status)
        return b.d
    if slurm.info is None:
        message = f"Slurm no longer knows job {slurm.job_id} and its end was not seen (MinJobAge passed?)"
        b.counts(spec.nodes, None)
        b.fail(ss.UNKNOWN, message)
        return b.d
    _observe(b, job, slurm.info)
    return b.d


def _observe(b: _Builder, job: Job, info: dict[str, str]) -> None:
    seen = ss.job_phase(info)
    nodes = job.spec.nodes
    b.status["restarts"] = max(b.status["restarts"], int(info.get("Restarts") or 0))
    b.counts(nodes, seen.phase)
    if seen.unsatisfiable:
        before = st.condition(b.status["conditions"], st.CREATED) or {}
        if before.get("reason") != ss.UNSCHEDULABLE:
            b.d.events.append(("Warning", ss.UNSCHEDULABLE, seen.message))
        b.cond(st.CREATED, "False", ss.UNSCHEDULABLE, seen.message)
        b.phase(Phase.PENDING, ss.UNSCHEDULABLE, seen.message)
    elif seen.phase is Phase.PENDING:
        b.cond(st.CREATED, "True", seen.reason, seen.message)
        b.phase(Phase.PENDING, seen.reason, seen.message)
    elif seen.phase is Phase.RUNNING:
        b.cond(st.RUNNING, "True", seen.reason, seen.message)
        b.clear(st.RESTARTING, seen.reason, seen.message)
        b.phase(Phase.RUNNING, seen.reason, seen.message)
    elif seen.phase is Phase.RESTARTING:
        b.cond(st.RESTARTING, "True", seen.reason, seen.message)
        b.clear(st.RUNNING, seen.reason, seen.message)
        b.phase(Phase.RESTARTING, seen.reason, seen.message, warning=True)
    elif seen.phase is Phase.SUSPENDED:  # suspended by Slurm (scontrol suspend), not by spec.suspend
        b.cond(st.SUSPENDED, "True", seen.reason, seen.message)
        b.phase(Phase.SUSPENDED, seen.reason, seen.message)
    elif seen.phase is Phase.SUCCEEDED:
        metrics = b.status.get("metrics") or {}
        message = seen.message + (
            "; " + ", ".join(f"{k}={v:g}" for k, v in list(metrics.items())[:4]) if metrics else ""
        )
        b.cond(st.SUCCEEDED, "True", st.COMPLETED, message)
        b.clear(st.RUNNING, st.COMPLETED, message)
        b.clear(st.RESTARTING, st.COMPLETED, message)
        b.status["completionTime"] = b.stamp
        b.phase(Phase.SUCCEEDED, st.COMPLETED, message)
        _expire(b, job)
    else:  # FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY...
        b.fail(seen.reason, seen.message)
        _expire(b, job)


def _submit(b: _Builder, job: Job, train_job: TrainJob | None, train_status: dict[str, Any] | None) -> None:
    ref = job.spec.from_train_job if isinstance(job, TestJob) and job.spec.command is None else None
    if ref is not None:
        waiting = train_job_problem(ref.name, train_job, train_status)
        if waiting and (train_status or {}).get("phase") == Phase.FAILED.value:
            b.fail(st.TRAIN_JOB_FAILED, waiting)
            return
        if waiting:
            b.cond(st.CREATED, "False", st.WAITING_FOR_TRAIN_JOB, waiting)
            return
    b.d.submit = True
    message = "submitted to Slurm through sbatch"
    b.cond(st.CREATED, "True", SUBMITTED, message)
    b.d.events.append(("Normal", SUBMITTED, message))
    if not b.status.get("startTime"):
        b.status["startTime"] = b.stamp


def _expire(b: _Builder, job: Job) -> None:
    """ttlSecondsAfterFinished: delete the finished job object once it passed."""
    ttl, done = job.spec.ttl_seconds_after_finished, parse_time(b.status.get("completionTime"))
    if ttl is not None and done is not None and (b.now - done).total_seconds() >= ttl:
        b.d.delete_job = True


def rejected(status: dict[str, Any], reason: str, message: str, now: datetime.datetime) -> dict[str, Any]:
    """The status of a job sbatch (or the renderer) refused as written: Failed, with the fix in `message`."""
    b = _Builder(status, now)
    b.fail(reason, message)
    return b.status
