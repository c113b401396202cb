"""The one controller loop: for every TrainJob/TestJob, read, decide, apply, write status, over a Backend.

kopf runs one `JobLoop.run` per job object as a daemon (control/handlers.py), so the steps of one job never
overlap. The loop wakes on the job's own events, on what its backend watches (its pods), or when a decision
asks to look again (a deadline, a TTL, the Slurm poll). It keeps the status it last wrote: it is the only
writer, and the live body may lag behind its own writes.

What is the same for every backend lives here: parsing the spec (an invalid one fails the job, saying
why), finding a TestJob's TrainJob, writing status only when it changed, posting events, deleting the job
after its TTL, and retrying the API server's or the backend's trouble with back-off. What differs is a
Backend: pods (kube/backend.py) or sbatch (slurm/backend.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from typing import Any, Protocol

import aiohttp
import kopf

from torchyard.operator.api import conditions as c
from torchyard.operator.api.spec import TrainJob, load_job
from torchyard.operator.control.decide import Decision, namespace_refusal, rejected
from torchyard.operator.control.kubeapi import KubeApi, job_path
from torchyard.operator.control.metrics import Metrics
from torchyard.operator.errors import ApiError, SpecError

ERROR_RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)
KOPF_PREFIX = "kopf.zalando.org/"

JobKey = tuple[str, str, str]  # (namespace, kind in lower case, name)


class BackendJob(Protocol):
    """A backend's side of one job's loop (it may keep state across steps, e.g. expected pods)."""

    async def step(
        self, job: Any, now: datetime.datetime, train_job: TrainJob | None, train_status: dict | None
    ) -> Decision:
        """Observe what runs, decide (pure), apply what was decided but the status; return the decision."""

    async def cleanup(self) -> None:
        """Before the loop deletes a finished job after its TTL: what garbage collection would do, now."""


class Backend(Protocol):
    """How jobs run. One instance per operator; `job` makes the per-job part."""

    indexes: tuple[str, ...]  # the kopf indexes of `register` that the backend's jobs read
    errors: tuple[type[Exception], ...]  # the backend's transient trouble: retried with back-off
    poll_seconds: float | None  # look again this often even without events (None: events suffice)

    def register(self, registry: kopf.OperatorRegistry) -> None:
        """Add the backend's own handlers (watches, indexes, finalizers)."""

    def job(self, loop: JobLoop) -> BackendJob: ...

    async def job_deleted(self, state: OperatorState, key: JobKey, body: kopf.Body, **indexes: Any) -> None:
        """The job object is gone: stop what still runs for it."""


@dataclasses.dataclass
class OperatorConfig:
    """How `torchyard operator run` (or a test) configures the operator."""

    connection: kopf.ConnectionInfo | None = None  # None: in-cluster or kubeconfig, as kopf finds it
    namespaces: list[str] = dataclasses.field(default_factory=list)  # empty: cluster-wide
    metrics_port: int | None = None  # /metrics and /healthz
    metrics_host: str = "0.0.0.0"
    report_grace: float | None = None  # pods: how long to wait for rank 0's word (None: the default)


@dataclasses.dataclass
class OperatorState:
    """Shared by all handlers through kopf's memo: the backend, the API client, metrics, wake-up events."""

    config: OperatorConfig
    backend: Backend
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    api: KubeApi | None = None
    wakeups: dict[JobKey, asyncio.Event] = dataclasses.field(default_factory=dict)

    def wake(self, key: JobKey) -> None:
        self.wakeups.setdefault(key, asyncio.Event()).set()


def job_dict(body: Any) -> dict[str, Any]:
    """The job as a user wrote it: without kopf's own annotations (a finalizer makes kopf keep its
    last-handled configuration there, JSON with a newline, which the API's annotation type rejects)."""
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


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning status `old` into `new` (None deletes a key); {} when nothing changed."""
    patch = {}
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if before != after:
            patch[key] = after
    return patch


class JobLoop:
    """The loop of one job object; `body` is kopf's live body, `indexes` the kopf indexes it reads."""

    def __init__(self, body: kopf.Body, state: OperatorState, logger: logging.Logger, **indexes: Any) -> None:
        self.body, self.state, self.logger, self.indexes = body, state, logger, indexes
        self.kind = body["kind"]
        self.namespace = body.metadata.namespace or "default"
        self.name = body.metadata.name
        self.uid = body.metadata.uid
        self.key: JobKey = (self.namespace, self.kind.lower(), self.name)
        self.status: dict[str, Any] = dict(body.get("status") or {})
        self.errors = 0
        # Set once the job itself is deleted: later wake-ups must not delete it again.
        self.job_deleted = False
        self.backend_job = state.backend.job(self)

    @property
    def api(self) -> KubeApi:
        assert self.state.api is not None, "the operator's startup handler creates the API client"
        return self.state.api

    def index(self, name: str, key: Any) -> list[Any]:
        index = self.indexes.get(name)
        return list(index.get(key, [])) if index is not None else []

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        wake = self.state.wakeups.setdefault(self.key, asyncio.Event())
        metrics, backend = self.state.metrics, self.state.backend
        metrics.observe_phase(self.kind, self.namespace, self.name, self.status.get("phase"))
        try:
            while not stopped and not self.job_deleted:
                wake.clear()
                started = time.perf_counter()
                try:
                    requeue = await self.reconcile()
                    self.errors = 0
                except (ApiError, aiohttp.ClientError, TimeoutError, *backend.errors) as err:
                    requeue = ERROR_RETRY_SECONDS[min(self.errors, len(ERROR_RETRY_SECONDS) - 1)]
                    self.errors += 1
                    self.logger.warning(f"reconcile failed, retrying in {requeue} s: {err}")
                metrics.reconcile.labels(self.kind).observe(time.perf_counter() - started)
                if backend.poll_seconds is not None:
                    requeue = backend.poll_seconds if requeue is None else min(requeue, backend.poll_seconds)
                await _wait(wake, stopped, requeue)
        finally:
            self.state.wakeups.pop(self.key, None)
            metrics.observe_phase(self.kind, self.namespace, self.name, None)

    async def reconcile(self) -> float | None:
        if self.body.metadata.deletion_timestamp:
            return None  # being deleted: the backend's job_deleted stops what runs
        now = datetime.datetime.now(datetime.UTC)
        try:
            job = load_job(job_dict(self.body))
        except SpecError as err:
            if self.status.get("phase") != "Failed":
                await self.fail(c.INVALID_SPEC, f"{err}\nfix the spec and create the job again", now)
            return None
        refusal = namespace_refusal(self.namespace)
        if refusal is not None:
            if self.status.get("phase") != "Failed":
                await self.fail(c.NOT_ALLOWED, refusal, now)
            return None
        train_job, train_status = self._train_job(job)
        decision = await self.backend_job.step(job, now, train_job, train_status)
        await self.write_status(decision.status)
        for type_, reason, message in decision.events:
            # posts a Kubernetes Event and logs it
            (kopf.warn if type_ == "Warning" else kopf.info)(self.body, reason=reason, message=message)
        if decision.delete_job:
            self.logger.info("ttlSecondsAfterFinished passed: deleting the job and what it ran")
            await self.backend_job.cleanup()
            await self.api.delete(job_path(self.kind, self.namespace, self.name))
            self.job_deleted = True
            return None
        return decision.requeue

    async def fail(self, reason: str, message: str, now: datetime.datetime) -> None:
        """Fail a job that cannot run as written (an invalid spec, a refused submission)."""
        await self.write_status(rejected(self.status, reason, message, now))
        kopf.warn(self.body, reason=reason, message=message)

    def _train_job(self, job: Any) -> tuple[TrainJob | None, dict[str, Any] | None]:
        name = job.spec.train_job_name
        if name is None:
            return None, None
        for body in self.index("trainjobs_by_name", (self.namespace, name)):
            try:
                train = load_job(job_dict(body))
            except SpecError:
                return None, None
            return (train if isinstance(train, TrainJob) else None), dict(body.get("status") or {})
        return None, None

    async def write_status(self, new: dict[str, Any]) -> None:
        """Patch the job's status to `new` if it changed."""
        patch = status_patch(self.status, new)
        if not patch:
            return
        await self.api.patch(job_path(self.kind, self.namespace, self.name, "status"), {"status": patch})
        self.state.metrics.transition(self.kind, self.namespace, self.status, new)
        self.status = {key: value for key, value in new.items() if value is not None}
        self.state.metrics.observe_phase(self.kind, self.namespace, self.name, self.status.get("phase"))


async def _wait(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float | None) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
