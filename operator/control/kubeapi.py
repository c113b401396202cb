"""A small async Kubernetes API client over aiohttp, shared by the operator and `torchyard dev-cluster`.

kopf watches and indexes; this client writes (create, merge-patch, delete) and, for the dev-cluster
runner, lists and watches pods. It authenticates with the same `kopf.ConnectionInfo` kopf logs in with,
so both always talk to the same API server as the same user.

Why not the `kubernetes` package's client, or kubernetes_asyncio: the first blocks (a thread per call under
an asyncio operator), and the second would be a second login path and a second HTTP stack beside kopf's
aiohttp one. The `kubernetes` package stays in the operator extra because kopf.login_via_client logs in
through it (in-cluster, kubeconfig, exec plugins); nothing here imports it.

    api = KubeApi(info)
    await api.create(resource_path("v1", "pods", "ns"), pod)
    await api.patch(resource_path("torchyard.dev/v1alpha1", "trainjobs", "ns", "x", "status"), {"status": {}})
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from torchyard.operator.api.spec import API_VERSION, KINDS
from torchyard.operator.errors import ApiError

MERGE_PATCH = "application/merge-patch+json"


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    sub: str | None = None,
) -> str:
    """/api/v1/namespaces/ns/pods/name[/status] or /apis/group/version/...; no namespace: cluster-wide."""
    parts = ["api" if "/" not in api_version else "apis", api_version]
    if namespace:
        parts += ["namespaces", namespace]
    parts.append(plural)
    parts += [name] if name else []
    parts += [sub] if sub else []
    return "/" + "/".join(parts)


def job_path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    """The REST path of a TrainJob/TestJob, of its collection (no name), or of its subresource (`sub`)."""
    return resource_path(API_VERSION, KINDS[kind].plural, namespace, name, sub)


# As client-go: retried here are the answers where the server asks to come back later, 429 (too many
# requests, or storage (re)initializing after a restart) and a 5xx that carries Retry-After; after its
# Retry-After, else after these delays, then raised. Other 5xx go to the caller's own back-off, which also
# re-reads what it writes.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
MAX_RETRY_AFTER_S = 10.0


class KubeApi:
    """One aiohttp session to the API server; create it once (at operator startup), close it at cleanup.

    `login`, when given, is called again on a 401 (expired or rotated credentials: projected service
    account tokens, exec plugins) and the request is sent once more with what it returns. Client
    certificates are read once, at start."""

    def __init__(self, info: kopf.ConnectionInfo,
                 login: Callable[[], kopf.ConnectionInfo | None] | None = None) -> None:
        self.server = info.server.rstrip("/")
        self._login = login
        self._credentials = _credentials(info)
        self._relogin_lock = asyncio.Lock()
        self._session = aiohttp.ClientSession(
            headers={"Accept": "application/json"},
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info), limit=64),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json",
        *, as_text: bool = False, **params: Any
    ) -> Any:
        """The decoded JSON answer (`as_text`: the body as text, e.g. a pod's log), retried on 429 and on a
        5xx that says when to come back, logged in again once on a 401."""
        relogged, delays = False, iter(RETRY_DELAYS_S)
        while True:
            credentials = self._credentials
            try:
                return await self._send(method, path, body, content_type, params, as_text)
            except ApiError as err:
                if err.status == 401 and self._login is not None and not relogged:
                    relogged = True  # a log-in does not use up a retry
                    await self._relogin(credentials)
                    continue
                come_back = err.status == 429 or (err.status >= 500 and err.retry_after_s is not None)
                delay = next(delays, None) if come_back else None
                if delay is None:
                    raise
                wait = delay if err.retry_after_s is None else err.retry_after_s
                await asyncio.sleep(min(wait, MAX_RETRY_AFTER_S))

    async def _send(self, method: str, path: str, body: Any, content_type: str,
                    params: dict[str, Any], as_text: bool = False) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {**self._credentials, **({"Content-Type": content_type} if body is not None else {})}
        query = {key: str(value) for key, value in params.items() if value is not None}
        async with self._session.request(
            method, self.server + path, data=data, headers=headers, params=query, timeout=30
        ) as response:
            if as_text and response.status < 400:
                return await response.text(errors="replace")
            payload = await response.json(content_type=None) if response.content_length != 0 else {}
            if response.status >= 400:
                payload = payload if isinstance(payload, dict) else {}
                raise ApiError(response.status, payload.get("reason", ""), payload.get("message", ""),
                               _retry_after_s(response))
            return payload or {}

    async def _relogin(self, stale: dict[str, str]) -> None:
        """Log in again, once for all the requests that met the same stale credentials."""
        async with self._relogin_lock:
            if self._credentials is not stale:
                return  # another request has logged in meanwhile
            info = await asyncio.to_thread(self._login)  # exec plugins and token files block
            if info is not None:
                self._credentials = _credentials(info)

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def create(self, path: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        return await self.request("POST", path, body, **params)

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PUT", path, body)

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body, content_type=MERGE_PATCH)

    async def delete(self, path: str, grace_seconds: int | None = None, uid: str | None = None) -> bool:
        """Delete (background propagation), only the object with `uid` if given; False when already gone."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", path, body, gracePeriodSeconds=grace_seconds)
        except ApiError as err:
            if err.status == 404 or (uid and err.status == 409):  # 409: a newer object of that name
                return False
            raise
        return True

    async def watch(
        self, path: str, resource_version: str | None = None, **selectors: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) of a collection until the server ends the stream. BOOKMARK events
        (their object carries only a resourceVersion) and ERROR events (a Status) come through: the caller
        resumes from the one and relists on an ERROR 410."""
        params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "300", **selectors}
        if resource_version and resource_version != "...":
            params["resourceVersion"] = resource_version
        url = self.server + path
        async with self._session.get(url, params=params, headers=self._credentials) as response:
            if response.status == 401 and self._login is not None:
                await self._relogin(self._credentials)
            if response.status >= 400:
                raise ApiError(response.status, response.reason or "", await response.text(),
                               _retry_after_s(response))
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)


async def list_watch(
    api: KubeApi,
    path: str,
    handle: Callable[[str, dict[str, Any]], Awaitable[None]],
    listed: asyncio.Event | None = None,
    on_list: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
    **selectors: str,
) -> None:
    """An informer's loop, for ever: list (every object is ADDED, or with `on_list` the whole listing goes
    there, so that a relist can drop what vanished meanwhile; then `listed` is set), watch from that version,
    resume when a stream ends or breaks (a pause while the server is away), relist after an ERROR event
    (410: history compacted). BOOKMARKs only move the version."""
    version = None
    while True:
        try:
            if version is None:
                listing = await api.request("GET", path, **selectors)
                version = listing["metadata"]["resourceVersion"]
                if on_list is not None:
                    await on_list(listing["items"])
                else:
                    for item in listing["items"]:
                        await handle("ADDED", item)
                if listed is not None:
                    listed.set()
            async for event in api.watch(path, version, **selectors):
                if event["type"] == "ERROR":
                    version = None
                    break
                version = event["object"]["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    await handle(event["type"], event["object"])
        except ApiError as err:
            if err.status == 410:  # the version is older than the server's history: list again
                version = None
            await asyncio.sleep(0.5)
        except (aiohttp.ClientError, OSError, TimeoutError):
            await asyncio.sleep(0.5)


def _credentials(info: kopf.ConnectionInfo) -> dict[str, str]:
    """The Authorization header for a token or a user name; none for client certificates."""
    if info.token:
        return {"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
    if info.username:
        return {"Authorization": aiohttp.BasicAuth(info.username, info.password or "").encode()}
    return {}


def _retry_after_s(response: aiohttp.ClientResponse) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):  # absent, or an HTTP date, which the API server does not send
        return None


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        ca_data = base64.b64decode(info.ca_data).decode() if info.ca_data else None
        context = ssl.create_default_context(cafile=info.ca_path, cadata=ca_data)
    if info.certificate_data and info.private_key_data:
        # ssl loads a certificate chain from files only: write them where only we can read them, load, delete.
        with tempfile.TemporaryDirectory(prefix="torchyard-client-") as private:
            certificate, key = Path(private) / "client.crt", Path(private) / "client.key"
            certificate.write_bytes(base64.b64decode(info.certificate_data))
            key.write_bytes(base64.b64decode(info.private_key_data))
            context.load_cert_chain(certificate, key)
    elif info.certificate_path:
        context.load_cert_chain(info.certificate_path, info.private_key_path)
    return context
