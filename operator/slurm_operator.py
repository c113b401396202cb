"""`torchyard operator run --backend slurm`: TrainJob/TestJob objects run through sbatch instead of as pods.

Run it where sbatch works (a login node that can reach the API server); jobs are submitted from
`submit_dir` (their config paths and work dirs are relative to it, as for `torchyard slurm submit`).
One kopf daemon per job polls its Slurm job (`scontrol show job`) every `poll_seconds` and applies
slurm_reconcile.decide (pure): submit through the bridge (slurm_bridge.submit_job: the same renderer and
work-dir record as `torchyard slurm submit`), scancel, write status when it changed, delete the object after
its TTL. A finalizer (kopf.on.delete) scancels the Slurm job of a deleted object. Slurm's clients block,
so they run in threads; a transient failure (slurmctld or munged unreachable, API errors) raises
kopf.TemporaryError and kopf tries again.

An object's Slurm job id is written to its annotation `torchyard.dev/slurm-job-id` right after sbatch,
so a restarted operator finds the job again; `kubectl describe` shows it.

    registry = build_slurm_registry()
    memo = slurm_memo(OperatorConfig(), SlurmConfig(submit_dir=Path.cwd()))
    kopf.run(registry=registry, memo=memo, clusterwide=True)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from torchyard.contract import workdir
from torchyard.operator import handlers
from torchyard.operator import status as st
from torchyard.operator.api import GROUP, VERSION, Job, SpecError, TestJob, TrainJob, load_job
from torchyard.operator.command import RenderError, work_dir_path
from torchyard.operator.controller import OperatorConfig, OperatorState, job_path, plural, write_status
from torchyard.operator.crds import KINDS
from torchyard.operator.kube import ApiError, KubeApi
from torchyard.operator.slurm_bridge import read_record, submit_job
from torchyard.operator.slurm_client import SlurmClient, SlurmError
from torchyard.operator.slurm_reconcile import SlurmView, decide, rejected
from torchyard.operator.slurm_state import is_terminal

ANNOTATION = "torchyard.dev/slurm-job-id"
KOPF_PREFIX = "kopf.zalando.org/"
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
class SlurmConfig:
    """Where and how the operator submits: the directory jobs are submitted from, the poll interval."""

    submit_dir: Path = dataclasses.field(default_factory=Path.cwd)
    poll_seconds: float = 10.0
    client: SlurmClient = dataclasses.field(default_factory=SlurmClient)
    job_ids: dict[str, str] = dataclasses.field(default_factory=dict)  # object uid -> Slurm job id


def slurm_memo(config: OperatorConfig, slurm: SlurmConfig) -> kopf.Memo:
    memo = handlers.memo_for(config)
    memo.slurm = slurm
    return memo


def build_slurm_registry() -> kopf.OperatorRegistry:
    """Login, startup (API client, metrics), the TrainJob index for fromTrainJob, a daemon and a finalizer
    per kind. No pod or Service is ever watched or written."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(handlers.login)
    kopf.on.startup(registry=registry)(handlers.startup)
    kopf.on.cleanup(registry=registry)(handlers.cleanup)
    kopf.index(GROUP, VERSION, plural("TrainJob"), registry=registry, id="trainjobs_by_name")(
        handlers.trainjobs_by_name
    )
    for kind in KINDS:
        kopf.daemon(
            GROUP, VERSION, plural(kind), registry=registry, id=f"{kind}-slurm", cancellation_timeout=10
        )(slurm_loop)
        kopf.on.delete(GROUP, VERSION, plural(kind), registry=registry, id=f"{kind}-scancel")(
            cancel_on_delete
        )
    return registry


def is_transient(err: SlurmError) -> bool:
    return any(text.lower() in str(err).lower() for text in TRANSIENT)


def read_progress(job: Job, work_dir: Path) -> dict[str, Any]:
    """Status fields from the work dir, as the pod path takes them from rank 0's termination message."""
    if isinstance(job, TestJob):
        result = workdir.read_test_result(work_dir)
        if result is None:
            return {}
        raw = result.get("metrics") or {}
        return {
            "metrics": st.status_metrics(raw)[0],
            "headlineMetric": st.headline(raw),
            "checkpoint": result.get("checkpoint"),
        }
    return {
        "metrics": st.status_metrics(workdir.last_val_metrics(work_dir))[0],
        "lastCheckpoint": workdir.read_pointer(work_dir, "latest"),
        "bestCheckpoint": workdir.read_pointer(work_dir, "best"),
    }


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


def job_dict(body: Any) -> dict[str, Any]:
    """The job as a user wrote it: without kopf's own annotations (the finalizer's handler makes kopf keep
    its last-handled configuration there, JSON with a newline, which the API's annotation type rejects)."""
    meta = dict(body.get("metadata") or {})
    meta["annotations"] = {
        key: value
        for key, value in (meta.get("annotations") or {}).items()
        if not key.startswith(KOPF_PREFIX)
    }
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": meta,
        "spec": body.get("spec"),
    }


async def slurm_loop(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: logging.Logger, **kwargs: Any
) -> None:
    job = SlurmJob(body, memo.state, memo.slurm, logger, kwargs.get("trainjobs_by_name"))
    await job.run(stopped)


async def cancel_on_delete(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """The finalizer: scancel the deleted object's Slurm job if it is still queued or running."""
    config: SlurmConfig = memo.slurm
    job_id = config.job_ids.pop(body.metadata.uid, None) or body.metadata.annotations.get(ANNOTATION)
    if not job_id:
        return
    try:
        info = await asyncio.to_thread(config.client.show_job, job_id)
        if info is not None and not is_terminal(info.get("JobState", "")):
            await asyncio.to_thread(config.client.cancel, job_id)
            logger.info(f"the job was deleted: Slurm job {job_id} cancelled")
    except SlurmError as err:
        if is_transient(err):
            raise kopf.TemporaryError(
                f"cannot cancel Slurm job {job_id} yet: {err}", delay=RETRY_SECONDS
            ) from err
        logger.warning(f"could not cancel Slurm job {job_id}: {err}")


class SlurmJob:
    """The loop of one job object; keeps the status it last wrote (the live body may lag behind)."""

    def __init__(
        self,
        body: kopf.Body,
        state: OperatorState,
        config: SlurmConfig,
        logger: logging.Logger,
        trainjobs_by_name: kopf.Index | None = None,
    ) -> None:
        self.body, self.state, self.config, self.logger = body, state, config, logger
        self.trainjobs = trainjobs_by_name
        self.kind, self.name = body["kind"], body.metadata.name
        self.namespace = body.metadata.namespace or "default"
        self.uid = body.metadata.uid
        self.status: dict[str, Any] = dict(body.get("status") or {})
        self.deleted = False

    @property
    def api(self) -> KubeApi:
        assert self.state.api is not None, "the operator's startup handler creates the API client"
        return self.state.api

    @property
    def job_id(self) -> str | None:
        return self.config.job_ids.get(self.uid) or self.body.metadata.annotations.get(ANNOTATION)

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        self.state.metrics.observe_phase(self.kind, self.namespace, self.name, self.status.get("phase"))
        try:
            while not stopped and not self.deleted:
                try:
                    await self.step()
                except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                    raise kopf.TemporaryError(f"API request failed: {err}", delay=RETRY_SECONDS) from err
                except SlurmError as err:  # sbatch's refusals are handled in step: these are transient
                    raise kopf.TemporaryError(f"Slurm: {err}", delay=RETRY_SECONDS) from err
                await stopped.wait(self.config.poll_seconds)
        finally:
            self.state.metrics.observe_phase(self.kind, self.namespace, self.name, None)

    async def step(self) -> None:
        if self.body.metadata.deletion_timestamp:
            return  # the finalizer cancels
        now = datetime.datetime.now(datetime.UTC)
        try:
            job = load_job(job_dict(self.body))
        except SpecError as err:
            if self.status.get("phase") != "Failed":
                await self._fail(st.INVALID_SPEC, f"{err}\nfix the spec and create the job again", now)
            return
        train_job, train_status = self._train_job(job)
        work_dir = (self.config.submit_dir / work_dir_path(job)).resolve()
        terminal = self.status.get("phase") in ("Succeeded", "Failed")
        view = SlurmView(self.job_id) if terminal else await self._view(work_dir)
        progress = {} if terminal else await asyncio.to_thread(read_progress, job, work_dir)
        decision = decide(job, self.status, view, now, progress, train_job, train_status)
        if decision.cancel:
            await self._cancel(decision.cancel)
        if decision.submit:
            try:
                record = await asyncio.to_thread(
                    submit_job, job, train_job, self.config.client, self.config.submit_dir
                )
            except RenderError as err:
                await self._fail(st.INVALID_SPEC, str(err), now)
                return
            except SlurmError as err:
                if is_transient(err):
                    raise
                await self._fail(st.INVALID_SPEC, f"sbatch refused the job: {err}", now)
                return
            await self._remember(record.job_id)
            self.logger.info(f"submitted as Slurm job {record.job_id}; work dir {record.work_dir}")
            events = decision.events
            decision = decide(
                job, decision.status, await self._view(work_dir), now, progress, train_job, train_status
            )
            decision.events[:0] = events
        await self._write_status(decision.status)
        for type_, reason, message in decision.events:
            (kopf.warn if type_ == "Warning" else kopf.info)(self.body, reason=reason, message=message)
        if decision.delete_job:
            self.logger.info("ttlSecondsAfterFinished passed: deleting the job")
            await self.api.delete(job_path(self.kind, self.namespace, self.name))
            self.deleted = True

    async def _cancel(self, job_id: str) -> None:
        try:
            await asyncio.to_thread(self.config.client.cancel, job_id)
        except SlurmError as err:
            if is_transient(err):
                raise
            self.logger.warning(f"scancel {job_id}: {err}")  # e.g. it ended meanwhile: seen next time
            return
        self.logger.info(f"Slurm job {job_id} cancelled")

    async def _view(self, work_dir: Path) -> SlurmView:
        job_id = self.job_id
        if job_id is None:
            return SlurmView()
        if self.body.metadata.annotations.get(ANNOTATION) != job_id:  # a write that failed before
            await self._remember(job_id)
        return SlurmView(job_id, await asyncio.to_thread(observe, self.config.client, job_id, work_dir))

    async def _remember(self, job_id: str) -> None:
        self.config.job_ids[self.uid] = job_id
        patch = {"metadata": {"annotations": {ANNOTATION: job_id}}}
        await self.api.patch(job_path(self.kind, self.namespace, self.name), patch)

    def _train_job(self, job: Job) -> tuple[TrainJob | None, dict[str, Any] | None]:
        ref = getattr(job.spec, "from_train_job", None)
        if ref is None or self.trainjobs is None:
            return None, None
        for body in self.trainjobs.get((self.namespace, ref.name), []):
            try:
                train = load_job(job_dict(body))
            except SpecError:
                return None, None
            return (train if isinstance(train, TrainJob) else None), dict(body.get("status") or {})
        return None, None

    async def _fail(self, reason: str, message: str, now: datetime.datetime) -> None:
        await self._write_status(rejected(self.status, reason, message, now))
        kopf.warn(self.body, reason=reason, message=message)

    async def _write_status(self, new: dict[str, Any]) -> None:
        self.status = await write_status(self, new)
