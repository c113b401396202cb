"""A Kubernetes API emulator (kmock), kept for the one test that needs a server to fail on cue
(tests/faults/test_api_faults.py: injected 500s). Everything else runs on the real control plane of
`make cluster`; the product never uses this.

kmock's KubernetesEmulator keeps objects in memory and serves list/watch/create/patch/delete. This subclass
closes the gaps the operator would trip over, and nothing more:

- it stamps uid, resourceVersion, creationTimestamp and generation (kopf tells objects apart by them);
- a status subresource behaves as in Kubernetes: PATCH .../status changes only status, a PATCH of the
  object itself leaves status alone;
- a pod bound to a node (spec.nodeName, set by the dev-cluster runner) is deleted gracefully: DELETE marks
  it with deletionTimestamp and the runner deletes it for good (gracePeriodSeconds=0) once its process
  has exited, as a kubelet does;
- the request log holds only the requests in flight: kmock matches every request against its whole log,
  so a growing log makes the emulator quadratically slow (use `writes` to count what happened).

Still not emulated: label and field selectors (ignored: list and watch return everything), strategic-merge
and apply patches (every PATCH is a JSON merge patch), garbage collection through ownerReferences, and
resourceVersion-based watch resumption (a watch replays every object first).

    async with Emulator() as emulator, kmock.Server(emulator) as server:
        url = str(server.url)
"""

from __future__ import annotations

import collections
import datetime
import uuid
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import rendering  # the Request type the emulator's _handle receives

from torchyard.operator.api.spec import GROUP, KINDS, VERSION

VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}
# (group/version/plural, kind, namespaced, subresources)
RESOURCES = [
    ("v1/pods", "Pod", True, {"status"}),
    ("v1/services", "Service", True, set()),
    ("v1/events", "Event", True, set()),
    ("events.k8s.io/v1/events", "Event", True, set()),
    ("v1/namespaces", "Namespace", False, {"status"}),
    ("kopf.dev/v1/kopfpeerings", "KopfPeering", True, set()),
    ("kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", False, set()),
    *((f"{GROUP}/{VERSION}/{spec.plural}", kind, True, {"status"}) for kind, spec in KINDS.items()),
]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with the object metadata, status subresource and graceful pod deletion added."""

    _version: int = attrs.field(default=0, init=False)  # the last resourceVersion handed out
    _with_status: set = attrs.field(factory=set, init=False)
    # (action, plural, namespace, name) -> count of writes, kept whole (the request log is trimmed)
    writes: collections.Counter = attrs.field(factory=collections.Counter, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, kind, namespaced, subresources in RESOURCES:
            info = self.resources[key]
            info.kind, info.namespaced, info.verbs, info.subresources = kind, namespaced, VERBS, subresources
            info.singular = kind.lower()
            if kind in KINDS:
                info.shortnames, info.categories = {KINDS[kind].short_name}, {"torchyard"}
            if "status" in subresources:
                self._with_status.add(kmock.resource(key))

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        try:
            return await self._handle_k8s(request)
        finally:  # kmock matches each request against every request it logged: log only those in flight
            for i, logged in enumerate(self._requests):
                if logged is request:
                    del self._requests[i]
                    break

    async def _handle_k8s(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        if request.action in (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE):
            name = (
                request.name or ((request.data or {}).get("metadata") or {}).get("name")
                if isinstance(request.data, dict | None)
                else request.name
            )
            self.writes[request.action.value, request.resource.plural, request.namespace, name] += 1
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            self._stamp_new(request)
        elif request.action == kmock.action.UPDATE and isinstance(request.data, list):  # a JSON patch
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": self._next()})
        elif request.action == kmock.action.UPDATE and isinstance(request.data, dict):
            self._stamp_change(request)
        elif request.action == kmock.action.DELETE and request.name is not None:
            response = await self._graceful_delete(request)
            if response is not None:
                return response
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchException as err:  # e.g. kopf's `test` of a stale resourceVersion
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(err)) from None

    async def _serve_version(self, request: rendering.Request) -> dict[str, Any]:
        payload = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")  # the core group is "v1", not "/v1"
        return payload

    async def _serve_list(self, request: rendering.Request) -> dict[str, Any]:
        payload = await super()._serve_list(request)
        info = self.resources[request.resource]
        group, version = request.resource.group, request.resource.version
        payload["apiVersion"] = f"{group}/{version}" if group else version
        payload["kind"] = f"{info.kind}List"
        payload["metadata"]["resourceVersion"] = str(self._version)
        return payload

    def _next(self) -> str:
        self._version += 1
        return str(self._version)

    def _stamp_new(self, request: rendering.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if request.namespace:
            meta.setdefault("namespace", request.namespace)
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next(),
            creationTimestamp=now_rfc3339().split(".")[0] + "Z",
            generation=1,
        )
        if request.resource.plural == "pods":
            request.data.setdefault("status", {}).setdefault("phase", "Pending")

    def _stamp_change(self, request: rendering.Request) -> None:
        data = request.data
        if request.resource in self._with_status:
            if request.subresource == "status":
                for key in list(data):
                    if key not in ("status", "metadata"):
                        del data[key]
            else:
                data.pop("status", None)
        meta = data.get("metadata") or {}
        data["metadata"] = meta
        for key in ("uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp"):
            meta.pop(key, None)
        meta["resourceVersion"] = self._next()
        current = self._current(request)
        if "spec" in data and request.subresource is None and current is not None:
            meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1

    def _current(self, request: rendering.Request) -> dict | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    async def _graceful_delete(self, request: rendering.Request) -> aiohttp.web.StreamResponse | None:
        """Pods on a node go through deletionTimestamp until their runner confirms with grace 0."""
        if request.resource.plural != "pods":
            return None
        current = self._current(request)
        if current is None or not current.get("spec", {}).get("nodeName"):
            return None
        grace = request.params.get("gracePeriodSeconds") or (request.data or {}).get("gracePeriodSeconds")
        if grace is None:
            grace = current["spec"].get("terminationGracePeriodSeconds", 30)
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            obj = self.objects[key]
            if int(grace) == 0:
                raw = obj.raw
                obj.delete()
                await self._buses[request.resource].put({"type": "DELETED", "object": raw})
            elif not obj.get("metadata", {}).get("deletionTimestamp"):
                stamp = {"deletionTimestamp": now_rfc3339(), "deletionGracePeriodSeconds": int(grace)}
                obj.patch({"metadata": {**stamp, "resourceVersion": self._next()}})
                raw = obj.raw
                await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
            else:
                raw = obj.raw
        return aiohttp.web.json_response(raw)


def kubeconfig(server: str, namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig for a plain-HTTP emulator without authentication."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "dev-cluster", "cluster": {"server": server}}],
        "users": [{"name": "dev-cluster", "user": {}}],
        "contexts": [
            {
                "name": "dev-cluster",
                "context": {"cluster": "dev-cluster", "user": "dev-cluster", "namespace": namespace},
            }
        ],
        "current-context": "dev-cluster",
    }
