"""The Slurm backend (`torchyard operator run --backend slurm`): TrainJob/TestJob objects run through sbatch.

Run it where sbatch works (a login node that can reach the API server); jobs are submitted from
`submit_dir` (their config paths and work dirs are relative to it, as for `torchyard slurm submit`).
One step of a job's loop (control/loop.py, every `poll_seconds`): `scontrol show job` and the work dir's
progress, decide.decide (pure), then scancel or submit through the bridge (bridge.submit_job: the same
renderer and work-dir record as `torchyard slurm submit`). A finalizer scancels the Slurm job of a deleted
object. Slurm's clients block, so they run in threads; a transient failure (slurmctld or munged
unreachable) is retried with back-off, any other sbatch refusal fails the job saying why.

An object's Slurm job id is written to its `status.slurmJobId` right after sbatch, so a restarted operator
finds the job again. Only the operator writes status: a user who may edit the object cannot point it at
someone else's Slurm job (to see its state, or to scancel it by deleting the object). Paths and sbatch
options pass the operator's policy first (slurm/policy.py): work dirs are per namespace.

    backend = SlurmBackend(submit_dir=Path.cwd())
    kopf.run(registry=build_registry(backend), memo=memo_for(OperatorConfig(), backend), clusterwide=True)
"""


from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from pathlib import Path
from typing import Any

import kopf

from torchyard.operator.api import conditions as c
from torchyard.operator.api.spec import GROUP, KINDS, VERSION, Job, TrainJob
from torchyard.operator.control.decide import TERMINAL, Decision, rejected
from torchyard.operator.control.kubeapi import job_path
from torchyard.operator.control.loop import JobKey, JobLoop, OperatorState
from torchyard.operator.errors import NotAllowed, RenderError, SlurmError
from torchyard.operator.launch.command import work_dir_path
from torchyard.operator.slurm.bridge import read_progress, read_record, submit_job
from torchyard.operator.slurm.client import SlurmClient
from torchyard.operator.slurm.decide import SlurmDecision, SlurmView, decide
from torchyard.operator.slurm.observe import is_terminal
from torchyard.operator.slurm.policy import SlurmPolicy, confine

JOB_ID = "slurmJobId"  # the status field
RETRY_SECONDS = 5.0
# Slurm errors a retry may fix (the controller or munged is down or slow); any other sbatch error means
# the cluster refuses the job as written (unknown partition, too many nodes...): the job fails.
TRANSIENT = (
    "did not answer within",
    "Unable to contact",
    "Munge",
    "not found on PATH",
    "Socket timed out",
    "Zero Bytes were transmitted",
    "temporarily unavailable",
)


@dataclasses.dataclass
class SlurmBackend:
    """Where and how the operator submits: the directory jobs are submitted from, the poll interval, and
    what it takes from tenants' specs."""

    submit_dir: Path = dataclasses.field(default_factory=Path.cwd)
    poll_seconds: float = 10.0
    policy: SlurmPolicy = dataclasses.field(default_factory=SlurmPolicy)
    client: SlurmClient = dataclasses.field(default_factory=SlurmClient)
    job_ids: dict[str, str] = dataclasses.field(default_factory=dict)  # object uid -> Slurm job id
    indexes = ()
    errors = (SlurmError,)  # an sbatch refusal is handled in the step: what reaches the loop is transient

    def register(self, registry: kopf.OperatorRegistry) -> None:
        for kind, spec in KINDS.items():
            kopf.on.delete(GROUP, VERSION, spec.plural, registry=registry, id=f"{kind}-scancel")(
                self.cancel_on_delete
            )

    def job(self, loop: JobLoop) -> SlurmJob:
        return SlurmJob(loop, self)

    async def job_deleted(self, state: OperatorState, key: JobKey, body: kopf.Body, **indexes: Any) -> None:
        """Nothing left to do: the finalizer (cancel_on_delete) ran before the object went."""

    async def cancel_on_delete(self, body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
        """The finalizer: scancel the deleted object's Slurm job if it is still queued or running."""
        job_id = self.job_ids.pop(body.metadata.uid, None) or (body.status or {}).get(JOB_ID)
        if not job_id:
            return
        try:
            info = await asyncio.to_thread(self.client.show_job, job_id)
            if info is not None and not is_terminal(info.get("JobState", "")):
                await asyncio.to_thread(self.client.cancel, job_id)
                logger.info(f"the job was deleted: Slurm job {job_id} cancelled")
        except SlurmError as err:
            if is_transient(err):
                raise kopf.TemporaryError(
                    f"cannot cancel Slurm job {job_id} yet: {err}", delay=RETRY_SECONDS
                ) from err
            logger.warning(f"could not cancel Slurm job {job_id}: {err}")


def is_transient(err: SlurmError) -> bool:
    return any(text.lower() in str(err).lower() for text in TRANSIENT)


def observe(client: SlurmClient, job_id: str, work_dir: Path) -> dict[str, str] | None:
    """`scontrol show job`, kept in the work dir's record as `torchyard slurm status` does; a finished job
    Slurm has forgotten (MinJobAge) is its last state there, if that was seen (e.g. before a restart)."""
    info = client.show_job(job_id)
    try:
        record = read_record(work_dir)
    except SlurmError:
        record = None
    if record is None or record.job_id != job_id:
        return info
    if info is not None:
        record.remember(info)
    elif is_terminal(record.last_state):
        info = {"JobId": job_id, "JobState": record.last_state, "Reason": record.last_reason}
        info["ExitCode"] = record.exit_code
    return info


class SlurmJob:
    """One job's Slurm side: its Slurm job id, kept in memory and in the object's status."""

    def __init__(self, loop: JobLoop, backend: SlurmBackend) -> None:
        self.loop, self.backend = loop, backend

    @property
    def job_id(self) -> str | None:
        return self.backend.job_ids.get(self.loop.uid) or self.loop.status.get(JOB_ID)

    async def step(
        self, job: Job, now: datetime.datetime, train_job: TrainJob | None, train_status: dict | None
    ) -> Decision:
        loop, backend = self.loop, self.backend
        try:
            job = confine(job, loop.namespace, backend.policy)
            train_job = train_job and confine(train_job, loop.namespace, backend.policy)
        except NotAllowed as err:
            if loop.status.get("phase") in TERMINAL:  # refused before, or allowed by an earlier policy
                return decide(job, loop.status, SlurmView(self.job_id), now)
            refusal = self._rejected(c.NOT_ALLOWED, str(err), now)
            refusal.cancel = self.job_id
            return refusal
        work_dir = (backend.submit_dir / work_dir_path(job)).resolve()
        if loop.status.get("phase") in TERMINAL:
            view, progress = SlurmView(self.job_id), {}
        else:
            view = await self._view(work_dir)
            sweep = job.spec.slurm.sweep
            progress = await asyncio.to_thread(read_progress, job.kind, work_dir, sweep and sweep.runs())
        decision = decide(job, loop.status, view, now, progress, train_job, train_status)
        if decision.cancel:
            await self._cancel(decision.cancel)
        if not decision.submit:
            return decision
        try:
            record = await asyncio.to_thread(submit_job, job, train_job, backend.client, backend.submit_dir)
        except RenderError as err:
            return self._rejected(c.INVALID_SPEC, str(err), now)
        except SlurmError as err:
            if is_transient(err):
                raise
            return self._rejected(c.INVALID_SPEC, f"sbatch refused the job: {err}", now)
        await self._remember(record.job_id)
        loop.logger.info(f"submitted as Slurm job {record.job_id}; work dir {record.work_dir}")
        view = await self._view(work_dir)
        submitted = decide(job, decision.status, view, now, progress, train_job, train_status)
        submitted.events[:0] = decision.events
        submitted.status[JOB_ID] = record.job_id
        return submitted

    async def cleanup(self) -> None:
        """Nothing: a finished job's Slurm job has ended, and its work dir is the user's."""

    def _rejected(self, reason: str, message: str, now: datetime.datetime) -> SlurmDecision:
        status = rejected(self.loop.status, reason, message, now)
        return SlurmDecision(status=status, events=[("Warning", reason, message)])

    async def _cancel(self, job_id: str) -> None:
        try:
            await asyncio.to_thread(self.backend.client.cancel, job_id)
        except SlurmError as err:
            if is_transient(err):
                raise
            self.loop.logger.warning(f"scancel {job_id}: {err}")  # e.g. it ended meanwhile: seen next time
            return
        self.loop.logger.info(f"Slurm job {job_id} cancelled")

    async def _view(self, work_dir: Path) -> SlurmView:
        job_id = self.job_id
        if job_id is None:
            return SlurmView()
        if self.loop.status.get(JOB_ID) != job_id:  # a write that failed before
            await self._remember(job_id)
        info = await asyncio.to_thread(observe, self.backend.client, job_id, work_dir)
        return SlurmView(job_id, info)

    async def _remember(self, job_id: str) -> None:
        """At once, not with the step's status: a restart between sbatch and that write would submit twice."""
        self.backend.job_ids[self.loop.uid] = job_id
        path = job_path(self.loop.kind, self.loop.namespace, self.loop.name, "status")
        await self.loop.api.patch(path, {"status": {JOB_ID: job_id}})
