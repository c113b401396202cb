"""A small typed client for TrainJobs and TestJobs on Kubernetes, for notebooks and scripts; the `torchyard
submit | status | logs | cancel | list` commands are built on it.

It talks to the cluster of your kubeconfig (or, inside a pod, its ServiceAccount), as kubectl does, and never
needs the operator's own credentials.

    from torchyard.operator import Client

    client = Client(namespace="default")
    [name] = client.submit("examples/trainjob.yaml")          # a file, a dict, or a TrainJob/TestJob model
    status = client.wait(name)                                # until Succeeded or Failed; a JobStatus
    print(status.phase, status.metrics, status.last_checkpoint)
    print(client.logs(name, node=0))                          # the pod log of node 0
    client.list()                                             # [JobSummary(kind, name, phase, ...)]
    client.cancel(name)                                       # deletes the job; the operator stops its pods
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchyard.operator.api.jobfile import load_jobs
from torchyard.operator.api.spec import (
    GROUP,
    KINDS,
    NODE_INFIX,
    VERSION,
    Job,
    JobStatus,
    Phase,
    TestJob,
    TestJobStatus,
    load_job,
)
from torchyard.operator.errors import ApiError, ClientError
from torchyard.operator.kube.logs import configmap_name, data_key
from torchyard.operator.kube.render import LABEL_ATTEMPT

FINISHED = (Phase.SUCCEEDED, Phase.FAILED)
STARTED = (Phase.RUNNING, *FINISHED)


@dataclass(frozen=True)
class JobSummary:
    """One line of `list`."""

    kind: str
    name: str
    phase: str
    nodes: int
    restarts: int
    created: str
    headline: str  # a TestJob's first metric, else ""


class Client:
    """TrainJobs and TestJobs of one namespace."""

    def __init__(self, namespace: str | None = None, kubeconfig: str | None = None,
                 context: str | None = None) -> None:  # fmt: skip
        from kubernetes import client, config  # here: importing this module stays cheap for the CLI

        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
            default = config.list_kube_config_contexts(config_file=kubeconfig)[1]["context"].get("namespace")
        except (config.ConfigException, FileNotFoundError, TypeError):
            if kubeconfig is not None:
                raise ClientError(f"cannot load the kubeconfig {kubeconfig}") from None
            config.load_incluster_config()
            default = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
        self.namespace = namespace or default or "default"
        self._objects = client.CustomObjectsApi()
        self._core = client.CoreV1Api()
        self._errors = client.ApiException

    def submit(self, job: str | Path | dict[str, Any] | Job) -> list[str]:
        """Create the job(s) of a file, a dict or a model (validated first); their names."""
        if isinstance(job, (str, Path)):
            jobs = load_jobs(job)
        else:
            jobs = [job if not isinstance(job, dict) else load_job(job, "the job")]
        for one in jobs:
            body = one.to_dict()
            body.pop("status", None)
            self._call(self._objects.create_namespaced_custom_object, GROUP, VERSION, self.namespace,
                       KINDS[one.kind].plural, body)  # fmt: skip
        return [one.metadata.name for one in jobs]

    def get(self, name: str, kind: str | None = None) -> Job:
        """The job named `name` (TrainJob or TestJob; `kind` settles a name both kinds use)."""
        found = []
        for candidate in (kind,) if kind else tuple(KINDS):
            try:
                body = self._objects.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, KINDS[candidate].plural, name
                )
            except self._errors as err:
                if err.status == 404:
                    continue
                raise _api_error(err) from None
            found.append(load_job(body, f"{candidate} {self.namespace}/{name}"))
        if not found:
            kinds = kind or " or ".join(KINDS)
            raise ApiError(404, "NotFound", f"no {kinds} {name!r} in namespace {self.namespace}; "
                           "`torchyard list` shows its jobs")  # fmt: skip
        if len(found) > 1:
            raise ClientError(f"both a TrainJob and a TestJob are named {name!r}: say which (kind)")
        return found[0]

    def status(self, name: str, kind: str | None = None) -> JobStatus:
        """The job's status (TestJobStatus for a TestJob); Pending before the operator wrote one."""
        job = self.get(name, kind)
        if job.status is not None:
            return job.status
        return TestJobStatus() if isinstance(job, TestJob) else JobStatus()

    def wait(self, name: str, kind: str | None = None, timeout: float | None = None,
             poll_seconds: float = 2.0, until: tuple[Phase, ...] = FINISHED) -> JobStatus:  # fmt: skip
        """The status once the job is in a phase of `until` (Succeeded or Failed; STARTED: its pods run or
        ran); TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(name, kind)
            if status.phase in until:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{name} is still {status.phase.value} after {timeout:.0f} s")
            time.sleep(poll_seconds)

    def logs(self, name: str, node: int = 0, kind: str | None = None, tail: int | None = None) -> str:
        """The log of node `node`'s pod (rank 0's by default)."""
        pod = self._pod(name, node, kind)
        return self._call(self._core.read_namespaced_pod_log, pod, self.namespace, tail_lines=tail)

    def previous_logs(self, name: str, node: int = 0, kind: str | None = None) -> str:
        """The end of node `node`'s log in the last attempt that failed and was restarted, as the operator
        kept it before deleting the pod (kube/logs.py)."""
        pod = self._pod(name, node, kind)
        try:
            kept = self._call(self._core.read_namespaced_config_map, configmap_name(name), self.namespace)
        except ApiError as err:
            if err.status != 404:
                raise
            raise ClientError(f"{name} has not been restarted after a failure: no earlier attempt's logs "
                              f"(`torchyard logs {name}` shows the current one)") from None
        attempt = int((kept.metadata.annotations or {}).get(LABEL_ATTEMPT, "0")) + 1
        text = (kept.data or {}).get(data_key(node))
        if text is None:
            raise ClientError(f"pod {pod} did not fail in attempt {attempt} (the last restarted one); "
                              f"kept are: {', '.join(sorted(kept.data or {})) or 'none'}")
        return text

    def follow(self, name: str, node: int = 0, kind: str | None = None) -> Iterator[str]:
        """The log of node `node`'s pod, line by line, until the pod ends."""
        pod = self._pod(name, node, kind)
        response = self._call(self._core.read_namespaced_pod_log, pod, self.namespace, follow=True,
                              _preload_content=False)  # fmt: skip
        try:
            for line in response.stream():
                yield line.decode(errors="replace")
        finally:
            response.release_conn()

    def cancel(self, name: str, kind: str | None = None) -> None:
        """Delete the job; the operator stops and removes its pods."""
        job = self.get(name, kind)
        self._call(self._objects.delete_namespaced_custom_object, GROUP, VERSION, self.namespace,
                   KINDS[job.kind].plural, name)  # fmt: skip

    def list(self) -> list[JobSummary]:
        rows = []
        for kind, info in KINDS.items():
            listed = self._call(self._objects.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                info.plural)  # fmt: skip
            for item in listed.get("items", []):
                status, meta = item.get("status") or {}, item["metadata"]
                spec = item.get("spec", {})
                rows.append(JobSummary(
                    kind, meta["name"], status.get("phase", "Pending"), spec.get("nodes", 1),
                    status.get("restarts", 0), meta.get("creationTimestamp", ""),
                    status.get("headlineMetric", ""),
                ))  # fmt: skip
        return sorted(rows, key=lambda row: (row.created, row.kind, row.name))

    def _pod(self, name: str, node: int, kind: str | None) -> str:
        job = self.get(name, kind)
        if not 0 <= node < job.spec.nodes:
            raise ClientError(f"{job.kind} {name} has nodes 0-{job.spec.nodes - 1}, not node {node}")
        return f"{name}{NODE_INFIX}{node}"

    def _call(self, method, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except self._errors as err:
            raise _api_error(err) from None


def _api_error(err: Any) -> ApiError:
    """The API server's own message (its Status object), not the client library's dump of the response."""
    try:
        body = json.loads(err.body)
    except (TypeError, ValueError):
        body = {}
    return ApiError(err.status or 0, body.get("reason") or err.reason or "", body.get("message") or str(err))
