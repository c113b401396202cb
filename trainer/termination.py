"""The run's last word for whoever started it: a small JSON summary in a termination-message file.

Kubernetes reads ``/dev/termination-log`` (up to 4 KiB) into the pod's status, where the operator finds the
final metrics, the last checkpoint and whether a retry can help. ``TORCHYARD_TERMINATION_LOG`` names
another file (the local process runner gives each "pod" its own). Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

DEFAULT_PATH = "/dev/termination-log"
MAX_BYTES = 4096
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")


def termination_log_path() -> Path | None:
    configured = os.environ.get("TORCHYARD_TERMINATION_LOG")
    if configured:
        return Path(configured)
    return Path(DEFAULT_PATH) if Path(DEFAULT_PATH).exists() else None


def is_rank_zero() -> bool:
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def encode(summary: dict) -> str:
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


def write_termination_message(summary: dict) -> None:
    path = termination_log_path()
    if path is None or not is_rank_zero():
        return
    # A read-only or missing termination log must never turn a finished run into a failed one.
    with contextlib.suppress(OSError):
        path.write_text(encode(summary))
