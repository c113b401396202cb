"""The TrainJob and TestJob API: the one place where a field is declared, documented and validated.

The CRDs in crds/ (api/crds.py), the Kubernetes and Slurm renderers and `torchyard run` all follow
from these models. Python attributes are snake_case; YAML/JSON names are camelCase (`procs_per_node` is
`procsPerNode`). Every validation error names the field path, e.g. `spec.cfgOptions[1]`.

    job = load_job(yaml.safe_load(open("examples/trainjob.yaml")))   # TrainJob | TestJob, or SpecError
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from torchyard.contract.ports import DEFAULT_MASTER_PORT
from torchyard.operator.api import template
from torchyard.operator.api.quantity import QUANTITY_PATTERN, parse_quantity
from torchyard.operator.errors import SpecError
from torchyard.trainer.config import ConfigError, parse_cfg_options

GROUP = "torchyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
GPU_RESOURCE = "nvidia.com/gpu"
MAX_DNS_LABEL = 63
# Pod hostnames are `<job>-node-<rank>`; they and the Service name `<job>` must be DNS-1035 labels.
NODE_INFIX = "-node-"
# Upper bounds the API server enforces (they are in the CRD): one job must never render more than the shared
# operator can hold, and a typo like nodes: 100000 must fail at `kubectl apply`, not in the operator.
MAX_NODES = 4096
MAX_PROCS_PER_NODE = 256
MAX_GPUS_PER_NODE = 64
# Slurm's default MaxArraySize is 1001 (task ids 0-1000); a bigger sweep needs the site to raise it.
MAX_SWEEP_RUNS = 1000
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SLURM_TIME = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def field_error(path: str, message: str) -> PydanticCustomError:
    """An error for `path` (relative to the model raising it), for cross-field checks in model validators."""
    return PydanticCustomError("torchyard_field", "{message}", {"path": path, "message": message})


def _one_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must be a single line without control characters (newline, tab, NUL, ...)")
    return value


def _name_rule(pattern: re.Pattern[str], max_length: int, what: str) -> Callable[[str], str]:
    """A validator: a value must match `pattern` and be at most `max_length` long, else it must be `what`."""

    def check(value: str) -> str:
        if len(value) > max_length or not pattern.match(value):
            raise ValueError(f"{value!r} must be {what}")
        return value

    return check


_dns_label = _name_rule(
    _DNS_1035,
    MAX_DNS_LABEL,
    f"a DNS label: at most {MAX_DNS_LABEL} lowercase letters, digits and '-', starting with a letter and "
    "ending with a letter or digit (e.g. digits-mlp)",
)
_dns_subdomain = _name_rule(
    _DNS_1123,
    253,
    "a DNS subdomain name: lowercase letters, digits, '-' and '.', starting and ending with a letter or "
    "digit, at most 253 characters",
)
_label_value = _name_rule(
    _LABEL_VALUE,
    MAX_DNS_LABEL,
    f"a Kubernetes label value: at most {MAX_DNS_LABEL} letters, digits, '-', '_' and '.', starting and "
    "ending with a letter or digit",
)


def _quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a Kubernetes quantity; use e.g. 2, 500m, 4Gi")
    text = str(value)
    parse_quantity(text)
    return text


def slurm_time_seconds(value: str) -> int:
    """Seconds in a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    match = _SLURM_TIME.match(value)
    if not match:
        raise ValueError(
            f"{value!r} is not a Slurm time limit; use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM "
            "or D-HH:MM:SS, e.g. 01:00:00"
        )
    g = {key: int(val) if val else 0 for key, val in match.groupdict().items()}
    if match["d"] is not None:
        return ((g["d"] * 24 + g["dh"]) * 60 + g["dm"]) * 60 + g["ds"]
    if match["c"] is not None:
        return (g["a"] * 60 + g["b"]) * 60 + g["c"]
    return g["a"] * 60 + g["b"]


def _slurm_time(value: str) -> str:
    slurm_time_seconds(value)
    return value


Line = Annotated[str, AfterValidator(_one_line)]
NonEmptyLine = Annotated[str, Field(min_length=1), AfterValidator(_one_line)]
# The API server checks these patterns too (they go into the CRD); the validators give friendlier messages.
DnsLabel = Annotated[
    str, AfterValidator(_dns_label), Field(json_schema_extra={"pattern": _DNS_1035.pattern, "maxLength": 63})
]
DnsSubdomain = Annotated[
    str,
    AfterValidator(_dns_subdomain),
    Field(json_schema_extra={"pattern": _DNS_1123.pattern, "maxLength": 253}),
]
LabelValue = Annotated[
    str,
    AfterValidator(_label_value),
    Field(json_schema_extra={"pattern": _LABEL_VALUE.pattern, "maxLength": 63}),
]
SlurmName = Annotated[str, Field(pattern=_SLURM_NAME.pattern, max_length=200)]
Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]
FreeForm = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


def immutable(what: str) -> dict:
    """CRD extras that make the API server reject a change of this field once the job exists."""
    return {
        "x-kubernetes-validations": [
            {
                "rule": "self == oldSelf",
                "message": f"{what} cannot change while the job exists; delete the job and create it again",
            }
        ]
    }


class Model(BaseModel):
    """Base of every API model: camelCase names in YAML, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        serialize_by_alias=True,
        # Build each validator when first used, not at import: a CLI command needs only a few of them.
        defer_build=True,
    )

    def to_dict(self) -> dict:
        """The YAML/JSON form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(Model):
    """The part of Kubernetes object metadata a job file sets; the API server fills in the rest."""

    model_config = ConfigDict(extra="ignore")  # uid, resourceVersion, ... from the API server are fine

    name: DnsLabel = Field(
        description="Job name; also the Service name and the prefix of pod names "
        "`<name>-node-<rank>`, so its length is limited (see validation)."
    )
    namespace: DnsLabel | None = Field(None, description="Kubernetes namespace; the current one when unset.")
    labels: dict[str, Line] = Field(default_factory=dict, description="Labels, copied to every pod.")
    # Taken as they come: the operator reads none, and tools store multi-line values here
    # (kubectl apply's last-applied-configuration is the whole object as JSON).
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the job itself.")


class Resources(Model):
    """Per-node (per pod) compute resources, as in a Kubernetes container's `resources`."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="e.g. {cpu: '4', memory: 16Gi}; on Slurm cpu becomes --cpus-per-task and memory --mem.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="e.g. {memory: 16Gi}; GPUs come from gpusPerNode, not from here."
    )


class WorkDir(Model):
    """Where checkpoints and logs go; they survive restarts, so `resume: auto` continues the run."""

    claim_name: DnsSubdomain | None = Field(
        None,
        description="Kubernetes: the PersistentVolumeClaim holding "
        "work dirs. Unset: an emptyDir, lost when the pod goes.",
    )
    sub_path: NonEmptyLine | None = Field(
        None,
        description="Kubernetes: the folder inside the claim; defaults "
        "to the job name, so jobs sharing a claim never share checkpoints.",
    )
    mount_path: NonEmptyLine = Field(
        "/work_dir",
        pattern=r"^/",
        description="Kubernetes: where the work dir "
        "is mounted in the pod; the trainer gets it as --work-dir.",
    )
    path: NonEmptyLine | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._/+-]+$",
        description="Slurm and "
        "`torchyard run`: the work dir on the (shared) filesystem, relative to the "
        "directory you submit from; defaults to work_dirs/<job name>.",
    )


class TemplateMetadata(Model):
    """Labels and annotations for every pod of the job, beside the operator's own."""

    labels: dict[str, Line] = Field(default_factory=dict, description="Pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Pod annotations.")

    @field_validator("labels", "annotations")
    @classmethod
    def _not_the_operators(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            template.check_metadata_keys(list(value))
        except template.TemplateProblem as problem:
            raise field_error(problem.path, problem.message) from None
        return value


class PodTemplate(Model):
    """Kubernetes: pod fields merged under the operator's (operator/api/template.py says who owns what)."""

    metadata: TemplateMetadata = Field(
        default_factory=TemplateMetadata, description="Labels and annotations of every pod."
    )
    spec: FreeForm = Field(
        default_factory=dict,
        description="A PodSpec merged under the operator's: a container named trainer merges into the "
        "trainer's (env, envFrom, volumeMounts, securityContext, ...), other containers are sidecars; "
        "volumes and initContainers are added; securityContext replaces the uid 1000 default.",
    )

    @field_validator("spec")
    @classmethod
    def _pod_spec(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            template.check_pod_spec(value)
        except template.TemplateProblem as problem:
            raise field_error(problem.path, problem.message) from None
        return value


class SlurmContainer(Model):
    """Run each node's torchrun inside a container (pyxis/enroot `srun --container-image`)."""

    image: NonEmptyLine = Field(
        description="Container image for srun --container-image, e.g. "
        "nvcr.io#nvidia/pytorch:24.05-py3 or a .sqsh file."
    )
    mounts: list[NonEmptyLine] = Field(
        default_factory=list,
        description="Extra SRC:DST mounts "
        "(--container-mounts); the work dir is always mounted at its own path.",
    )


# A scalar of any JSON type; the CRD's structural schema has no union of types, so the API server keeps it
# as given and the model checks it.
def _sweep_value(value: Any) -> Any:
    if not isinstance(value, str | int | float | bool):
        raise ValueError(
            f"{value!r} is not a single value: a sweep value is a string, number or true/false; "
            "write a list as a string, e.g. '[8, 16]'"
        )
    return value


SweepValue = Annotated[
    Any, BeforeValidator(_sweep_value), WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})
]


def option_text(key: str, value: SweepValue) -> str:
    """One `--cfg-options` item for a sweep value, written as on the command line (True, 0.05, text)."""
    return f"{key}={value}"


class SlurmSweep(Model):
    """A sweep over cfgOptions as one Slurm job array: each point is its own run (array task), with its
    own work dir `<work dir>/<index>`, checkpoints, restarts and requeues; the points' options come after
    spec.cfgOptions, so they win."""

    grid: dict[str, Annotated[list[SweepValue], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Every combination of these values, e.g. {optim_wrapper.optimizer.lr: [0.01, 0.1], "
        "model.channels: [8, 16]} is 4 runs; the last key changes fastest.",
    )
    points: list[Annotated[list[NonEmptyLine], Field(min_length=1)]] = Field(
        default_factory=list,
        description="Runs given one by one, each a list of KEY=VALUE cfgOptions; after the grid's runs.",
    )
    max_parallel: int | None = Field(
        None, ge=1, description="At most this many runs at once (--array=...%N); all that fit when unset."
    )

    def runs(self) -> list[list[str]]:
        """Each run's cfgOptions, in array task order: the grid's combinations, then the points."""
        keys = list(self.grid)
        combinations = itertools.product(*(self.grid[key] for key in keys))
        grid = [[option_text(k, v) for k, v in zip(keys, values, strict=True)] for values in combinations]
        return (grid if keys else []) + [list(point) for point in self.points]

    @model_validator(mode="after")
    def _runs(self) -> SlurmSweep:
        count = len(self.points) + (math.prod(len(v) for v in self.grid.values()) if self.grid else 0)
        if count == 0:
            raise field_error("grid", "a sweep needs at least one run: set grid (values per key) or points")
        if count > MAX_SWEEP_RUNS:
            raise field_error(
                "grid", f"{count} runs; a Slurm job array holds at most {MAX_SWEEP_RUNS} by default "
                "(MaxArraySize): split the sweep into several jobs"
            )
        for key, values in self.grid.items():
            if not key.strip():
                raise field_error("grid", "a key is empty; use dotted names such as model.hidden")
            for i, value in enumerate(values):
                _check_option(f"grid.{key}.{i}", option_text(key, value))
        for i, point in enumerate(self.points):
            for j, option in enumerate(point):
                _check_option(f"points.{i}.{j}", option)
        return self


def _check_option(path: str, option: str) -> None:
    try:
        parse_cfg_options([option])
    except ConfigError as err:
        raise field_error(path, str(err)) from None


class SlurmSpec(Model):
    """How `torchyard slurm submit` asks Slurm for the job; ignored on Kubernetes."""

    partition: SlurmName | None = Field(None, description="--partition; the cluster default when unset.")
    time: Annotated[str, AfterValidator(_slurm_time)] | None = Field(
        None, description="--time limit, e.g. 01:00:00 or 2-00:00:00; the partition default when unset."
    )
    account: SlurmName | None = Field(None, description="--account to charge.")
    qos: SlurmName | None = Field(None, description="--qos.")
    signal_seconds: int = Field(
        300,
        ge=10,
        description="Seconds before the time limit at which the job is "
        "told (USR1) to requeue itself; it then resumes from its last checkpoint.",
    )
    max_requeues: int = Field(
        3,
        ge=0,
        description="How often the job may requeue itself after a checkpoint "
        "(near the time limit or on USR1); counted by SLURM_RESTART_COUNT. 0: never.",
    )
    extra_args: list[NonEmptyLine] = Field(
        default_factory=list,
        description="More sbatch options, one per "
        "item, each starting with '-', e.g. --exclusive, --constraint=a100.",
    )
    container: SlurmContainer | None = Field(
        None,
        description="Run inside this container; else the host Python environment (pythonEnv) runs torchrun.",
    )
    python_env: NonEmptyLine | None = Field(
        None,
        description="A virtualenv or conda prefix whose bin/ goes "
        "first on PATH (it must provide torchrun and torchyard).",
    )
    sweep: SlurmSweep | None = Field(
        None,
        description="TrainJob: run one job per point of a cfgOptions sweep, as one Slurm job array "
        "(torchyard slurm submit only; Kubernetes and torchyard run refuse it).",
    )

    @model_validator(mode="after")
    def _signal_before_limit(self) -> SlurmSpec:
        if self.time is not None and self.signal_seconds >= slurm_time_seconds(self.time):
            raise field_error(
                "signalSeconds",
                f"{self.signal_seconds} s is not before the time limit "
                f"{self.time}; make it smaller than the limit",
            )
        return self

    @field_validator("extra_args")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        for i, arg in enumerate(value):
            if not arg.startswith("-"):
                raise field_error(
                    f"{i}",
                    f"{arg!r} is not an sbatch option; write options such as --exclusive "
                    "or --constraint=a100, one per item",
                )
        return value


class JobSpec(Model):
    """Fields shared by TrainJob and TestJob: what runs, where, on how many nodes."""

    image: NonEmptyLine = Field(
        description="Container image with torchyard and the config, e.g. "
        "torchyard/trainer:0.1.0 (Kubernetes; on Slurm see slurm.container).",
        json_schema_extra=immutable("image"),
    )
    config: NonEmptyLine | None = Field(
        None,
        description="Config file (OpenMMLab style, _base_ works), relative "
        "to the working directory of the image / submit dir. Required unless "
        "command is set.",
        json_schema_extra=immutable("config"),
    )
    cfg_options: list[NonEmptyLine] = Field(
        default_factory=list,
        description="Config overrides KEY=VALUE, as --cfg-options, e.g. train_cfg.max_epochs=5.",
    )
    command: list[Line] | None = Field(
        None,
        min_length=1,
        description="Run this instead of the torchyard "
        "trainer: a script (or -m module) and its arguments that each node's "
        "torchrun starts as is, e.g. [tools/train.py, configs/x.py, --launcher, "
        "pytorch].",
    )
    nodes: int = Field(
        1,
        ge=1,
        le=MAX_NODES,
        description=f"Pods on Kubernetes, nodes on Slurm, node groups locally (at most {MAX_NODES}).",
        json_schema_extra=immutable("nodes"),
    )
    procs_per_node: int | None = Field(
        None,
        ge=1,
        le=MAX_PROCS_PER_NODE,
        description="Processes per node; defaults to gpusPerNode when that is set, else 1 "
        f"(at most {MAX_PROCS_PER_NODE}).",
        json_schema_extra=immutable("procsPerNode"),
    )
    gpus_per_node: int = Field(
        0,
        ge=0,
        le=MAX_GPUS_PER_NODE,
        description="GPUs per node: nvidia.com/gpu limit on pods, --gres=gpu:N on Slurm "
        f"(at most {MAX_GPUS_PER_NODE}).",
    )
    master_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=f"Rendezvous port of node 0. Unset: {DEFAULT_MASTER_PORT} "
        "on pods, derived from the job id on Slurm, a free port locally.",
    )
    resources: Resources = Field(default_factory=Resources, description="Per-node CPU and memory.")
    work_dir: WorkDir = Field(default_factory=WorkDir, description="Where checkpoints and logs go.")
    queue_name: LabelValue | None = Field(
        None, description="Kueue LocalQueue; all pods of the job are one Kueue pod group, admitted together."
    )
    scheduler_name: DnsSubdomain | None = Field(None, description="Pod schedulerName.")
    priority_class_name: DnsSubdomain | None = Field(None, description="Pod priorityClassName.")
    service_account_name: DnsSubdomain | None = Field(None, description="Pod serviceAccountName.")
    node_selector: dict[str, Line] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[FreeForm] = Field(
        default_factory=list, description="Pod tolerations, as in Kubernetes."
    )
    affinity: FreeForm | None = Field(None, description="Pod affinity, as in Kubernetes.")
    image_pull_secrets: list[DnsSubdomain] = Field(
        default_factory=list, description="Names of Secrets for pulling the image."
    )
    backoff_limit: int = Field(
        3, ge=0, description="Whole-job restarts after a failure, each resuming from the last checkpoint."
    )
    disruption_limit: int = Field(
        10,
        ge=0,
        description="Kubernetes: restarts after a pod was evicted or preempted (its DisruptionTarget "
        "condition, or a kubelet's eviction), which spend none of backoffLimit and follow no "
        "restartPolicy: the job did not fail. 0: such a loss counts as a failure.",
    )
    restart_policy: Literal["OnFailure", "ExitCode", "Never"] = Field(
        "OnFailure",
        description="Which failures restart the job (contract/restarts.py): OnFailure, all but those the "
        "trainer says a restart cannot fix (a bad config); ExitCode, Kubeflow's rule on the trainer's exit "
        "code (1-127 fail the job, 128-255 restart it, as does a lost or evicted pod); Never, none.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the job after this many seconds."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the finished job's pods after this many seconds."
    )
    suspend: bool = Field(
        False, description="True stops the pods (they are recreated on resume); may change at any time."
    )
    template: PodTemplate | None = Field(
        None, description="Kubernetes: the user's pod fields (env, volumes, sidecars, securityContext, ...)."
    )
    slurm: SlurmSpec = Field(default_factory=SlurmSpec, description="Slurm submission options.")

    @property
    def nproc_per_node(self) -> int:
        """The effective processes per node: procsPerNode, else gpusPerNode, else 1."""
        return self.procs_per_node or self.gpus_per_node or 1

    @property
    def train_job_name(self) -> str | None:
        """The TrainJob whose work dir this job needs (a TestJob's fromTrainJob), else None."""
        return None

    @field_validator("cfg_options")
    @classmethod
    def _cfg_options(cls, value: list[str]) -> list[str]:
        for i, option in enumerate(value):
            _check_option(f"{i}", option)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.procs_per_node and self.gpus_per_node and self.procs_per_node > self.gpus_per_node:
            raise field_error(
                "procsPerNode",
                f"{self.procs_per_node} processes cannot share {self.gpus_per_node} "
                "GPUs; set procsPerNode <= gpusPerNode or leave it unset",
            )
        for section in ("requests", "limits"):
            if GPU_RESOURCE in getattr(self.resources, section):
                raise field_error(
                    f"resources.{section}.{GPU_RESOURCE}", "set GPUs with gpusPerNode, not in resources"
                )
        if self.command is not None and not self.command[0]:
            raise field_error("command.0", "the first item must be a script or -m; it is empty")
        if self.command is None and self.config is None:
            raise field_error("config", "required (the config file to run), unless command is set")
        if self.slurm.sweep is not None and self.command is not None:
            raise field_error(
                "slurm.sweep",
                "a sweep passes each run's options to the torchyard trainer as --cfg-options; with command "
                "set, write one job per run instead",
            )
        if self.command is not None:
            trainer_only = self._trainer_only_fields_set()
            if trainer_only:
                raise field_error(
                    trainer_only[0],
                    "does not apply when command is set (command runs as is); "
                    "put it in command's arguments instead",
                )
        return self

    def _trainer_only_fields_set(self) -> list[str]:
        """camelCase names of set fields that only the torchyard trainer understands."""
        names = ["config"] if self.config is not None else []
        return names + (["cfgOptions"] if self.cfg_options else [])


class TrainJobSpec(JobSpec):
    """A distributed training run: `torchyard-train CONFIG` on every process."""

    resume: NonEmptyLine = Field(
        "auto",
        description="auto: resume from the work dir's last checkpoint if "
        "there is one; never: start fresh; else a checkpoint path to resume from.",
    )
    amp: bool = Field(False, description="Mixed precision (--amp).")
    seed: int | None = Field(None, ge=0, description="Random seed (--seed); the config's when unset.")
    deterministic: bool = Field(False, description="Deterministic algorithms (--deterministic).")

    def _trainer_only_fields_set(self) -> list[str]:
        names = super()._trainer_only_fields_set()
        names += ["resume"] if "resume" in self.model_fields_set else []
        names += ["amp"] if self.amp else []
        names += ["seed"] if self.seed is not None else []
        return names + (["deterministic"] if self.deterministic else [])


class FromTrainJob(Model):
    """Evaluate a checkpoint of a TrainJob, found in its work dir."""

    name: DnsLabel = Field(description="Name of the TrainJob (same namespace).")
    which: Literal["best", "latest"] = Field(
        "best", description="best: the best checkpoint (else the latest); latest: the latest (else the best)."
    )


class TestWorkDir(WorkDir):
    """A TestJob's work dir: mounted apart from the TrainJob work dir that fromTrainJob mounts."""

    __test__ = False

    mount_path: NonEmptyLine = Field(
        "/test_work_dir",
        pattern=r"^/",
        description="Kubernetes: where the work dir is mounted in the pod; must differ from the TrainJob's.",
    )


class TestJobSpec(JobSpec):
    """An evaluation run: `torchyard-test CONFIG CHECKPOINT` on every process."""

    __test__ = False  # not a pytest test class

    work_dir: TestWorkDir = Field(default_factory=TestWorkDir, description="Where results and logs go.")

    checkpoint: NonEmptyLine | None = Field(
        None,
        description="A checkpoint file or a work dir (the trainer "
        "picks its best, else latest checkpoint). Exclusive with fromTrainJob.",
    )
    from_train_job: FromTrainJob | None = Field(
        None, description="Take the checkpoint from this TrainJob's work dir. Exclusive with checkpoint."
    )
    out: NonEmptyLine | None = Field(
        None, description="Results file (--out), .json or .pkl, relative to the work dir unless absolute."
    )

    @model_validator(mode="after")
    def _one_checkpoint(self) -> TestJobSpec:
        if self.slurm.sweep is not None:
            raise field_error(
                "slurm.sweep",
                "a TestJob evaluates one checkpoint; for a sweep's runs write one TestJob per run, each "
                "with checkpoint: <the TrainJob's work dir>/<run index>",
            )
        if self.command is None and (self.checkpoint is None) == (self.from_train_job is None):
            raise field_error(
                "checkpoint",
                "set exactly one of checkpoint (a file or work dir) and fromTrainJob "
                f"(a TrainJob's name); {'both are' if self.checkpoint else 'neither is'} set",
            )
        return self

    @property
    def train_job_name(self) -> str | None:
        return self.from_train_job.name if self.from_train_job is not None else None  # never with command

    def _trainer_only_fields_set(self) -> list[str]:
        names = super()._trainer_only_fields_set()
        names += ["checkpoint"] if self.checkpoint is not None else []
        names += ["fromTrainJob"] if self.from_train_job is not None else []
        return names + (["out"] if self.out is not None else [])


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class Condition(Model):
    """A Kubernetes-style condition; `reason` is one of the operator's named constants."""

    type: NonEmptyLine = Field(description="e.g. Created, Running, Succeeded, Failed, Suspended.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: Line = Field("", description="CamelCase reason, a constant in the operator.")
    message: str = Field("", description="Human-readable details.")
    last_transition_time: str | None = Field(None, description="RFC 3339 time the status last changed.")


class SweepRun(Model):
    """One run of a sweep (slurm.sweep): its options and what its work dir holds."""

    index: int = Field(ge=0, description="The run's array task id; its work dir is <work dir>/<index>.")
    cfg_options: list[Line] = Field(default_factory=list, description="The run's options, after cfgOptions.")
    state: Line | None = Field(None, description="The run's Slurm state, where known.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Its last validation metrics.")
    last_checkpoint: Line | None = Field(None, description="Its latest checkpoint.")
    best_checkpoint: Line | None = Field(None, description="Its best checkpoint.")


class JobStatus(Model):
    """What the operator observed; written by the operator only."""

    phase: Phase = Field(
        Phase.PENDING, description="Pending, Running, Restarting, Succeeded, Failed, Suspended."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Kubernetes-style conditions.")
    restarts: int = Field(0, ge=0, description="Whole-job restarts so far.")
    disruptions: int = Field(
        0, ge=0, description="Of the restarts, those after an eviction or preemption (not backoffLimit's)."
    )
    start_time: str | None = Field(None, description="RFC 3339 time the first pod started.")
    completion_time: str | None = Field(None, description="RFC 3339 time the job finished.")
    active: int = Field(0, ge=0, description="Pods running now.")
    succeeded: int = Field(0, ge=0, description="Pods that succeeded in the current attempt.")
    failed: int = Field(0, ge=0, description="Pods that failed in the current attempt.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Final metrics from the trainer's termination message, keys as the evaluator prints "
        "them (e.g. accuracy/top1, FID-Full-50k/fid).",
    )
    epoch: int | None = Field(None, ge=0, description="Epoch the trainer last reported.")
    iter: int | None = Field(None, ge=0, description="Iteration the trainer last reported.")
    last_checkpoint: Line | None = Field(
        None, description="Latest checkpoint the trainer reported (path in the pod)."
    )
    best_checkpoint: Line | None = Field(
        None, description="Best checkpoint the trainer reported (path in the pod)."
    )
    slurm_job_id: Line | None = Field(
        None, description="Slurm operator mode: the Slurm job this object owns; only the operator sets it."
    )
    runs: list[SweepRun] = Field(default_factory=list, description="A sweep's runs, in array task order.")


class TestJobStatus(JobStatus):
    __test__ = False

    checkpoint: Line | None = Field(None, description="The checkpoint that was evaluated (path in the pod).")
    headline_metric: Line | None = Field(
        None, description="The first metric as `key: value`, for kubectl get."
    )


def _check_name_fits(name: str, nodes: int) -> None:
    """Pod hostnames `<name>-node-<rank>` must be DNS labels; say how long the name may be."""
    longest = f"{NODE_INFIX}{nodes - 1}"
    limit = MAX_DNS_LABEL - len(longest)
    if len(name) > limit:
        raise field_error(
            "metadata.name",
            f"{name!r} has {len(name)} characters; with nodes={nodes} the pod "
            f"hostname {name}{longest} must stay within {MAX_DNS_LABEL}, so the name may have "
            f"at most {limit} characters",
        )


class _JobObject(Model):
    """What TrainJob and TestJob share: the API version, the metadata, and a name their pods can carry."""

    api_version: Literal["torchyard.dev/v1alpha1"] = Field(API_VERSION, description="torchyard.dev/v1alpha1.")
    metadata: ObjectMeta = Field(description="name (required), namespace, labels, annotations.")

    @model_validator(mode="after")
    def _name_fits(self) -> Self:
        _check_name_fits(self.metadata.name, self.spec.nodes)
        return self


class TrainJob(_JobObject):
    """A training job, as written in YAML (`kind: TrainJob`)."""

    kind: Literal["TrainJob"] = Field("TrainJob", description="TrainJob.")
    spec: TrainJobSpec = Field(description="What to train, where and how.")
    status: JobStatus | None = Field(None, description="Set by the operator.")


class TestJob(_JobObject):
    """An evaluation job, as written in YAML (`kind: TestJob`)."""

    __test__ = False

    kind: Literal["TestJob"] = Field("TestJob", description="TestJob.")
    spec: TestJobSpec = Field(description="What to evaluate, where and how.")
    status: TestJobStatus | None = Field(None, description="Set by the operator.")


Job = TrainJob | TestJob


@dataclass(frozen=True)
class Kind:
    """One resource kind of the API: its model and the names Kubernetes knows it by."""

    model: type[TrainJob] | type[TestJob]
    plural: str  # the REST path segment and the CRD's plural name
    short_name: str  # kubectl get tj
    columns: tuple[dict[str, str], ...] = ()  # printer columns beyond the common ones


KINDS: dict[str, Kind] = {
    "TrainJob": Kind(TrainJob, "trainjobs", "tj"),
    "TestJob": Kind(
        TestJob,
        "testjobs",
        "tsj",
        ({"name": "Metric", "type": "string", "jsonPath": ".status.headlineMetric"},),
    ),
}


def load_job(data: Any, source: str = "") -> Job:
    """Validate one parsed YAML document into a TrainJob or TestJob; SpecError names every bad field."""
    if not isinstance(data, dict):
        raise SpecError(
            [("", f"expected a mapping with apiVersion, kind, metadata and spec, not {type(data).__name__}")],
            source,
        )
    kind = data.get("kind")
    if kind not in KINDS:
        near = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SpecError(
            [("kind", f"{kind!r} is not a torchyard kind; use one of {', '.join(KINDS)}{hint}")], source
        )
    model = KINDS[kind].model
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SpecError([_describe(model, error) for error in err.errors()], source) from None


def format_path(loc: tuple[str | int, ...]) -> str:
    """('spec', 'cfgOptions', 1) -> 'spec.cfgOptions[1]'."""
    text = ""
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _describe(model: type[BaseModel], error: dict) -> tuple[str, str]:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-after"))
    kind = error["type"]
    if kind == "torchyard_field":
        extra = tuple(error["ctx"]["path"].split("."))
        # field validators on a list raise at the list: a numeric part is the item index
        extra = tuple(int(p) if p.isdigit() else p for p in extra)
        loc = extra if extra[0] == "metadata" else loc + extra
        return format_path(loc), error["ctx"]["message"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = sorted(_fields_at(model, loc[:-1]))
        near = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        message = f"unknown field; {hint}known fields here: {', '.join(known)}"
    elif kind == "missing":
        description = _fields_at(model, loc[:-1]).get(str(loc[-1]), "")
        message = f"required: {description}" if description else "required"
    elif kind == "literal_error" and loc[-1] == "apiVersion":
        message = f"must be {API_VERSION}"
    return format_path(loc), message


def _fields_at(model: type[BaseModel], loc: tuple) -> dict[str, str]:
    """{camelCase field name: description} of the model found at `loc` inside `model`."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = next((f for name, f in current.model_fields.items() if to_camel(name) == part), None)
        if field is None:
            return {}
        current = _inner_model(field.annotation)
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return {}
    return {to_camel(name): field.description or "" for name, field in current.model_fields.items()}


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
