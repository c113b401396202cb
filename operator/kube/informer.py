"""The operator's pods by job: one list and watch of the pods it labelled, kept as small PodStates.

kopf keeps a record of every object it watches (its ResourceMemory, several KiB a pod, for as long as the
pod exists): at 64,000 pods that was most of the operator's memory (bench/operator_memory.py). This keeps
only what decide needs, ~0.5 KiB a pod. The list and watch use a server-side label selector, per served
namespace (cluster-wide when the operator serves every namespace, or namespaces by pattern). A relist after
the watch history was compacted replaces what it lists, so a pod deleted in the gap does not linger. Jobs
read it only once it has listed, so no loop decides on a half-filled view.

    informer = PodInformer()
    informer.start(api, namespaces=["team-a"], wake=state.wake)
    await informer.ready()
    informer.pods(("team-a", "trainjob", "digits-mlp"))
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from torchyard.operator.control.kubeapi import KubeApi, list_watch, resource_path
from torchyard.operator.control.loop import JobKey
from torchyard.operator.kube.observe import PodState, job_key, pod_state
from torchyard.operator.kube.render import LABEL_JOB

_PATTERN = set("*?!,")  # kopf's namespace globs and negations: watched cluster-wide, filtered by kopf
GRAVE_SECONDS = 120.0  # how long a pod taken away by Kubernetes is remembered after it is deleted
Graves = dict[JobKey, dict[str, tuple[PodState, float]]]  # job -> pod uid -> (last state, until)


class PodInformer:
    def __init__(self) -> None:
        self._pods: dict[JobKey, dict[str, PodState]] = {}  # job -> pod uid -> state
        self._graves: Graves = {}
        self._tasks: list[asyncio.Task] = []
        self._listed: list[asyncio.Event] = []

    def start(self, api: KubeApi, namespaces: list[str], wake: Callable[[JobKey], None]) -> None:
        """Begin (once) listing and watching the operator's pods in `namespaces` (empty: all)."""
        if self._tasks:
            return
        exact = namespaces and not any(_PATTERN & set(namespace) for namespace in namespaces)
        for namespace in namespaces if exact else [None]:
            listed = asyncio.Event()
            self._listed.append(listed)
            view = _NamespaceView(self._pods, self._graves, namespace, wake)
            path = resource_path("v1", "pods", namespace)
            watch = list_watch(api, path, view.event, listed, view.listing, labelSelector=LABEL_JOB)
            self._tasks.append(asyncio.create_task(watch, name=f"pods {namespace or 'everywhere'}"))

    async def ready(self) -> None:
        if not all(listed.is_set() for listed in self._listed):  # every reconcile asks: answer at once
            await asyncio.gather(*(listed.wait() for listed in self._listed))

    def pods(self, key: JobKey) -> list[PodState]:
        """The job's pods, and for a while those Kubernetes took away (their eviction or preemption)."""
        now = time.monotonic()
        graves = self._graves.get(key, {})
        for uid in [uid for uid, (_, until) in graves.items() if until < now]:
            del graves[uid]
        if not graves:
            self._graves.pop(key, None)
        return [*self._pods.get(key, {}).values(), *(state for state, _ in graves.values())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _NamespaceView:
    """What one list and watch (one namespace, or all) says, written into the shared map."""

    def __init__(
        self,
        pods: dict[JobKey, dict[str, PodState]],
        graves: Graves,
        namespace: str | None,
        wake: Callable[[JobKey], None],
    ) -> None:
        self.pods, self.graves, self.namespace, self.wake = pods, graves, namespace, wake

    async def listing(self, items: list[dict[str, Any]]) -> None:
        mine = [key for key in self.pods if self.namespace is None or key[0] == self.namespace]
        for key in mine:
            del self.pods[key]
        for item in items:
            self._put(item)
        for key in {*mine, *self.pods}:
            self.wake(key)

    async def event(self, type_: str, body: dict[str, Any]) -> None:
        key = self._put(body) if type_ != "DELETED" else self._drop(body)
        if key is not None:
            self.wake(key)

    def _put(self, body: dict[str, Any]) -> JobKey | None:
        key = job_key(body)
        if key is not None:
            state = pod_state(body)
            self.pods.setdefault(key, {})[state.uid] = state
        return key

    def _drop(self, body: dict[str, Any]) -> JobKey | None:
        key = job_key(body)
        if key is not None:
            pods = self.pods.get(key, {})
            pods.pop(body.get("metadata", {}).get("uid", ""), None)
            if not pods:
                self.pods.pop(key, None)
            # a pod evicted or preempted may be gone before its job looked (a grace period of 0): what its
            # last state says (DisruptionTarget) decides how the job restarts, so it is kept a while
            state = pod_state(body)
            if state.disruption:
                grave = dataclasses.replace(state, deleting=True, gone=True)
                self.graves.setdefault(key, {})[state.uid] = (grave, time.monotonic() + GRAVE_SECONDS)
        return key
