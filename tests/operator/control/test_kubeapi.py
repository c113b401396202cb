"""The client against a real HTTP server that answers as the API server does when it is restarting, when
credentials expire and when a watch's version is too old."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import tempfile
from pathlib import Path

import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from torchyard.operator.control import kubeapi
from torchyard.operator.control.kubeapi import KubeApi, list_watch
from torchyard.operator.errors import ApiError

PODS = "/api/v1/namespaces/ns/pods"


def status(code: int, reason: str, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return web.json_response({"kind": "Status", "reason": reason, "message": reason}, status=code,
                             headers=headers)


async def serve(handler) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    return server


def client(server: TestServer, token: str = "old", login=None) -> KubeApi:
    return KubeApi(kopf.ConnectionInfo(server=str(server.make_url("")), token=token), login=login)


@pytest.mark.asyncio
async def test_429_while_storage_reinitializes_is_retried_after_retry_after():
    answers = [status(429, "TooManyRequests", "0"), status(503, "ServiceUnavailable", "0"),
               web.json_response({"items": []})]
    seen = []

    async def handler(request):
        seen.append(request.method)
        return answers.pop(0)

    server = await serve(handler)
    api = client(server)
    try:
        assert await api.get(PODS) == {"items": []}
        assert seen == ["GET", "GET", "GET"]
    finally:
        await api.close()
        await server.close()


@pytest.mark.asyncio
async def test_a_server_that_stays_unavailable_is_raised_after_the_retries():
    calls = 0

    async def handler(request):
        nonlocal calls
        calls += 1
        return status(503, "ServiceUnavailable", "0")

    server = await serve(handler)
    api = client(server)
    try:
        with pytest.raises(ApiError, match="503 ServiceUnavailable"):
            await api.create(PODS, {"metadata": {"name": "p"}})
        assert calls == len(kubeapi.RETRY_DELAYS_S) + 1
    finally:
        await api.close()
        await server.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("code", "reason"), [(409, "AlreadyExists"), (500, "InternalError")],
                         ids=["409", "500-without-retry-after"])
async def test_other_errors_go_to_the_caller_at_once(code, reason):
    calls = 0

    async def handler(request):
        nonlocal calls
        calls += 1
        return status(code, reason)

    server = await serve(handler)
    api = client(server)
    try:
        with pytest.raises(ApiError, match=f"{code} {reason}"):
            await api.create(PODS, {"metadata": {"name": "p"}})
        assert calls == 1
    finally:
        await api.close()
        await server.close()


@pytest.mark.asyncio
async def test_a_401_logs_in_again_once_for_every_waiting_request_and_goes_on():
    logins = 0

    def login() -> kopf.ConnectionInfo:
        nonlocal logins
        logins += 1
        return kopf.ConnectionInfo(server="unused", token="rotated")

    async def handler(request):
        if request.headers.get("Authorization") != "Bearer rotated":
            return status(401, "Unauthorized")
        return web.json_response({"kind": "Pod"})

    server = await serve(handler)
    api = client(server, login=login)
    try:
        answers = await asyncio.gather(*(api.get(f"{PODS}/p{i}") for i in range(5)))
        assert answers == [{"kind": "Pod"}] * 5
        assert logins == 1
    finally:
        await api.close()
        await server.close()


@pytest.mark.asyncio
async def test_credentials_that_stay_wrong_are_a_401_not_a_loop():
    async def handler(request):
        return status(401, "Unauthorized")

    server = await serve(handler)
    api = client(server, login=lambda: kopf.ConnectionInfo(server="unused", token="still-wrong"))
    try:
        with pytest.raises(ApiError, match="401 Unauthorized"):
            await api.get(PODS)
    finally:
        await api.close()
        await server.close()


@pytest.mark.asyncio
async def test_a_watch_answered_410_gone_lists_again():
    lists, watched_versions = 0, []

    async def handler(request):
        nonlocal lists
        if request.query.get("watch") != "true":
            lists += 1
            return web.json_response({"metadata": {"resourceVersion": str(lists)}, "items": []})
        watched_versions.append(request.query["resourceVersion"])
        if len(watched_versions) == 1:
            return status(410, "Expired")
        await asyncio.sleep(30)
        return web.Response()

    server = await serve(handler)
    api = client(server)
    task = asyncio.ensure_future(list_watch(api, PODS, handle=lambda *_: asyncio.sleep(0)))
    try:
        for _ in range(100):
            if len(watched_versions) == 2:
                break
            await asyncio.sleep(0.05)
        assert lists == 2 and watched_versions == ["1", "2"]
    finally:
        task.cancel()
        await api.close()
        await server.close()


def test_client_certificate_data_leaves_no_key_file_behind(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=torchyard-test",
                    "-days", "1", "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                   check=True, capture_output=True)
    info = kopf.ConnectionInfo(
        server="https://127.0.0.1:6443", insecure=True,
        certificate_data=base64.b64encode((tmp_path / "c.pem").read_bytes()),
        private_key_data=base64.b64encode((tmp_path / "k.pem").read_bytes()))
    before = set(os.listdir(tempfile.gettempdir()))

    kubeapi._ssl_context(info)

    left = {name for name in set(os.listdir(tempfile.gettempdir())) - before
            if name.endswith(".pem") or name.startswith("torchyard-client-")}
    assert not left, f"key material left in {tempfile.gettempdir()}: {left}"
    assert Path(tmp_path / "k.pem").exists()
