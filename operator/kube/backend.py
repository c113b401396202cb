"""The pod backend: each job runs as a headless Service and one pod per node, restarted as a gang.

Its informer (kube/informer.py) keeps the operator's pods by job, from its own list and watch rather than
kopf's (which keeps several KiB per watched pod), and wakes a job's loop when one of its pods changes. One
step of a job's loop: the pods from the informer corrected by what this loop created or deleted
(observe.Expectations), decide.decide (pure), then create and delete what it says. A create the API server
refuses shows in the job's status and events; the refusal or a name clash with something the job does not
own is retried, never overwritten.

    backend = PodBackend()     # control/handlers.build_registry(backend); memo_for(config, backend)

Before it creates pods for a spec that names other objects (a ServiceAccount, a claim...), it makes sure an
admission policy checked that the job's creator may use them (kube/policy.py); else the job fails.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import aiohttp
import kopf

from torchyard.operator.api import conditions as c
from torchyard.operator.api.spec import TrainJob
from torchyard.operator.control.decide import rejected, rfc3339
from torchyard.operator.control.kubeapi import KubeApi, resource_path
from torchyard.operator.control.loop import JobKey, JobLoop, OperatorState
from torchyard.operator.errors import ApiError
from torchyard.operator.kube import decide, logs
from torchyard.operator.kube.informer import PodInformer
from torchyard.operator.kube.observe import Expectations, PodState, pod_state
from torchyard.operator.kube.policy import PolicyCheck, named_objects, unchecked

CONFLICT_RETRY_SECONDS = 10.0


class PodBackend:
    indexes = ()
    errors: tuple[type[Exception], ...] = ()
    poll_seconds = None  # pod events wake the loop

    def __init__(self, trust_job_specs: bool = False) -> None:
        self.policy = PolicyCheck(trusted=trust_job_specs)
        self.informer = PodInformer()

    def register(self, registry: kopf.OperatorRegistry) -> None:
        kopf.on.cleanup(registry=registry)(self.stop)

    def job(self, loop: JobLoop) -> PodJob:
        return PodJob(loop, self)

    async def pods(self, state: OperatorState, key: JobKey) -> list[PodState]:
        """The job's pods, once the informer has listed them (it starts with the first job that asks)."""
        self.informer.start(state.api, state.config.namespaces, state.wake)
        await self.informer.ready()
        return self.informer.pods(key)

    async def job_deleted(self, state: OperatorState, key: JobKey, body: kopf.Body, **indexes: Any) -> None:
        """Delete its pods and Service now, so nothing is left running even without garbage collection."""
        await delete_children(state.api, key, await self.pods(state, key), body.metadata.uid)

    async def stop(self, **_: Any) -> None:
        await self.informer.stop()


class PodJob:
    """One job's pods: what this loop expects of them, and the creates the API server refused."""

    def __init__(self, loop: JobLoop, backend: PodBackend) -> None:
        self.loop = loop
        self.backend = backend
        self.expectations = Expectations()
        self.conflicts: list[str] = []
        self.refused: list[str] = []

    @property
    def api(self) -> KubeApi:
        return self.loop.api

    async def step(
        self, job: Any, now: datetime.datetime, train_job: TrainJob | None, train_status: dict | None
    ) -> decide.PodDecision:
        loop = self.loop
        pods = self.expectations.apply(await self.backend.pods(loop.state, loop.key))
        report_grace = loop.state.config.report_grace
        if report_grace is None:
            report_grace = decide.REPORT_GRACE_SECONDS
        decision = decide.decide(job, loop.status, pods, now, train_job, train_status, report_grace)
        if decision.create and named_objects(job) and not await self.backend.policy.enforced(self.api):
            refusal = unchecked(job, loop.namespace)
            decision = decide.PodDecision(
                status=rejected(loop.status, c.NOT_ALLOWED, str(refusal), now),
                events=[("Warning", c.NOT_ALLOWED, str(refusal))],
                delete=[p.name for p in pods if not p.deleting],  # a batch created while the policy held
            )
        await self._apply(decision, {p.name: p for p in pods})
        for reason, problems in ((c.CHILD_CONFLICT, self.conflicts), (c.CREATE_REFUSED, self.refused)):
            if not problems:
                continue
            message = "; ".join(problems)
            before = c.condition(loop.status.get("conditions") or [], c.CREATED) or {}
            decision.status["conditions"] = c.set_condition(
                decision.status["conditions"], c.CREATED, "False", reason, message, rfc3339(now)
            )
            if (before.get("reason"), before.get("message")) != (reason, message):
                decision.events.append(("Warning", reason, message))
            decision.requeue = CONFLICT_RETRY_SECONDS
        return decision

    async def cleanup(self) -> None:
        loop = self.loop
        await delete_children(self.api, loop.key, await self.backend.pods(loop.state, loop.key), loop.uid)

    async def _apply(self, decision: decide.PodDecision, pods: dict[str, PodState]) -> None:
        self.conflicts, self.refused = [], []
        if decision.keep_logs is not None:
            await self._keep_logs(decision.keep_logs, pods)
        await asyncio.gather(
            *(self._create(manifest) for manifest in decision.create),
            *(self._delete(pods[name]) for name in decision.delete if name in pods),
        )

    async def _create(self, manifest: dict[str, Any]) -> None:
        loop = self.loop
        kopf.adopt(manifest, owner=loop.body)
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        path = resource_path("v1", "pods" if kind == "Pod" else "services", loop.namespace)
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
            if not any(o.get("uid") == loop.uid for o in owners):
                self.conflicts.append(
                    f"{kind} {name} already exists and does not belong to {loop.kind} {loop.name}; "
                    "delete it or rename the job"
                )
                return
        if kind == "Pod":
            self.expectations.expect_created(pod_state(manifest))

    async def _keep_logs(self, keep: decide.KeepLogs, pods: dict[str, PodState]) -> None:
        """The failed pods' log tails into `<job>-previous-logs` before the restart deletes them. Never in
        the restart's way: what cannot be read says why in the ConfigMap, what cannot be written is logged."""
        loop = self.loop
        ended = [pods[name] for name in keep.pods if name in pods]
        limit = logs.bytes_per_pod(len(ended))
        tails = await asyncio.gather(*(self._log_tail(pod, limit) for pod in ended))
        body = logs.configmap(loop.namespace, loop.name, loop.key[1], keep.attempt, keep.why,
                              {pod.rank: tail for pod, tail in zip(ended, tails, strict=True)})
        kopf.adopt(body, owner=loop.body)
        path = resource_path("v1", "configmaps", loop.namespace)
        name = body["metadata"]["name"]
        try:
            try:
                await self.api.create(path, body)
            except ApiError as err:
                if err.status != 409:
                    raise
                existing = await self.api.get(f"{path}/{name}")
                owners = existing.get("metadata", {}).get("ownerReferences") or []
                if not any(owner.get("uid") == loop.uid for owner in owners):
                    loop.logger.warning(f"ConfigMap {name} does not belong to {loop.kind} {loop.name}: the "
                                        f"logs of attempt {keep.attempt + 1} are not kept there")
                    return
                await self.api.replace(f"{path}/{name}", body)
        except ApiError as err:
            loop.logger.warning(f"could not keep the logs of attempt {keep.attempt + 1} in ConfigMap {name}: "
                                f"{err}")

    async def _log_tail(self, pod: PodState, limit: int) -> str:
        path = resource_path("v1", "pods", self.loop.namespace, pod.name) + "/log"
        try:
            text = await self.api.request("GET", path, as_text=True, container=pod.kind,
                                          tailLines=logs.TAIL_LINES)
        except (ApiError, aiohttp.ClientError, TimeoutError) as err:
            return f"[no log of pod {pod.name}: {err}]\n"
        return logs.clip(text, limit)

    async def _delete(self, pod: PodState) -> None:
        await self.api.delete(resource_path("v1", "pods", self.loop.namespace, pod.name))
        self.expectations.expect_deleted(pod)


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
