"""Kubernetes rendering (pure): a job in, a headless Service and one Pod per node out, as plain dicts.

Pod `<job>-node-<rank>` has hostname `<job>-node-<rank>` and subdomain `<job>`, the headless Service's
name, so every pod reaches node 0 at `<job>-node-0.<job>` (published before readiness). Each pod runs
torchrun with its own node rank; restartPolicy is Never because restarts are whole-job, by the operator.

    manifests = render_k8s(job)               # [Service, Pod node 0, Pod node 1, ...]
"""

from __future__ import annotations

import copy
from typing import Any

from torchyard.contract.ports import DEFAULT_MASTER_PORT
from torchyard.operator.api.spec import GPU_RESOURCE, NODE_INFIX, Job, PodTemplate, TrainJob
from torchyard.operator.api.template import MAIN_CONTAINER
from torchyard.operator.errors import RenderError
from torchyard.operator.launch.command import (
    check_single_run,
    check_train_job,
    node_program,
    torchrun_options,
)

LABEL_JOB = "torchyard.dev/job-name"
LABEL_RANK = "torchyard.dev/node-rank"
LABEL_KIND = "torchyard.dev/kind"
LABEL_ATTEMPT = "torchyard.dev/attempt"  # the job's `restarts` when the pod was created
# Kueue plain-pod groups (kueue.sigs.k8s.io/docs/tasks/run/plain_pods): every pod of the group carries the
# queue and group labels and the total-count annotation; Kueue admits the group as one Workload. The group
# is the job: pods the operator recreates on a restart rejoin it as Kueue's documented replacement pods.
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP = "kueue.x-k8s.io/pod-group-name"
KUEUE_TOTAL = "kueue.x-k8s.io/pod-group-total-count"
RUN_AS = 1000  # the non-root user and group the container runs as; the image must allow it
WORK_VOLUME, SHM_VOLUME, TRAIN_VOLUME = "work-dir", "dshm", "train-work-dir"


def pod_name(job: Job, rank: int) -> str:
    return f"{job.metadata.name}{NODE_INFIX}{rank}"


def master_addr(job: Job) -> str:
    """DNS name of node 0 behind the headless Service (resolves within the job's namespace)."""
    return f"{pod_name(job, 0)}.{job.metadata.name}"


def master_port(job: Job) -> int:
    return job.spec.master_port or DEFAULT_MASTER_PORT


def selector_labels(job: Job) -> dict[str, str]:
    return {LABEL_JOB: job.metadata.name, LABEL_KIND: job.kind.lower()}


def render_k8s(
    job: Job, train_job: TrainJob | None = None, ranks: list[int] | None = None
) -> list[dict[str, Any]]:
    """The Service and the Pods of one attempt of `job` (of `ranks` only, if given); `train_job` is needed
    for TestJob.fromTrainJob."""
    check_single_run(job, "Kubernetes")
    train_mount = _train_work_dir_mount(job, train_job)
    chosen = range(job.spec.nodes) if ranks is None else ranks
    return [render_service(job)] + [render_pod(job, rank, train_mount) for rank in chosen]


def render_service(job: Job) -> dict[str, Any]:
    port = master_port(job)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, job.metadata.name, selector_labels(job)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # rank 0 must resolve before any pod is ready
            "selector": selector_labels(job),
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def render_pod(job: Job, rank: int, train_mount: dict | None = None) -> dict[str, Any]:
    """Pod for node `rank`; `train_mount` (claim, subPath, mountPath) is a TestJob's TrainJob work dir."""
    spec = job.spec
    labels = {**job.metadata.labels, **selector_labels(job), LABEL_RANK: str(rank)}
    annotations: dict[str, str] = {}
    if spec.queue_name:
        labels |= {KUEUE_QUEUE: spec.queue_name, KUEUE_GROUP: job.metadata.name}
        annotations[KUEUE_TOTAL] = str(spec.nodes)
    command = [
        "torchrun",
        *torchrun_options(spec.nodes, rank, spec.nproc_per_node, master_addr(job), master_port(job)),
        *node_program(job, spec.work_dir.mount_path, train_mount and train_mount["mountPath"]),
    ]
    pod_spec: dict[str, Any] = {
        "hostname": pod_name(job, rank),
        "subdomain": job.metadata.name,
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": job.kind.lower(),
                "image": spec.image,
                # Kubernetes expands $(VAR) in commands; $$ keeps every user string literal.
                "command": [arg.replace("$", "$$") for arg in command],
                "env": _env(job, rank),
                "ports": [{"name": "rendezvous", "containerPort": master_port(job), "protocol": "TCP"}],
                "resources": _resources(job),
                "volumeMounts": _volume_mounts(job, train_mount),
                # Never FallbackToLogsOnError: the operator copies the message into the job's status and
                # events, which readers of trainjobs see without the right to read pods/log.
                "terminationMessagePolicy": "File",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "volumes": _volumes(job, train_mount),
    }
    optional = {
        "nodeSelector": dict(spec.node_selector) or None,
        "tolerations": list(spec.tolerations) or None,
        "affinity": spec.affinity,
        "imagePullSecrets": [{"name": name} for name in spec.image_pull_secrets] or None,
        "serviceAccountName": spec.service_account_name,
        # The trainer never calls the API: no token in its pods unless the spec names an account for them.
        "automountServiceAccountToken": None if spec.service_account_name else False,
        "priorityClassName": spec.priority_class_name,
        "schedulerName": spec.scheduler_name,
    }
    pod_spec |= {key: value for key, value in optional.items() if value is not None}
    metadata = _metadata(job, pod_name(job, rank), labels)
    if annotations:
        metadata["annotations"] = annotations
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
    if spec.template is not None:
        _merge_template(pod, spec.template)
    return pod


def _merge_template(pod: dict[str, Any], template: PodTemplate) -> None:
    """The user's pod fields under the operator's (operator/api/template.py checked them): labels and
    annotations beside the operator's, the `trainer` container's fields into the trainer container (lists
    appended, the rest replacing the operator's defaults), other containers, initContainers and volumes
    added, everything else set."""
    metadata, spec = pod["metadata"], copy.deepcopy(template.spec)
    metadata["labels"] = {**template.metadata.labels, **metadata["labels"]}
    if template.metadata.annotations:
        metadata["annotations"] = {**template.metadata.annotations, **metadata.get("annotations", {})}
    trainer = pod["spec"]["containers"][0]
    for container in spec.pop("containers", []):
        if container.get("name") != MAIN_CONTAINER:
            pod["spec"]["containers"].append(container)
            continue
        for key, value in container.items():
            if key in ("env", "envFrom", "volumeMounts", "ports", "volumeDevices"):
                trainer[key] = [*trainer.get(key, []), *value]
            elif key != "name":
                trainer[key] = value
    pod["spec"]["volumes"] += spec.pop("volumes", [])
    pod["spec"] |= spec


def _train_work_dir_mount(job: Job, train_job: TrainJob | None) -> dict | None:
    train_job = check_train_job(job, train_job)
    if train_job is None:
        return None
    name = train_job.metadata.name
    train_dir = train_job.spec.work_dir
    if train_dir.claim_name is None:
        raise RenderError(
            f"spec.fromTrainJob: TrainJob {name!r} has no workDir.claimName, so its "
            "checkpoints were lost with its pods; give it a PersistentVolumeClaim"
        )
    if train_dir.mount_path == job.spec.work_dir.mount_path:
        raise RenderError(
            f"spec.workDir.mountPath: {train_dir.mount_path} is where TrainJob {name!r}'s work "
            "dir is mounted (its checkpoint pointers hold paths under it); choose another path"
        )
    return {
        "claimName": train_dir.claim_name,
        "subPath": train_dir.sub_path or name,
        "mountPath": train_dir.mount_path,
    }


def _metadata(job: Job, name: str, labels: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if job.metadata.namespace:
        metadata["namespace"] = job.metadata.namespace
    return metadata


def _env(job: Job, rank: int) -> list[dict[str, str]]:
    values = {
        "MASTER_ADDR": master_addr(job),
        "MASTER_PORT": str(master_port(job)),
        "NNODES": str(job.spec.nodes),
        "NODE_RANK": str(rank),
        "NPROC_PER_NODE": str(job.spec.nproc_per_node),
    }
    env = [{"name": name, "value": value} for name, value in values.items()]
    env += [{"name": f"PET_{name}", "value": value} for name, value in values.items()]  # Kubeflow images
    return [*env, {"name": "PYTHONUNBUFFERED", "value": "1"}]


def _resources(job: Job) -> dict[str, dict[str, str]]:
    resources = {"requests": dict(job.spec.resources.requests), "limits": dict(job.spec.resources.limits)}
    if job.spec.gpus_per_node:
        resources["limits"][GPU_RESOURCE] = str(job.spec.gpus_per_node)
    return {key: value for key, value in resources.items() if value}


def _volume_mounts(job: Job, train_mount: dict | None) -> list[dict[str, Any]]:
    work_dir = job.spec.work_dir
    mount: dict[str, Any] = {"name": WORK_VOLUME, "mountPath": work_dir.mount_path}
    if work_dir.claim_name:
        mount["subPath"] = work_dir.sub_path or job.metadata.name
    mounts = [mount, {"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    if train_mount:
        mounts.append(
            {
                "name": _train_volume(job, train_mount),
                "mountPath": train_mount["mountPath"],
                "subPath": train_mount["subPath"],
                "readOnly": True,
            }
        )
    return mounts


def _train_volume(job: Job, train_mount: dict) -> str:
    """The volume that holds the TrainJob's work dir: the job's own when both are on one claim. A kubelet
    mounts a claim once per pod, so a second, read-only volume of the same claim would make the job's own
    work dir read-only too; the train work dir is then read-only by its mount alone."""
    return WORK_VOLUME if train_mount["claimName"] == job.spec.work_dir.claim_name else TRAIN_VOLUME


def _volumes(job: Job, train_mount: dict | None) -> list[dict[str, Any]]:
    claim = job.spec.work_dir.claim_name
    work = {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
    volumes = [{"name": WORK_VOLUME, **work}, {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}]
    if train_mount and _train_volume(job, train_mount) == TRAIN_VOLUME:
        volumes.append(
            {
                "name": TRAIN_VOLUME,
                "persistentVolumeClaim": {"claimName": train_mount["claimName"], "readOnly": True},
            }
        )
    return volumes
