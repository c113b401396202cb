"""What the operator observes, as plain data (pure): pods -> PodState, termination messages, conditions.

A pod is reduced to what reconciling needs: its node rank, the attempt it belongs to, its phase and, once it
ended, its exit code and the trainer's termination message (JSON, see contract/termination.py). Conditions
are Kubernetes style; `set_condition` moves lastTransitionTime only when the condition's status changes.

    pods = [pod_state(body) for body in pod_bodies]
    conditions = set_condition(conditions, "Running", "True", ALL_NODES_RUNNING, "all 2 nodes run", now)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torchyard.contract.termination import Termination, retryable
from torchyard.operator.render_k8s import LABEL_JOB, LABEL_KIND, LABEL_RANK

LABEL_ATTEMPT = "torchyard.dev/attempt"

# Condition types.
CREATED, RUNNING, RESTARTING = "Created", "Running", "Restarting"
SUCCEEDED, FAILED, SUSPENDED = "Succeeded", "Failed", "Suspended"

# Condition reasons: named constants, so users and alerts can match on them.
PODS_CREATED = "PodsCreated"
CHILD_CONFLICT = "ChildConflict"
CREATE_REFUSED = "CreateRefused"  # the API server refused a pod or the Service (403, 422, quota, admission)
PODS_STUCK_TERMINATING = "PodsStuckTerminating"
WAITING_FOR_TRAIN_JOB = "WaitingForTrainJob"
ALL_NODES_RUNNING = "AllNodesRunning"
NODES_STARTING = "NodesStarting"
POD_FAILED = "PodFailed"
POD_LOST = "PodLost"
COMPLETED = "Completed"
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
NON_RETRYABLE_ERROR = "NonRetryableError"
DEADLINE_EXCEEDED = "DeadlineExceeded"
INVALID_SPEC = "InvalidSpec"
TRAIN_JOB_FAILED = "TrainJobFailed"
JOB_SUSPENDED = "Suspended"
JOB_RESUMED = "Resumed"


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
    finished_at: str | None = None
    termination: Termination | None = None

    @property
    def active(self) -> bool:
        return self.phase in ("Pending", "Running", "Unknown")

    def retryable(self) -> bool:
        """Whether a restart may help (the contract's rule)."""
        return retryable(self.termination, self.exit_code)

    def describe(self) -> str:
        """e.g. `node 1 (pod x-node-1) exited with code 137`."""
        text = f"node {self.rank} (pod {self.name})"
        text += f" exited with code {self.exit_code}" if self.exit_code is not None else f" is {self.phase}"
        term = self.termination
        if term is not None and (term.reason or term.message):
            text += ": " + ": ".join(part for part in (term.reason, term.message) if part)
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
        finished_at=terminated.get("finishedAt"),
        termination=Termination.parse(terminated.get("message")),
        **_waiting(status),
    )


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


def set_condition(
    conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str, now: str
) -> list[dict[str, Any]]:
    """A new list with condition `type_` set; its lastTransitionTime changes only with its status."""
    out, found = [], False
    for condition in conditions:
        if condition.get("type") == type_:
            found = True
            changed = condition.get("status") != status
            condition = {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now if changed else condition.get("lastTransitionTime", now),
            }
        out.append(condition)
    if not found:
        out.append(
            {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}
        )
    return out


def condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def clear_condition(
    conditions: list[dict[str, Any]], type_: str, reason: str, message: str, now: str
) -> list[dict[str, Any]]:
    """Set `type_` to False, but only if it exists (absent conditions stay absent)."""
    if condition(conditions, type_) is None:
        return conditions
    return set_condition(conditions, type_, "False", reason, message, now)


METRIC_NOT_FINITE = "MetricNotFinite"


def status_metrics(metrics: Any) -> tuple[dict[str, float], list[str]]:
    """The numeric metrics a status can hold, and the keys of those it cannot: JSON has no inf or NaN (a
    PSNR of an exact reproduction is inf), and the API server refuses a status carrying one, so it would
    never be written again. The headline keeps them as text (`psnr: inf`)."""
    if not isinstance(metrics, dict):
        return {}, []
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    finite = {k: v for k, v in numbers.items() if math.isfinite(v)}
    return finite, [k for k in numbers if k not in finite]


def headline(metrics: dict[str, Any]) -> str | None:
    """The first metric as `key: value`, for kubectl get's printer column."""
    for key, value in metrics.items():
        return f"{key}: {value:g}" if isinstance(value, int | float) else f"{key}: {value}"
    return None
