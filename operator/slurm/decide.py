"""The Slurm backend's decisions (pure): a job, its status and its Slurm job in; status and actions out.

One TrainJob/TestJob is one Slurm job at a time (the bridge submits it; Slurm itself requeues it near its
time limit, counted in `restarts`). The shared rules (finished, suspend, deadline, fromTrainJob) are
control/decide.py's; Slurm states map onto the same phases and conditions through state.job_phase.

- no Slurm job yet, or spec.suspend back to false: submit (resume: auto continues from the work dir's last
  checkpoint);
- spec.suspend or activeDeadlineSeconds passed: scancel;
- Slurm forgot a job whose end was never seen (MinJobAge): Failed, Unknown.
Metrics and checkpoints come from the work dir (`progress`), so status shows them as on the pod path.

    decision = decide(job, status, SlurmView(job_id, info), now, progress)
    # apply: scancel decision.cancel, submit if decision.submit (then decide again with the new job),
    # write decision.status if it differs, post decision.events, delete the object if decision.delete_job
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from torchyard.operator.api import conditions as c
from torchyard.operator.api.spec import Job, Phase, TrainJob
from torchyard.operator.control.decide import Decision, Stage, StatusBuilder, expire, lifecycle, may_start
from torchyard.operator.slurm import observe as ss


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
class SlurmDecision(Decision):
    submit: bool = False
    cancel: str | None = None  # a Slurm job id to scancel


class _Builder(StatusBuilder):
    def __init__(self, status: dict[str, Any], now: datetime.datetime) -> None:
        super().__init__(SlurmDecision(status=status), now)

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
    spec = job.spec
    # Slurm's own `scontrol suspend` shows as Suspended too; only our scancel is undone by submitting again.
    stopped = f"Slurm job {slurm.job_id} cancelled" if slurm.job_id else "nothing was submitted yet"
    stage = lifecycle(b, job, stopped=stopped, may_resume=slurm.state != "SUSPENDED")
    if stage is Stage.FINISHED:
        return b.d
    b.status.update({key: value for key, value in (progress or {}).items() if value})
    if stage is not Stage.RUN:
        if slurm.active:
            b.d.cancel = slurm.job_id
        b.counts(spec.nodes, None)
        return b.d
    if slurm.job_id is None or (b.resumed and not slurm.active):  # an active one is our resubmission
        _submit(b, job, train_job, train_status)
        return b.d
    if slurm.info is None:
        message = (f"Slurm no longer knows job {slurm.job_id} and its end was not seen (MinJobAge passed), "
                   "and the cluster keeps no record sacct can read "
                   "(slurmdbd, or JobCompType=jobcomp/filetxt)")
        b.counts(spec.nodes, None)
        b.mark_failed(c.UNKNOWN, message)
        return b.d
    _observe(b, job, slurm.info)
    return b.d


def _observe(b: _Builder, job: Job, info: dict[str, str]) -> None:
    seen = ss.job_phase(info)
    nodes = job.spec.nodes
    b.status["restarts"] = max(b.status["restarts"], int(info.get("Restarts") or 0))
    b.counts(nodes, seen.phase)
    if seen.unsatisfiable:
        b.warn_on_change(c.CREATED, "False", c.UNSCHEDULABLE, seen.message)
        b.phase(Phase.PENDING, c.UNSCHEDULABLE, seen.message)
    elif seen.phase is Phase.PENDING:
        b.cond(c.CREATED, "True", seen.reason, seen.message)
        b.phase(Phase.PENDING, seen.reason, seen.message)
    elif seen.phase is Phase.RUNNING:
        b.cond(c.RUNNING, "True", seen.reason, seen.message)
        b.clear(c.RESTARTING, seen.reason, seen.message)
        b.phase(Phase.RUNNING, seen.reason, seen.message)
    elif seen.phase is Phase.RESTARTING:
        b.cond(c.RESTARTING, "True", seen.reason, seen.message)
        b.clear(c.RUNNING, seen.reason, seen.message)
        b.phase(Phase.RESTARTING, seen.reason, seen.message, warning=True)
    elif seen.phase is Phase.SUSPENDED:  # suspended by Slurm (scontrol suspend), not by spec.suspend
        b.cond(c.SUSPENDED, "True", seen.reason, seen.message)
        b.phase(Phase.SUSPENDED, seen.reason, seen.message)
    else:
        if seen.phase is Phase.SUCCEEDED:
            b.mark_succeeded(seen.message)
        else:  # FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY...
            b.mark_failed(seen.reason, seen.message)
        expire(b, job.spec.ttl_seconds_after_finished)


def _submit(b: _Builder, job: Job, train_job: TrainJob | None, train_status: dict[str, Any] | None) -> None:
    if not may_start(b, job, train_job, train_status):
        return
    b.d.submit = True
    message = "submitted to Slurm through sbatch"
    b.cond(c.CREATED, "True", c.SUBMITTED, message)
    b.d.events.append(("Normal", c.SUBMITTED, message))
    if not b.status.get("startTime"):
        b.status["startTime"] = b.stamp
