"""Status conditions, Kubernetes style, and every reason either backend sets (pure).

Condition types and reasons are named constants so that users, alerts and tests match on them; a reason
says why in one CamelCase word, the condition's message says what to do. `set_condition` moves
lastTransitionTime only when the condition's status changes.

    conditions = set_condition(conditions, RUNNING, "True", ALL_NODES_RUNNING, "all 2 nodes run", now)
"""

from __future__ import annotations

import math
from typing import Any

# Condition types.
CREATED, RUNNING, RESTARTING = "Created", "Running", "Restarting"
SUCCEEDED, FAILED, SUSPENDED = "Succeeded", "Failed", "Suspended"

# Reasons both backends set.
COMPLETED = "Completed"
DEADLINE_EXCEEDED = "DeadlineExceeded"
INVALID_SPEC = "InvalidSpec"
NOT_ALLOWED = "NotAllowed"  # valid, but the operator's policy refuses a field (errors.NotAllowed)
WAITING_FOR_TRAIN_JOB = "WaitingForTrainJob"
TRAIN_JOB_FAILED = "TrainJobFailed"
JOB_SUSPENDED = "Suspended"
JOB_RESUMED = "Resumed"
METRIC_NOT_FINITE = "MetricNotFinite"  # an event: a metric left out of status.metrics

# Reasons of the pod backend.
PODS_CREATED = "PodsCreated"
CREATING_PODS = "CreatingPods"  # a large gang, created in batches; none of its ranks counts as lost yet
CHILD_CONFLICT = "ChildConflict"
CREATE_REFUSED = "CreateRefused"  # the API server refused a pod or the Service (403, 422, quota, admission)
PODS_STUCK_TERMINATING = "PodsStuckTerminating"
ALL_NODES_RUNNING = "AllNodesRunning"
NODES_STARTING = "NodesStarting"
POD_FAILED = "PodFailed"
POD_LOST = "PodLost"
POD_DISRUPTED = "PodDisrupted"  # evicted or preempted: restarted without spending backoffLimit
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
NON_RETRYABLE_ERROR = "NonRetryableError"
NOT_RESTARTED_BY_POLICY = "RestartPolicy"  # spec.restartPolicy ExitCode or Never keeps a failure final

# Reasons of the Slurm backend (a Slurm job state in torchyard's words).
SUBMITTED = "Submitted"  # sbatch accepted the job
WAITING_FOR_RESOURCES = "WaitingForResources"
QUEUED = "Queued"
UNSCHEDULABLE = "Unschedulable"
REQUEUED = "Requeued"
SLURM_RUNNING = "Running"
SLURM_FAILED = "Failed"
CANCELLED = "Cancelled"
TIME_LIMIT = "TimeLimit"
PREEMPTED = "Preempted"
NODE_FAILURE = "NodeFailure"
OUT_OF_MEMORY = "OutOfMemory"
SLURM_SUSPENDED = "Suspended"
UNKNOWN = "Unknown"


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
