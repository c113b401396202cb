"""The kopf handlers: thin, each a few lines; the work is in controller.py (impure) and reconcile.py (pure).

- an index of the operator's pods by job, filled from the watch (never a server-side label selector);
- an index of TrainJobs by name, for TestJob.fromTrainJob;
- one daemon per TrainJob/TestJob running its JobController loop;
- event handlers that wake a job's loop when the job or one of its pods changes, and clean up after a
  deleted job (its pods and Service), so nothing is left running even without garbage collection.

    registry = build_registry()          # then kopf.operator(registry=registry, memo=memo_for(config))
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp.web
import kopf

from torchyard.operator.api import GROUP, VERSION
from torchyard.operator.controller import (
    JobController,
    OperatorConfig,
    OperatorState,
    delete_children,
    plural,
)
from torchyard.operator.crds import KINDS
from torchyard.operator.kube import KubeApi
from torchyard.operator.render_k8s import LABEL_JOB
from torchyard.operator.status import PodState, job_key, pod_state

OPERATOR_PODS = {LABEL_JOB: kopf.PRESENT}


def memo_for(config: OperatorConfig) -> kopf.Memo:
    memo = kopf.Memo()
    memo.state = OperatorState(config=config)
    return memo


def build_registry() -> kopf.OperatorRegistry:
    """A fresh registry with every handler (one per operator; tests start several)."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.index("pods", labels=OPERATOR_PODS, registry=registry, id="pods_by_job")(pods_by_job)
    kopf.on.event("pods", labels=OPERATOR_PODS, registry=registry)(pod_changed)
    kopf.index(GROUP, VERSION, plural("TrainJob"), registry=registry, id="trainjobs_by_name")(
        trainjobs_by_name
    )
    for kind in KINDS:
        kopf.on.event(GROUP, VERSION, plural(kind), registry=registry, id=f"{kind}-event")(job_changed)
        kopf.daemon(
            GROUP, VERSION, plural(kind), registry=registry, id=f"{kind}-loop", cancellation_timeout=10
        )(job_loop)
    return registry


def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    return memo.state.config.connection or kopf.login_via_client(**kwargs)


async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    state: OperatorState = memo.state
    settings.posting.level = logging.INFO
    settings.watching.reconnect_backoff = 0.5
    state.api = KubeApi(state.config.connection or kopf.login_via_client(logger=logger, settings=settings))
    if state.config.metrics_port is not None:
        runner = aiohttp.web.AppRunner(state.metrics.app())
        await runner.setup()
        await aiohttp.web.TCPSite(runner, state.config.metrics_host, state.config.metrics_port).start()
        memo.metrics_runner = runner
        logger.info(f"/metrics and /healthz on port {state.config.metrics_port}")


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("metrics_runner") is not None:
        await memo.metrics_runner.cleanup()
    if memo.state.api is not None:
        await memo.state.api.close()


def pods_by_job(body: kopf.Body, **_: Any) -> dict[tuple[str, str, str], PodState] | None:
    key = job_key(body)
    return {key: pod_state(body)} if key else None


def trainjobs_by_name(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    return {
        (namespace or "default", name): {
            key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec", "status")
        }
    }


def pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = job_key(body)
    if key is not None:
        memo.state.wake(key)


async def job_changed(type: str, body: kopf.Body, memo: kopf.Memo, pods_by_job: kopf.Index, **_: Any) -> None:
    state: OperatorState = memo.state
    key = (body.metadata.namespace or "default", body["kind"].lower(), body.metadata.name)
    if type == "DELETED" and state.api is not None:
        await delete_children(state.api, key, list(pods_by_job.get(key, [])), body.metadata.uid)
        return
    state.wake(key)
    if body["kind"] == "TrainJob":  # TestJobs waiting for this TrainJob look again
        for other in list(state.wakeups):
            if other[0] == key[0] and other[1] == "testjob":
                state.wake(other)


async def job_loop(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: logging.Logger, **kwargs: Any
) -> None:
    indexes = {name: kwargs[name] for name in ("pods_by_job", "trainjobs_by_name")}
    await JobController(body["kind"], body, memo.state, logger, **indexes).run(stopped)
