"""A pod as a local process (pure): the argv, env and folders `torchyard dev-cluster` runs a pod with.

- Kubernetes' $(VAR) expansion and downward-API env (`fieldRef`);
- the headless-Service DNS names `<host>.<subdomain>[.<ns>[.svc...]]` resolve to 127.0.0.1 (rewritten in
  args and env), and each job's rendezvous port maps to a free local port, so jobs never collide;
- volumes: a PersistentVolumeClaim is the folder of its hostPath/local volume (else `<volumes>/<claim>`),
  plus subPath; an emptyDir or the ServiceAccount token volume a folder of the pod's; their mountPaths are
  substituted in args and env (/dev/shm stays as is).

    local = local_pod(pod, volumes, state, ports, claims)   # LocalPod(argv, env, directories)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchyard.operator.launch.local import LOCALHOST, free_port


@dataclass
class LocalPod:
    """What one pod runs here (pure to compute: see `local_pod`)."""

    argv: list[str]
    env: dict[str, str]
    directories: list[Path] = field(default_factory=list)


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in commands and env; $$ is a literal $."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


def field_value(pod: dict[str, Any], path: str) -> str:
    """The downward API's value of `path` (metadata.name, metadata.namespace, spec.nodeName, ...)."""
    value: Any = pod
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return str(value)


def in_cluster_kubeconfig(server: str, folder: Path) -> dict[str, Any]:
    """A kubeconfig with the pod's own token and CA files (re-read by clients that honour tokenFile)."""
    cluster = {"server": server, "certificate-authority": str(folder / "ca.crt")}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": cluster}],
        "users": [{"name": "pod", "user": {"tokenFile": str(folder / "token")}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "pod"}}],
        "current-context": "in-cluster",
    }


def local_pod(
    pod: dict[str, Any],
    volumes: Path,
    state: Path,
    ports: dict[tuple, int],
    claims: dict[str, Path] | None = None,
) -> LocalPod:
    """The argv, env and folders of `pod` here; `ports` maps (namespace, subdomain, port) -> a local port,
    `claims` a PersistentVolumeClaim to the folder of its volume (else `volumes/<claimName>`)."""
    meta, spec = pod["metadata"], pod["spec"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    container = spec["containers"][0]
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        field_ref = (item.get("valueFrom") or {}).get("fieldRef")
        value = field_value(pod, field_ref["fieldPath"]) if field_ref else str(item.get("value", ""))
        env[item["name"]] = expand(value, env)
    mounts: list[tuple[str, Path]] = []
    directories = []
    volume_sources = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volume_sources.get(mount["name"], {})
        if mount["mountPath"] == "/dev/shm":
            continue
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            local = (claims or {}).get(claim) or volumes / claim
        elif "projected" in volume:  # the ServiceAccount token volume: written by Runner._project
            local = state / namespace / name / mount["name"]
        else:
            local = state / namespace / name / mount["name"]
        local = local / mount["subPath"] if mount.get("subPath") else local
        directories.append(local)
        mounts.append((mount["mountPath"].rstrip("/"), local.resolve()))
    mounts.sort(key=lambda item: -len(item[0]))  # the longest mountPath wins
    subdomain = spec.get("subdomain")
    port_map = {}
    for port in container.get("ports") or []:
        key = (namespace, subdomain or name, port["containerPort"])
        port_map[str(port["containerPort"])] = str(ports.setdefault(key, free_port()))

    def rewrite(value: str, is_port_var: bool = False) -> str:
        if subdomain:
            value = re.sub(
                rf"\b[a-z0-9-]+\.{re.escape(subdomain)}(\.{re.escape(namespace)}(\.svc(\.[a-z.]+)?)?)?\b",
                LOCALHOST,
                value,
            )
        for path, local in mounts:
            value = re.sub(rf"(?<![\w/]){re.escape(path)}(?=/|$|\b)", str(local), value)
        if is_port_var and value in port_map:
            return port_map[value]
        for port, local_port in port_map.items():
            value = re.sub(rf"(--master[-_]port=){port}\b", rf"\g<1>{local_port}", value)
        return value

    command = [*(container.get("command") or []), *(container.get("args") or [])]
    argv = [rewrite(expand(arg, env)) for arg in command]
    env = {key: rewrite(value, key.endswith("MASTER_PORT")) for key, value in env.items()}
    return LocalPod(argv, env, directories)
