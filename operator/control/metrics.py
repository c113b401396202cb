"""Prometheus metrics and the /metrics + /healthz endpoint of the operator.

torchyard_jobs_created_total{kind,namespace}      torchyard_jobs_succeeded_total{kind,namespace}
torchyard_jobs_failed_total{kind,namespace,reason} torchyard_job_restarts_total{kind,namespace}
torchyard_jobs{kind,namespace,phase}              torchyard_reconcile_duration_seconds{kind}
"""

from __future__ import annotations

import aiohttp.web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class Metrics:
    """One registry per operator (tests run several operators in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["kind", "namespace"]
        self.created = Counter(
            "torchyard_jobs_created", "Jobs the operator took on.", labels, registry=self.registry
        )
        self.succeeded = Counter(
            "torchyard_jobs_succeeded", "Jobs that succeeded.", labels, registry=self.registry
        )
        self.failed = Counter(
            "torchyard_jobs_failed",
            "Jobs that failed, by reason.",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.restarted = Counter(
            "torchyard_job_restarts", "Whole-gang restarts.", labels, registry=self.registry
        )
        self.jobs = Gauge("torchyard_jobs", "Jobs per phase.", [*labels, "phase"], registry=self.registry)
        self.reconcile = Histogram(
            "torchyard_reconcile_duration_seconds",
            "Time of one reconcile of one job (read, decide, apply, write status).",
            ["kind"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str, str], str] = {}

    def observe_phase(self, kind: str, namespace: str, name: str, phase: str | None) -> None:
        """Track the phase of one job (None: the job is gone) in the per-phase gauge."""
        key = (kind, namespace, name)
        old = self._phases.pop(key, None)
        if old == phase:
            if phase is not None:
                self._phases[key] = phase
            return
        if old is not None:
            self.jobs.labels(kind, namespace, old).dec()
        if phase is not None:
            self._phases[key] = phase
            self.jobs.labels(kind, namespace, phase).inc()

    def transition(self, kind: str, namespace: str, old: dict, new: dict) -> None:
        """Count what changed between two statuses of one job."""
        if new.get("restarts", 0) > old.get("restarts", 0):
            self.restarted.labels(kind, namespace).inc(new["restarts"] - old.get("restarts", 0))
        if old.get("phase") is None and new.get("phase") is not None:  # a job seen for the first time
            self.created.labels(kind, namespace).inc()
        if new.get("phase") != old.get("phase"):
            if new.get("phase") == "Succeeded":
                self.succeeded.labels(kind, namespace).inc()
            elif new.get("phase") == "Failed":
                failed = next((c for c in new.get("conditions", []) if c.get("type") == "Failed"), {})
                self.failed.labels(kind, namespace, failed.get("reason", "")).inc()

    def app(self) -> aiohttp.web.Application:
        async def metrics(_: aiohttp.web.Request) -> aiohttp.web.Response:
            body = generate_latest(self.registry)
            return aiohttp.web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
            return aiohttp.web.Response(text="ok\n")

        app = aiohttp.web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        return app
