"""What the pod backend observes, as plain data: a pod -> PodState, corrected by Expectations.

A pod is reduced to what deciding needs: its node rank, the attempt it belongs to, its phase, why it does
not start, whether Kubernetes took it away (evicted, preempted), and, once it ended, its exit code and the
trainer's termination message (contract/termination.py).
Expectations bridge the index lag: pods just created (or deleted) count as such until the watch shows them,
as in Kubernetes' own Job controller, so a slow watch never leads to duplicate creates or double restarts.

    pods = expectations.apply([pod_state(body) for body in pod_bodies])
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from torchyard.contract.termination import Termination
from torchyard.operator.kube.render import LABEL_ATTEMPT, LABEL_JOB, LABEL_KIND, LABEL_RANK

EXPECTATION_SECONDS = 30.0  # forget an expected create/delete the watch never showed after this long


@dataclass(frozen=True)
class PodState:
    """One pod of a job, as the operator sees it."""

    name: str
    kind: str  # trainjob | testjob
    job: str
    rank: int
    attempt: int
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed | Unknown
    deleting: bool = False
    deleted_at: str | None = None  # metadata.deletionTimestamp
    uid: str = ""
    waiting: str = ""  # why a Pending pod does not start (Unschedulable, ImagePullBackOff, ...)
    waiting_message: str = ""
    exit_code: int | None = None
    exit_reason: str = ""  # the container runtime's word: OOMKilled, Error, Completed, ...
    finished_at: str | None = None
    termination: Termination | None = None
    disruption: str = ""  # why Kubernetes took it away: EvictionByEvictionAPI, PreemptionByScheduler, ...
    gone: bool = False  # deleted from the API server; its last state kept a while for what it says

    @property
    def active(self) -> bool:
        return self.phase in ("Pending", "Running", "Unknown")

    def describe(self) -> str:
        """e.g. `node 1 (pod x-node-1) exited with code 137`."""
        text = f"node {self.rank} (pod {self.name})"
        text += f" exited with code {self.exit_code}" if self.exit_code is not None else f" is {self.phase}"
        if self.exit_reason and self.exit_reason not in ("Error", "Completed"):
            text += f" ({self.exit_reason})"
        term = self.termination
        if term is not None and (term.reason or term.message):
            text += ": " + ": ".join(part for part in (term.reason, term.message) if part)
        elif self.exit_code:
            text += f" without a termination message (`kubectl logs {self.name}` shows why)"
        return text


def job_key(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(namespace, kind, job name) of a labelled pod, the key of the operator's pod index."""
    labels = body.get("metadata", {}).get("labels") or {}
    if LABEL_JOB not in labels or LABEL_KIND not in labels:
        return None
    return body["metadata"].get("namespace") or "default", labels[LABEL_KIND], labels[LABEL_JOB]


def pod_state(body: dict[str, Any]) -> PodState:
    meta = body.get("metadata", {})
    labels = meta.get("labels") or {}
    status = body.get("status") or {}
    terminated: dict[str, Any] = {}
    for container in status.get("containerStatuses") or []:
        # the trainer's container (named for the kind) speaks for the pod, not a sidecar of its template
        if container.get("name", labels.get(LABEL_KIND)) == labels.get(LABEL_KIND):
            terminated = (container.get("state") or {}).get("terminated") or terminated
    return PodState(
        name=meta.get("name", ""),
        kind=labels.get(LABEL_KIND, ""),
        job=labels.get(LABEL_JOB, ""),
        rank=_int(labels.get(LABEL_RANK), -1),
        attempt=_int(labels.get(LABEL_ATTEMPT), 0),
        phase=status.get("phase") or "Pending",
        deleting=bool(meta.get("deletionTimestamp")),
        deleted_at=meta.get("deletionTimestamp"),
        uid=meta.get("uid", ""),
        exit_code=terminated.get("exitCode"),
        exit_reason=terminated.get("reason") or "",
        finished_at=terminated.get("finishedAt"),
        termination=Termination.parse(terminated.get("message")),
        disruption=_disruption(status),
        **_waiting(status),
    )


def _disruption(status: dict[str, Any]) -> str:
    """The reason of a pod's DisruptionTarget condition (set when it is evicted, preempted or its node is
    tainted away), or of a kubelet's eviction (phase Failed, reason Evicted); empty when neither."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return condition.get("reason") or "DisruptionTarget"
    return "Evicted" if status.get("reason") == "Evicted" else ""


# Container waiting reasons that need someone to act (a kubelet retries them forever); ContainerCreating and
# PodInitializing are normal steps and are not among them.
STUCK_WAITING = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def _waiting(status: dict[str, Any]) -> dict[str, str]:
    """Why a pod does not start: the scheduler's verdict, or its container's waiting reason."""
    if (status.get("phase") or "Pending") != "Pending":
        return {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return {"waiting": reason, "waiting_message": condition.get("message") or ""}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            return {"waiting": waiting["reason"], "waiting_message": waiting.get("message") or ""}
    return {}


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


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
        seen = {p.name: p for p in pods if not p.gone}
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
