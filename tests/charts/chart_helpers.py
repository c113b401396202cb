"""Helpers of the chart tests: a real helm v3 (fetched once by scripts/fetch-tools.sh, as `make tools`
does), running it, and picking manifests out of `helm template`'s output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "torchyard"
TOOLS = Path(os.environ.get("TORCHYARD_TOOLS", REPO / ".tools"))
RELEASE, NAMESPACE = "ty", "torchyard-system"
DEFAULT_MODE = "namespaces"  # values.yaml's watch.mode, serving watch.namespaces: [default]

# Values for each watch mode and the optional parts; every case is linted, rendered and validated.
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "cluster-wide": {"watch": {"mode": "clusterWide"}},
    "release-namespace": {"watch": {"mode": "releaseNamespace"}},
    "namespace-list": {"watch": {"mode": "namespaces", "namespaces": ["team-a", "team-b"]}},
    "ha-cluster-wide": {"replicaCount": 3, "watch": {"mode": "clusterWide"}},
    "no-job-policy": {"jobPolicy": {"enabled": False}},
    "ha-namespace-list": {"replicaCount": 2, "watch": {"mode": "namespaces", "namespaces": ["team-a"]}},
    "everything": {
        "replicaCount": 2,
        "peering": {"enabled": True, "name": "ty", "priority": 7},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "folder": "torchyard"},
        "operator": {
            "jsonLogs": False,
            "verbose": False,
            "extraArgs": ["--verbose"],
            "extraEnv": [{"name": "A", "value": "1"}],
        },
        "imagePullSecrets": ["regcred"],
        "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "x@y.iam"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "ops", "operator": "Exists"}],
        "priorityClassName": "system-cluster-critical",
    },
}


def ensure_tools() -> Path:
    """helm and kubectl in TOOLS/bin, fetched when missing (the same script as `make tools`)."""
    helm = TOOLS / "bin" / "helm"
    subprocess.run(
        [str(REPO / "scripts" / "fetch-tools.sh"), str(TOOLS)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=not helm.exists(),
    )
    assert helm.exists(), f"scripts/fetch-tools.sh did not produce {helm}"
    return helm


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/torchyard-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/torchyard-helm/config",
        "HELM_DATA_HOME": "/tmp/torchyard-helm/data",
    }
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def values_file(tmp: Path, values: dict[str, Any]) -> Path:
    path = tmp / f"values-{len(list(tmp.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def find(
    manifests: list[dict], kind: str, name: str | None = None, namespace: str | None = None
) -> list[dict]:
    return [
        m
        for m in manifests
        if m["kind"] == kind
        and (name is None or m["metadata"]["name"] == name)
        and (namespace is None or m["metadata"].get("namespace") == namespace)
    ]


def one(manifests: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(manifests, kind, name, namespace)
    assert len(found) == 1, (
        f"expected one {kind} {name or ''} in {namespace or 'any namespace'}, got {len(found)}"
    )
    return found[0]


def served(values: dict[str, Any]) -> list[str]:
    """The namespaces the operator serves with these values; [] for cluster-wide."""
    watch = values.get("watch", {})
    mode = watch.get("mode", DEFAULT_MODE)
    if mode == "clusterWide":
        return []
    return [NAMESPACE] if mode == "releaseNamespace" else list(watch.get("namespaces", ["default"]))
