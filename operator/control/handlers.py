"""The kopf handlers, each a few lines: the work is in loop.py (impure) and each backend's decide.py (pure).

- login, startup (the API client, /metrics and /healthz) and cleanup;
- an index of TrainJobs by name, for TestJob.fromTrainJob;
- one daemon per TrainJob/TestJob running its JobLoop;
- an event handler that wakes a job's loop when the job changes (and the TestJobs waiting for a TrainJob),
  and lets the backend stop what a deleted job still runs;
- the backend's own handlers (Backend.register): the pod index and pod events, or the scancel finalizer.

    kopf.run(registry=build_registry(backend), memo=memo_for(config, backend))
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp.web
import kopf

from torchyard.operator.api.spec import GROUP, KINDS, VERSION
from torchyard.operator.control.kubeapi import KubeApi
from torchyard.operator.control.loop import Backend, JobLoop, OperatorConfig, OperatorState

TRAINJOBS = KINDS["TrainJob"].plural


def memo_for(config: OperatorConfig, backend: Backend) -> kopf.Memo:
    memo = kopf.Memo()
    memo.state = OperatorState(config=config, backend=backend)
    return memo


def build_registry(backend: Backend) -> kopf.OperatorRegistry:
    """A fresh registry with every handler (one per operator; tests start several)."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.index(GROUP, VERSION, TRAINJOBS, registry=registry, id="trainjobs_by_name")(trainjobs_by_name)
    for kind, spec in KINDS.items():
        kopf.on.event(GROUP, VERSION, spec.plural, registry=registry, id=f"{kind}-event")(job_changed)
        kopf.daemon(
            GROUP, VERSION, spec.plural, registry=registry, id=f"{kind}-loop", cancellation_timeout=10
        )(job_loop)
    backend.register(registry)
    return registry


def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    return memo.state.config.connection or kopf.login_via_client(**kwargs)


async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    state: OperatorState = memo.state
    settings.posting.level = logging.INFO
    settings.watching.reconnect_backoff = 0.5
    if state.config.connection is not None:
        state.api = KubeApi(state.config.connection)
    else:
        def fresh_login() -> kopf.ConnectionInfo | None:
            return kopf.login_via_client(logger=logger, settings=settings)
        state.api = KubeApi(fresh_login(), login=fresh_login)
    if state.config.metrics_port is not None:
        # no access log: the kubelet's probes and Prometheus' scrapes would be most of the operator's log
        runner = aiohttp.web.AppRunner(state.metrics.app(), access_log=None)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, state.config.metrics_host, state.config.metrics_port).start()
        memo.metrics_runner = runner
        logger.info(f"/metrics and /healthz on port {state.config.metrics_port}")


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("metrics_runner") is not None:
        await memo.metrics_runner.cleanup()
    if memo.state.api is not None:
        await memo.state.api.close()


def trainjobs_by_name(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    return {
        (namespace or "default", name): {
            key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec", "status")
        }
    }


async def job_changed(type: str, body: kopf.Body, memo: kopf.Memo, **indexes: Any) -> None:
    state: OperatorState = memo.state
    key = (body.metadata.namespace or "default", body["kind"].lower(), body.metadata.name)
    if type == "DELETED":
        if state.api is not None:
            await state.backend.job_deleted(state, key, body, **_backend_indexes(state.backend, indexes))
        return
    state.wake(key)
    if body["kind"] == "TrainJob":  # TestJobs waiting for this TrainJob look again
        for other in list(state.wakeups):
            if other[0] == key[0] and other[1] == "testjob":
                state.wake(other)


async def job_loop(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: logging.Logger, **kwargs: Any
) -> None:
    state: OperatorState = memo.state
    indexes = {"trainjobs_by_name": kwargs["trainjobs_by_name"], **_backend_indexes(state.backend, kwargs)}
    await JobLoop(body, state, logger, **indexes).run(stopped)


def _backend_indexes(backend: Backend, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: kwargs[name] for name in backend.indexes}
