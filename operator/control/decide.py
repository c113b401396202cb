"""The rules every backend shares (pure): a job's lifecycle before any pod or Slurm job is looked at.

A backend's `decide` starts with `lifecycle` and acts on the Stage it returns; what is left (create pods or
submit, read what runs, restart) is the backend's own. Both write the same phases, conditions and reasons
(api/conditions.py), so a TrainJob reads the same whichever backend runs it:

- finished (Succeeded/Failed): stop what still runs, delete the job ttlSecondsAfterFinished after;
- spec.suspend: stop everything, phase Suspended, startTime cleared (as for Kubernetes Jobs,
  activeDeadlineSeconds starts over on resume); back to false: Resumed, then start as new;
- activeDeadlineSeconds passed: stop everything, Failed with DeadlineExceeded;
- a TestJob's fromTrainJob: wait until its TrainJob has a checkpoint; fail if it failed without one.

    b = StatusBuilder(Decision(status=status), now)
    stage = lifecycle(b, job, stopped="pods stopped")
    if stage is Stage.FINISHED: ...   # the backend stops what it runs, returns b.d
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field
from typing import Any

from torchyard.operator.api import conditions as c
from torchyard.operator.api.spec import Job, Phase, TrainJob

TERMINAL = (Phase.SUCCEEDED.value, Phase.FAILED.value)
WAIT_FOR_TRAIN_JOB_SECONDS = 5.0


@dataclass
class Decision:
    """What one look at a job decided; each backend's Decision adds the actions it alone takes."""

    status: dict[str, Any]
    delete_job: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)
    requeue: float | None = None  # seconds until the next look, even without any event


class Stage(enum.Enum):
    """Where `lifecycle` left the job: only RUN lets the backend go on to its own rules."""

    FINISHED = "finished"  # Succeeded or Failed before this look
    SUSPENDED = "suspended"
    OUT_OF_TIME = "out of time"  # failed just now: activeDeadlineSeconds passed
    RUN = "run"


def rfc3339(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class StatusBuilder:
    """Status edits of one decision, every condition stamped with the same `now`."""

    def __init__(self, decision: Decision, now: datetime.datetime) -> None:
        self.now, self.stamp = now, rfc3339(now)
        self.d = decision
        self.d.status = {**decision.status, "conditions": list(decision.status.get("conditions") or [])}
        self.resumed = False  # set by lifecycle: spec.suspend went back to false on this look

    @property
    def status(self) -> dict[str, Any]:
        return self.d.status

    def cond(self, type_: str, value: str, reason: str, message: str) -> None:
        self.status["conditions"] = c.set_condition(
            self.status["conditions"], type_, value, reason, message, self.stamp
        )

    def clear(self, type_: str, reason: str, message: str = "") -> None:
        self.status["conditions"] = c.clear_condition(
            self.status["conditions"], type_, reason, message, self.stamp
        )

    def phase(self, phase: Phase, reason: str, message: str, warning: bool = False) -> None:
        if self.status.get("phase") != phase.value:
            self.d.events.append(("Warning" if warning else "Normal", reason, message))
        self.status["phase"] = phase.value

    def requeue(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.d.requeue = seconds if self.d.requeue is None else min(self.d.requeue, seconds)

    def warn_on_change(self, type_: str, value: str, reason: str, message: str) -> None:
        """Set a condition, with a Warning event when its reason or message is new."""
        before = c.condition(self.status["conditions"], type_) or {}
        if (before.get("status"), before.get("reason"), before.get("message")) != (value, reason, message):
            self.d.events.append(("Warning", reason, message))
        self.cond(type_, value, reason, message)

    def mark_failed(self, reason: str, message: str) -> None:
        self.cond(c.FAILED, "True", reason, message)
        self.clear(c.RUNNING, reason, message)
        self.clear(c.RESTARTING, reason, message)
        self.status["completionTime"] = self.stamp
        self.phase(Phase.FAILED, reason, message, warning=True)

    def mark_succeeded(self, message: str) -> None:
        """Succeeded, the first metrics in the message (`kubectl describe` shows the result at a glance)."""
        metrics = self.status.get("metrics") or {}
        if metrics:
            message += "; " + ", ".join(f"{k}={v:g}" for k, v in list(metrics.items())[:4])
        self.cond(c.SUCCEEDED, "True", c.COMPLETED, message)
        self.clear(c.RUNNING, c.COMPLETED, message)
        self.clear(c.RESTARTING, c.COMPLETED, message)
        self.status["completionTime"] = self.stamp
        self.phase(Phase.SUCCEEDED, c.COMPLETED, message)


def lifecycle(b: StatusBuilder, job: Job, stopped: str, may_resume: bool = True) -> Stage:
    """Apply the shared rules; `stopped` says what stopping means on this backend ("pods stopped").
    `may_resume`: False while the backend itself holds the job suspended (Slurm's own `scontrol suspend`)."""
    spec = job.spec
    b.status.setdefault("phase", Phase.PENDING.value)
    b.status.setdefault("restarts", 0)
    if b.status["phase"] in TERMINAL:
        expire(b, spec.ttl_seconds_after_finished)
        return Stage.FINISHED
    if spec.suspend:
        message = f"spec.suspend is true: {stopped}; set it to false to resume from the last checkpoint"
        b.cond(c.SUSPENDED, "True", c.JOB_SUSPENDED, message)
        b.clear(c.RUNNING, c.JOB_SUSPENDED, message)
        b.status["startTime"] = None
        b.phase(Phase.SUSPENDED, c.JOB_SUSPENDED, message)
        return Stage.SUSPENDED
    if b.status["phase"] == Phase.SUSPENDED.value and may_resume:
        message = "spec.suspend is false: starting again from the last checkpoint"
        b.cond(c.SUSPENDED, "False", c.JOB_RESUMED, message)
        b.phase(Phase.PENDING, c.JOB_RESUMED, message)
        b.resumed = True
    start = parse_time(b.status.get("startTime"))
    deadline = spec.active_deadline_seconds
    if deadline and start is not None:
        left = (start - b.now).total_seconds() + deadline
        if left <= 0:
            b.mark_failed(
                c.DEADLINE_EXCEEDED, f"the job ran longer than activeDeadlineSeconds={deadline}; {stopped}"
            )
            return Stage.OUT_OF_TIME
        b.requeue(left)
    return Stage.RUN


def expire(b: StatusBuilder, ttl: int | None) -> None:
    """ttlSecondsAfterFinished: delete the finished job once it passed, else look again then."""
    done = parse_time(b.status.get("completionTime"))
    if ttl is None or done is None:
        return
    left = (done - b.now).total_seconds() + ttl
    if left <= 0:
        b.d.delete_job = True
    else:
        b.requeue(left)


def may_start(
    b: StatusBuilder, job: Job, train_job: TrainJob | None, train_status: dict[str, Any] | None
) -> bool:
    """Whether the job may start now: a TestJob's fromTrainJob must have a checkpoint to evaluate. If not,
    say why (Created False, looking again soon), or fail when its TrainJob failed without one."""
    name = job.spec.train_job_name
    if name is None:
        return True
    waiting = train_job_problem(name, train_job, train_status)
    if not waiting:
        return True
    if (train_status or {}).get("phase") == Phase.FAILED.value:
        b.mark_failed(c.TRAIN_JOB_FAILED, waiting)
    else:
        b.cond(c.CREATED, "False", c.WAITING_FOR_TRAIN_JOB, waiting)
        b.requeue(WAIT_FOR_TRAIN_JOB_SECONDS)
    return False


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


def namespace_refusal(namespace: str) -> str | None:
    """Why no job runs in `namespace` (None: it may). Pods in a system namespace sit beside the cluster's
    own components and may use their ServiceAccounts and Secrets; no cluster needs training there."""
    if namespace.startswith("kube-"):  # kube-system, kube-public, kube-node-lease
        return (
            f"jobs do not run in the system namespace {namespace}: the operator never creates pods there; "
            "create the job in a namespace of your own"
        )
    return None


def rejected(status: dict[str, Any], reason: str, message: str, now: datetime.datetime) -> dict[str, Any]:
    """The status of a job that cannot run as written (an invalid spec, a refused submission): Failed,
    with the fix in `message`."""
    b = StatusBuilder(Decision(status=status), now)
    b.mark_failed(reason, message)
    return b.status
