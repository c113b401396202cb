"""The logs of a failed attempt's pods, kept after the gang restart deletes them (pure).

A restart deletes every pod of the attempt (the next one reuses the names), and with them what
`kubectl logs` could show of the crash. Before the delete the operator reads the tail of each failed pod's
trainer container and keeps it in one ConfigMap per job, `<job>-previous-logs`, replaced at every restart
and owned by the job (deleted with it):

    kubectl get configmap digits-mlp-previous-logs -o jsonpath='{.data.node-1\\.log}'
    torchyard logs digits-mlp --previous --node 1

Readers of ConfigMaps in the namespace can read these, as readers of pods/log could read the pods' logs
(Kubernetes' view, edit and admin roles grant both).
"""

from __future__ import annotations

from typing import Any

from torchyard.operator.kube.render import LABEL_ATTEMPT, LABEL_JOB, LABEL_KIND

SUFFIX = "-previous-logs"
TAIL_LINES = 1000
# A ConfigMap holds at most 1 MiB; the tails share what is left after the object's own fields.
TOTAL_BYTES = 900 * 1024
MAX_BYTES_PER_POD = 256 * 1024
ANNOTATION_PREFIX = "torchyard.dev/"


def configmap_name(job_name: str) -> str:
    return f"{job_name}{SUFFIX}"


def bytes_per_pod(pods: int) -> int:
    """Each pod's share of the ConfigMap, so that the tails of every failed pod of a large gang fit."""
    return min(MAX_BYTES_PER_POD, TOTAL_BYTES // max(pods, 1))


def data_key(rank: int) -> str:
    return f"node-{rank}.log"


def configmap(namespace: str, job_name: str, kind: str, attempt: int, why: str,
              tails: dict[int, str]) -> dict[str, Any]:
    """The ConfigMap keeping `tails` (rank -> the end of its log) of attempt `attempt` (0-based, as the
    pods' attempt label) that ended because `why`."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(job_name),
            "namespace": namespace,
            "labels": {LABEL_JOB: job_name, LABEL_KIND: kind},
            "annotations": {LABEL_ATTEMPT: str(attempt), f"{ANNOTATION_PREFIX}ended-because": why},
        },
        "data": {data_key(rank): text for rank, text in sorted(tails.items())},
    }


def clip(text: str, limit: int) -> str:
    """The end of `text` within `limit` bytes (UTF-8), from a line's start, marked as cut when it was."""
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[-limit:].decode(errors="ignore")
    return "[... earlier lines left out ...]\n" + kept[kept.find("\n") + 1:]
