"""Rank 0's last word: a small JSON summary in a termination-message file, and how its readers judge it.

Kubernetes copies ``/dev/termination-log`` (up to 4 KiB) into the pod's status, where the operator finds the
final metrics, the last checkpoint and whether a retry can help; `torchyard run` and the sbatch scripts
point ``TORCHYARD_TERMINATION_LOG`` at a file of their own and read it the same way.

Only this JSON object is read. Anything else in that file (a log tail a kubelet put there under
FallbackToLogsOnError, a script's stray output) is ignored: the operator copies the message into the job's
status and events, and those must never show what only the right to read a pod's log may see.

    {"status": "failed", "exitCode": 3, "reason": "ConfigError", "message": "...", "retryable": false,
     "metrics": {...}, "epoch": 4, "iter": 400, "lastCheckpoint": "...", "bestCheckpoint": "..."}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from torchyard.contract import exitcodes

DEFAULT_PATH = "/dev/termination-log"
PATH_VARIABLE = "TORCHYARD_TERMINATION_LOG"
MAX_BYTES = 4096
_HEADER = ("status", "exitCode", "reason", "message", "retryable")


def make_summary(
    status: str, exit_code: int, reason: str, message: str, retryable: bool, **details: Any
) -> dict[str, Any]:
    """The message a run leaves: `status` is succeeded, failed or interrupted; `details` carries metrics,
    epoch, iter and the checkpoints."""
    header = dict(zip(_HEADER, (status, exit_code, reason, message, retryable), strict=True))
    return {**header, **details}


def encode(summary: dict[str, Any]) -> str:
    """JSON within 4 KiB: metrics are dropped first, then the message is shortened."""
    text = json.dumps(summary, sort_keys=True)
    if len(text.encode()) <= MAX_BYTES:
        return text
    summary = {**summary, "metrics": {}, "metricsTruncated": True}
    text = json.dumps(summary, sort_keys=True)
    overflow = len(text.encode()) - MAX_BYTES
    if overflow > 0:
        message = summary.get("message", "")
        summary["message"] = message[: max(0, len(message) - overflow - 3)] + "..."
        text = json.dumps(summary, sort_keys=True)
    return text


@dataclass(frozen=True)
class Termination:
    """The trainer's termination message."""

    status: str | None = None  # succeeded | failed | interrupted
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    retryable: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)  # metrics, epoch, iter, checkpoints

    @classmethod
    def parse(cls, text: str | None) -> Termination | None:
        if not text or not text.strip():
            return None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return None
        code = data.get("exitCode")
        return cls(
            status=data.get("status"),
            exit_code=code if isinstance(code, int) else None,
            reason=str(data.get("reason") or ""),
            message=str(data.get("message") or ""),
            retryable=data.get("retryable") if isinstance(data.get("retryable"), bool) else None,
            details={key: value for key, value in data.items() if key not in _HEADER},
        )


def retryable(termination: Termination | None, exit_code: int | None = None) -> bool:
    """Whether a restart may help: the trainer's word when it left one; without it, only the usage and
    config exit codes (which the trainer alone uses, never torchrun) say no."""
    if termination is not None and termination.retryable is not None:
        return termination.retryable or termination.status == "succeeded"
    return exit_code not in exitcodes.NON_RETRYABLE
