"""The per-job control loop (the impure edge around reconcile.decide): read, decide, apply, write status.

kopf runs one `JobController.run` per TrainJob/TestJob as a daemon, so the steps of one job never overlap.
It wakes on the job's own events and its pods' events (handlers.py sets `state.wake(key)`), or when
`decide` asks to look again (deadline, TTL, report grace). The loop keeps the status it last wrote: it is
the only writer, and the live body may lag behind its own writes.

Expectations bridge the index lag: pods just created (or deleted) count as such until the watch shows them,
as in Kubernetes' own Job controller, so a slow watch never leads to duplicate creates or double restarts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from typing import Any

import aiohttp
import kopf

from torchyard.operator import reconcile
from torchyard.operator import status as st
from torchyard.operator.api import GROUP, VERSION, SpecError, TrainJob, load_job
from torchyard.operator.crds import KINDS
from torchyard.operator.kube import ApiError, KubeApi, resource_path
from torchyard.operator.metrics import Metrics
from torchyard.operator.status import PodState

CONFLICT_RETRY_SECONDS = 10.0
ERROR_RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)
EXPECTATION_SECONDS = 30.0  # forget an expected create/delete the watch never showed after this long

JobKey = tuple[str, str, str]  # (namespace, kind in lower case, name), as in the pod index


@dataclasses.dataclass
class OperatorConfig:
    """How `torchyard operator run` (or a test) configures the operator."""

    connection: kopf.ConnectionInfo | None = None  # None: in-cluster or kubeconfig, as kopf finds it
    namespaces: list[str] = dataclasses.field(default_factory=list)  # empty: cluster-wide
    metrics_port: int | None = None  # /metrics and /healthz
    metrics_host: str = "0.0.0.0"
    report_grace: float = reconcile.REPORT_GRACE_SECONDS


@dataclasses.dataclass
class OperatorState:
    """Shared by all handlers through kopf's memo: the API client, metrics and the wake-up events."""

    config: OperatorConfig
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    api: KubeApi | None = None
    wakeups: dict[JobKey, asyncio.Event] = dataclasses.field(default_factory=dict)

    def wake(self, key: JobKey) -> None:
        self.wakeups.setdefault(key, asyncio.Event()).set()


def plural(kind: str) -> str:
    return KINDS[kind][1]


def job_path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    return resource_path(f"{GROUP}/{VERSION}", plural(kind), namespace, name, sub)


class Expectations:
    """Pods this loop created or deleted that the pod index does not show that way yet."""

    def __init__(self) -> None:
        self.created: dict[str, tuple[PodState, float]] = {}
        self.deleted: dict[str, tuple[str, float]] = {}

    def expect_created(self, pod: PodState) -> None:
        self.created[pod.name] = (pod, time.monotonic() + EXPECTATION_SECONDS)

    def expect_deleted(self, pod: PodState) -> None:
        self.deleted[pod.name] = (pod.uid, time.monotonic() + EXPECTATION_SECONDS)

    def apply(self, pods: list[PodState]) -> list[PodState]:
        """The observed pods corrected by what is expected."""
        now = time.monotonic()
        seen = {p.name: p for p in pods}
        for name, (pod, deadline) in list(self.created.items()):
            shown = seen.get(name)
            if now > deadline or (shown is not None and shown.attempt == pod.attempt):
                del self.created[name]
        for name, (uid, deadline) in list(self.deleted.items()):
            shown = seen.get(name)
            if now > deadline or shown is None or shown.uid != uid or shown.deleting:
                del self.deleted[name]
        out = [dataclasses.replace(p, deleting=True) if p.name in self.deleted else p for p in pods]
        return out + [pod for name, (pod, _) in self.created.items() if name not in seen]


async def write_status(job: Any, new: dict[str, Any]) -> dict[str, Any]:
    """Patch a job's status to `new` if it changed (either backend's job loop: kind, namespace, name, status,
    api, state); returns the status as now stored."""
    patch = status_patch(job.status, new)
    if not patch:
        return job.status
    await job.api.patch(job_path(job.kind, job.namespace, job.name, "status"), {"status": patch})
    job.state.metrics.transition(job.kind, job.namespace, job.status, new)
    stored = {key: value for key, value in new.items() if value is not None}
    job.state.metrics.observe_phase(job.kind, job.namespace, job.name, stored.get("phase"))
    return stored


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning status `old` into `new` (None deletes a key); {} when nothing changed."""
    patch = {}
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if before != after:
            patch[key] = after
    return patch


class JobController:
    """The loop of one job; `body` is kopf's live body, `indexes` the kopf indexes passed to the daemon."""

    def __init__(
        self, kind: str, body: kopf.Body, state: OperatorState, logger: logging.Logger, **indexes: Any
    ) -> None:
        self.kind, self.body, self.state, self.logger, self.indexes = kind, body, state, logger, indexes
        self.namespace = body.metadata.namespace or "default"
        self.name = body.metadata.name
        self.key: JobKey = (self.namespace, kind.lower(), self.name)
        self.status: dict[str, Any] = dict(body.get("status") or {})
        self.expectations = Expectations()
        self.conflicts: list[str] = []
        self.refused: list[str] = []
        self.errors = 0
        # Set once the job itself is deleted: later wake-ups (its pods going) must not delete it again.
        self.job_deleted = False

    @property
    def api(self) -> KubeApi:
        assert self.state.api is not None, "the operator's startup handler creates the API client"
        return self.state.api

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        wake = self.state.wakeups.setdefault(self.key, asyncio.Event())
        self.state.metrics.observe_phase(self.kind, self.namespace, self.name, self.status.get("phase"))
        try:
            while not stopped and not self.job_deleted:
                wake.clear()
                started = time.perf_counter()
                try:
                    requeue = await self.reconcile()
                    self.errors = 0
                except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                    requeue = ERROR_RETRY_SECONDS[min(self.errors, len(ERROR_RETRY_SECONDS) - 1)]
                    self.errors += 1
                    self.logger.warning(f"reconcile failed, retrying in {requeue} s: {err}")
                self.state.metrics.reconcile.labels(self.kind).observe(time.perf_counter() - started)
                await _wait(wake, stopped, requeue)
        finally:
            self.state.wakeups.pop(self.key, None)
            self.state.metrics.observe_phase(self.kind, self.namespace, self.name, None)

    async def reconcile(self) -> float | None:
        now = datetime.datetime.now(datetime.UTC)
        try:
            job = load_job({key: self.body.get(key) for key in ("apiVersion", "kind", "metadata", "spec")})
        except SpecError as err:
            return await self._invalid(err, now)
        observed = [p for p in self._index("pods_by_job", self.key) if isinstance(p, PodState)]
        pods = self.expectations.apply(observed)
        train_job, train_status = self._train_job(job)
        decision = reconcile.decide(
            job, self.status, pods, now, train_job, train_status, self.state.config.report_grace
        )
        await self._apply(decision, {p.name: p for p in pods})
        for reason, problems in ((st.CHILD_CONFLICT, self.conflicts), (st.CREATE_REFUSED, self.refused)):
            if not problems:
                continue
            message = "; ".join(problems)
            before = st.condition(self.status.get("conditions") or [], st.CREATED) or {}
            decision.status["conditions"] = st.set_condition(
                decision.status["conditions"], st.CREATED, "False", reason, message, reconcile.rfc3339(now)
            )
            if (before.get("reason"), before.get("message")) != (reason, message):
                decision.events.append(("Warning", reason, message))
            decision.requeue = CONFLICT_RETRY_SECONDS
        await self._write_status(decision.status)
        for type_, reason, message in decision.events:
            # posts a Kubernetes Event and logs it
            (kopf.warn if type_ == "Warning" else kopf.info)(self.body, reason=reason, message=message)
        if decision.delete_job:
            await self.delete_all(job_too=True)
            self.job_deleted = True
            return None
        return decision.requeue

    async def _invalid(self, err: SpecError, now: datetime.datetime) -> None:
        if self.status.get("phase") == "Failed":
            return None
        message = f"{err}\nfix the spec and create the job again"
        status = {**self.status, "phase": "Failed", "completionTime": reconcile.rfc3339(now)}
        status["conditions"] = st.set_condition(
            list(self.status.get("conditions") or []),
            st.FAILED,
            "True",
            st.INVALID_SPEC,
            message,
            reconcile.rfc3339(now),
        )
        await self._write_status(status)
        kopf.warn(self.body, reason=st.INVALID_SPEC, message=message)
        return None

    def _index(self, name: str, key: Any) -> list[Any]:
        index = self.indexes.get(name)
        return list(index.get(key, [])) if index is not None else []

    def _train_job(self, job: Any) -> tuple[TrainJob | None, dict[str, Any] | None]:
        ref = getattr(job.spec, "from_train_job", None)
        if ref is None:
            return None, None
        for body in self._index("trainjobs_by_name", (self.namespace, ref.name)):
            try:
                train = load_job({key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec")})
            except SpecError:
                return None, None
            return (train if isinstance(train, TrainJob) else None), dict(body.get("status") or {})
        return None, None

    async def _apply(self, decision: reconcile.Decision, pods: dict[str, PodState]) -> None:
        self.conflicts, self.refused = [], []
        await asyncio.gather(
            *(self._create(manifest) for manifest in decision.create),
            *(self._delete(pods[name]) for name in decision.delete if name in pods),
        )

    async def _create(self, manifest: dict[str, Any]) -> None:
        kopf.adopt(manifest, owner=self.body)
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        path = resource_path("v1", "pods" if kind == "Pod" else "services", self.namespace)
        try:
            await self.api.create(path, manifest)
        except ApiError as err:
            if err.status in (429,) or err.status >= 500:
                raise  # the server's trouble: retried with back-off
            if err.status != 409:
                # refused for good until someone acts (quota, PodSecurity, an admission policy, RBAC): the
                # user must see why in the job's status and events, not only in the operator's log
                self.refused.append(f"{kind} {name} was refused: {err}")
                return
            existing = await self.api.get(f"{path}/{name}")
            owners = existing.get("metadata", {}).get("ownerReferences") or []
            if not any(o.get("uid") == self.body.metadata.uid for o in owners):
                self.conflicts.append(
                    f"{kind} {name} already exists and does not belong to {self.kind} {self.name}; "
                    "delete it or rename the job"
                )
                return
        if kind == "Pod":
            self.expectations.expect_created(st.pod_state(manifest))

    async def _delete(self, pod: PodState) -> None:
        await self.api.delete(resource_path("v1", "pods", self.namespace, pod.name))
        self.expectations.expect_deleted(pod)

    async def _write_status(self, new: dict[str, Any]) -> None:
        self.status = await write_status(self, new)

    async def delete_all(self, job_too: bool = False) -> None:
        """Delete the job's pods and Service (and the job): what garbage collection would do, done now."""
        pods = self._index("pods_by_job", self.key)
        await delete_children(self.api, self.key, pods, self.body.metadata.uid)
        if job_too:
            self.logger.info("ttlSecondsAfterFinished passed: deleting the job, its pods and its Service")
            await self.api.delete(job_path(self.kind, self.namespace, self.name))


async def delete_children(api: KubeApi, key: JobKey, pods: list[PodState], owner_uid: str | None) -> None:
    """Delete a job's pods (from the index) and its Service (if the job owns it)."""
    namespace, _, name = key
    await asyncio.gather(
        *(api.delete(resource_path("v1", "pods", namespace, pod.name)) for pod in pods if not pod.deleting),
        _delete_owned(api, resource_path("v1", "services", namespace, name), owner_uid),
    )


async def _delete_owned(api: KubeApi, path: str, owner_uid: str | None) -> None:
    try:
        existing = await api.get(path)
    except ApiError as err:
        if err.status == 404:
            return
        raise
    owners = existing.get("metadata", {}).get("ownerReferences") or []
    if any(owner.get("uid") == owner_uid for owner in owners):
        await api.delete(path)


async def _wait(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float | None) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
