"""spec.template: the user's pod fields, merged under the operator's (Kubeflow's pod template, checked here).

The operator owns what makes the gang a gang: each pod's name, hostname and subdomain, its restart policy,
the trainer container's name, image, command and resources, the rank environment (MASTER_ADDR, NODE_RANK,
PET_*, ...) and the work-dir and /dev/shm mounts. Fields the spec already has (serviceAccountName,
nodeSelector, tolerations, ...) are set there, where the admission policy checks them. Everything else of a
PodSpec passes through: environment, extra volumes and mounts, sidecars and init containers, the pod's and
the container's securityContext (replacing the operator's uid 1000 defaults: `{}` lets OpenShift assign a
uid, `{runAsUser: 0}` runs an image as root), hostNetwork, dnsPolicy, runtimeClassName, and so on.

    template:
      metadata: {labels: {team: vision}, annotations: {sidecar.istio.io/inject: "false"}}
      spec:
        containers:
          - name: trainer                     # the trainer container: env, envFrom, volumeMounts, ...
            env: [{name: HF_HOME, value: /data/hf}]
            volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
          - {name: log-shipper, image: fluent/fluent-bit:3.1}       # any other container: a sidecar
        volumes: [{name: data, persistentVolumeClaim: {claimName: datasets}}]
"""

from __future__ import annotations

import difflib
from typing import Any

MAIN_CONTAINER = "trainer"  # the name a template gives the trainer container; the pod's is the job's kind
# The rank environment every node gets from the operator (operator/kube/render.py), and its PET_ twins.
RANK_ENV = ("MASTER_ADDR", "MASTER_PORT", "NNODES", "NODE_RANK", "NPROC_PER_NODE")
RESERVED_VOLUMES = ("work-dir", "dshm", "train-work-dir")
RESERVED_LABEL_PREFIXES = ("torchyard.dev/", "kueue.x-k8s.io/")
# PodSpec fields (Kubernetes 1.36) the operator sets itself, and where the user sets them instead.
OWNED_POD_FIELDS = {
    "hostname": "the operator names each pod's host <job>-node-<rank>",
    "subdomain": "the operator's headless Service is the subdomain",
    "restartPolicy": "restarts are whole-gang, by the operator (spec.restartPolicy)",
    "nodeName": "the scheduler places the pods; use spec.nodeSelector or spec.affinity",
    "serviceAccountName": "use spec.serviceAccountName",
    "serviceAccount": "use spec.serviceAccountName",
    "automountServiceAccountToken": "the token is mounted exactly when spec.serviceAccountName is set",
    "nodeSelector": "use spec.nodeSelector",
    "tolerations": "use spec.tolerations",
    "affinity": "use spec.affinity",
    "priorityClassName": "use spec.priorityClassName",
    "schedulerName": "use spec.schedulerName",
    "imagePullSecrets": "use spec.imagePullSecrets",
    "priority": "the API server sets it from spec.priorityClassName",
}
PASSED_POD_FIELDS = (
    "activeDeadlineSeconds", "containers", "dnsConfig", "dnsPolicy", "enableServiceLinks",
    "ephemeralContainers", "hostAliases", "hostIPC", "hostNetwork", "hostPID", "hostUsers", "initContainers",
    "os", "overhead", "preemptionPolicy", "readinessGates", "resourceClaims", "resources", "runtimeClassName",
    "schedulingGates", "securityContext", "setHostnameAsFQDN", "shareProcessNamespace",
    "terminationGracePeriodSeconds", "topologySpreadConstraints", "volumes", "hostnameOverride",
)  # fmt: skip
OWNED_CONTAINER_FIELDS = {
    "image": "use spec.image",
    "command": "use spec.command (or spec.config)",
    "args": "use spec.command (or spec.config and spec.cfgOptions)",
    "resources": "use spec.resources and spec.gpusPerNode",
    "terminationMessagePath": "rank 0's termination message is the operator's channel",
    "terminationMessagePolicy": "rank 0's termination message is the operator's channel",
}


class TemplateProblem(ValueError):
    """A template field the operator cannot take: `path` (relative to spec.template) and why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def check_metadata_keys(keys: list[str]) -> None:
    for key in keys:
        if key.startswith(RESERVED_LABEL_PREFIXES):
            raise TemplateProblem(key, "is the operator's (it labels the gang and its Kueue group); choose a "
                                  "key outside torchyard.dev/ and kueue.x-k8s.io/")  # fmt: skip


def check_pod_spec(spec: dict[str, Any]) -> None:
    """TemplateProblem for the first field of `spec` (a PodSpec) the operator owns or does not know."""
    for key in spec:
        if key in OWNED_POD_FIELDS:
            raise TemplateProblem(key, f"is set by the operator: {OWNED_POD_FIELDS[key]}")
        if key not in PASSED_POD_FIELDS:
            near = difflib.get_close_matches(key, PASSED_POD_FIELDS, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise TemplateProblem(key, f"is not a PodSpec field{hint}")
    for key in ("containers", "initContainers", "volumes"):
        items = spec.get(key, [])
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise TemplateProblem(key, "must be a list of objects, as in a PodSpec")
    for i, container in enumerate(spec.get("containers", [])):
        if container.get("name") == MAIN_CONTAINER:
            _check_main(container, f"containers.{i}")
        elif not container.get("name") or not container.get("image"):
            raise TemplateProblem(f"containers.{i}", f"a sidecar needs a name and an image (the container "
                                  f"named {MAIN_CONTAINER!r} is the trainer's)")  # fmt: skip
    names = [c.get("name") for c in spec.get("containers", []) + spec.get("initContainers", [])]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TemplateProblem("containers", f"container name {duplicates[0]!r} is used twice")
    for i, volume in enumerate(spec.get("volumes", [])):
        if volume.get("name") in RESERVED_VOLUMES:
            raise TemplateProblem(f"volumes.{i}.name", f"{volume['name']!r} is the operator's; rename it")


def _check_main(container: dict[str, Any], where: str) -> None:
    for key in container:
        if key in OWNED_CONTAINER_FIELDS:
            raise TemplateProblem(f"{where}.{key}", f"is set by the operator: {OWNED_CONTAINER_FIELDS[key]}")
    for j, variable in enumerate(container.get("env", [])):
        name = variable.get("name", "") if isinstance(variable, dict) else ""
        if name.removeprefix("PET_") in RANK_ENV or name.startswith("TORCHYARD_"):
            raise TemplateProblem(f"{where}.env.{j}.name", f"{name} is the operator's rank environment; "
                              "torchrun and the trainer read it from there")  # fmt: skip
    for j, mount in enumerate(container.get("volumeMounts", [])):
        if isinstance(mount, dict) and mount.get("name") in RESERVED_VOLUMES:
            raise TemplateProblem(f"{where}.volumeMounts.{j}.name", f"{mount['name']!r} is the operator's")


def references(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, what) for every claim and Secret the pods of a template's `spec` would use, for the
    admission policy's and the operator's checks (operator/kube/policy.py)."""
    found = []
    for i, volume in enumerate(spec.get("volumes", [])):
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            found.append((f"spec.template.spec.volumes[{i}]", f"PersistentVolumeClaim {claim}"))
        secret = (volume.get("secret") or {}).get("secretName")
        if secret:
            found.append((f"spec.template.spec.volumes[{i}]", f"Secret {secret}"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name"):
                found.append((f"spec.template.spec.volumes[{i}]", f"Secret {source['secret']['name']}"))
    for key in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(key, [])):
            where = f"spec.template.spec.{key}[{i}]"
            for variable in container.get("env", []):
                ref = ((variable.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                if ref:
                    found.append((f"{where}.env", f"Secret {ref}"))
            for source in container.get("envFrom", []):
                ref = (source.get("secretRef") or {}).get("name")
                if ref:
                    found.append((f"{where}.envFrom", f"Secret {ref}"))
    return found
