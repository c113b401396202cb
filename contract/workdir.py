"""The files a run leaves in its work dir, as mmengine lays them out, and how a reader finds them.

The trainer writes them; `torchyard slurm status` and the operator's Slurm mode read them (on the pod path
the same facts travel in rank 0's termination message instead).

    last_checkpoint   the absolute path of the newest checkpoint (a pointer file)
    best_checkpoint   the absolute path of the best one by `save_best`
    scalars.jsonl     one JSON object per logged step: losses, lr, and each validation's metrics, each with
                      its wall-clock `timestamp` (UTC, ISO 8601)
    metrics.json      torchyard-test's result: {"checkpoint": ..., "metrics": {...}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LAST_POINTER = "last_checkpoint"
BEST_POINTER = "best_checkpoint"
POINTERS = {"latest": LAST_POINTER, "best": BEST_POINTER}  # spec.fromTrainJob.checkpoint -> pointer file
SCALARS = "scalars.jsonl"
TEST_RESULT = "metrics.json"
SCALAR_KEYS = ("mode", "epoch", "iter", "timestamp")  # the fields of a scalars.jsonl row that are not values


def read_pointer(work_dir: str | Path, which: str) -> str | None:
    """The checkpoint a pointer file names ("latest" or "best"), if there is one."""
    try:
        return (Path(work_dir) / POINTERS[which]).read_text().strip() or None
    except OSError:
        return None


def last_val_metrics(work_dir: str | Path) -> dict[str, Any]:
    """The last validation metrics in scalars.jsonl (empty when there are none)."""
    try:
        lines = (Path(work_dir) / SCALARS).read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(row, dict) and row.get("mode") == "val":
            return {k: v for k, v in row.items() if k not in SCALAR_KEYS}
    return {}


def read_test_result(work_dir: str | Path) -> dict[str, Any] | None:
    """torchyard-test's metrics.json, or None when it is missing or unreadable."""
    try:
        result = json.loads((Path(work_dir) / TEST_RESULT).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None
