"""What the kubelet-node tests share: the cluster folder, and kubectl, helm and waits against it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO / ".cluster-kubelet"
KUBECONFIG = CLUSTER_DIR / "admin.kubeconfig"
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
HELM = REPO / ".tools" / "bin" / "helm"
RELEASE_NAMESPACE = "torchyard-system"
OPERATOR_PODS = "app.kubernetes.io/name=torchyard,app.kubernetes.io/component!=helm-test"


def run(*argv: str | Path, timeout: float = 900, **env: str) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})  # fmt: skip
    command = " ".join(map(str, argv))
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def kubectl(*args: str, input: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
    done = subprocess.run([str(KUBECTL), *args], input=input, capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def helm(*args: str | Path, timeout: float = 600) -> str:
    return run(HELM, *args, "-n", RELEASE_NAMESPACE, timeout=timeout, KUBECONFIG=str(KUBECONFIG))


def get(kind: str, name: str, namespace: str = "default") -> dict:
    return json.loads(kubectl("-n", namespace, "get", kind, name, "-o", "json"))


def operator_pods() -> list[dict]:
    """The operator's pods that are not on their way out."""
    pods = json.loads(kubectl("-n", RELEASE_NAMESPACE, "get", "pods", "-l", OPERATOR_PODS, "-o", "json"))
    return [pod for pod in pods["items"] if not pod["metadata"].get("deletionTimestamp")]


def wait_for(what: str, check, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_phase(kind: str, name: str) -> str:
    return get(kind, name).get("status", {}).get("phase", "")


def ended(kind: str, name: str, timeout: float = 600) -> dict:
    wait_for(f"{kind} {name} to end", lambda: job_phase(kind, name) in ("Succeeded", "Failed"), timeout)
    job = get(kind, name)
    assert job["status"]["phase"] == "Succeeded", json.dumps(job["status"], indent=1)
    return job
