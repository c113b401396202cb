"""What the Slurm operator mode takes from a tenant (pure): paths confined to the job's namespace, and
only the sbatch options an admin allows.

`torchyard slurm submit` runs as the user who types it and trusts the spec. The operator mode submits every
namespace's jobs as its own Unix account, so a spec must not reach what another namespace owns:

- work dirs live under ``work_dirs/<namespace>/``: ``team-a/foo`` and ``team-b/foo`` never share
  checkpoints, and ``resume: auto`` never continues another team's run;
- ``workDir.path``, a TestJob's ``checkpoint`` and a TrainJob's ``resume`` path are relative to that folder,
  and ``config`` to the submit dir; none may climb out with ``..``. An absolute path is allowed only under a
  root the admin names (``--slurm-work-root``; ``{namespace}`` in it becomes the job's namespace);
- ``slurm.extraArgs`` may only use the options of `allowed_options` (``--uid``, ``--chdir``, ``--output``,
  ``--export`` ... are refused unless an admin adds them).

This confines paths; it is not a sandbox. Each job still runs as the operator's account and can run any code
(a Python config, spec.command): tenants that must not trust each other need an operator each, under a Unix
account of their own (README, "Slurm operator mode").

    job = confine(job, namespace, SlurmPolicy(work_roots=("/scratch/{namespace}",)))   # or NotAllowed
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from torchyard.operator.api.spec import Job, TestJob, TrainJob
from torchyard.operator.errors import NotAllowed

WORK_DIRS = "work_dirs"
# sbatch options that shape the allocation a job asks for and nothing else. Excluded on purpose: who the
# job runs as (--uid, --gid), where it reads and writes (--chdir, --output, --error, --input), its
# environment (--export, --get-user-env), the accounting it is charged to (--account, --qos: spec fields an
# admin controls through the operator account's associations) and options torchyard sets itself.
DEFAULT_OPTIONS = (
    "--exclusive",
    "--constraint",
    "-C",
    "--mem-per-cpu",
    "--mem-per-gpu",
    "--cpus-per-gpu",
    "--gpus-per-task",
    "--gpu-bind",
    "--hint",
    "--switches",
    "--licenses",
    "-L",
    "--nice",
    "--mail-type",
    "--comment",
)
SPEC_KEYS = {"work_dir": "workDir.path", "checkpoint": "checkpoint", "resume": "resume", "config": "config"}


@dataclass(frozen=True)
class SlurmPolicy:
    """An admin's rules for tenants' specs; the defaults allow no absolute path."""

    work_roots: tuple[str, ...] = ()
    allowed_options: tuple[str, ...] = DEFAULT_OPTIONS


def confine(job: Job, namespace: str, policy: SlurmPolicy) -> Job:
    """`job` with its paths placed in `namespace`'s folder; NotAllowed names each field breaking a rule."""
    problems: list[tuple[str, str]] = []
    home = f"{WORK_DIRS}/{namespace}"
    roots = [root.replace("{namespace}", namespace) for root in policy.work_roots]

    def place(key: str, value: str, base: str | None) -> str:
        field = f"spec.{SPEC_KEYS[key]}"
        if ".." in value.split("/"):
            problems.append((field, f"{value!r} climbs out of its folder with '..'; name a path inside it"))
        elif value.startswith("/"):
            if not any(_inside(value, root) for root in roots):
                allowed = ", ".join(roots) or "none: ask the admin for a --slurm-work-root"
                inside = base or "the submit dir"
                message = f"{value!r} is outside the roots this operator allows ({allowed}); use a path "
                problems.append((field, message + f"relative to {inside}"))
        elif base is not None:
            return posixpath.join(base, value)
        return value

    spec = job.spec
    work_dir = f"{home}/{job.metadata.name}"
    if spec.work_dir.path:
        work_dir = place("work_dir", spec.work_dir.path, home)
    update: dict[str, object] = {"work_dir": spec.work_dir.model_copy(update={"path": work_dir})}
    if spec.config is not None:
        update["config"] = place("config", spec.config, None)
    if isinstance(job, TestJob) and spec.checkpoint is not None:
        update["checkpoint"] = place("checkpoint", spec.checkpoint, home)
    if isinstance(job, TrainJob) and spec.resume not in ("auto", "never"):
        update["resume"] = place("resume", spec.resume, home)
    allowed = ", ".join(policy.allowed_options)
    for i, option in enumerate(spec.slurm.extra_args):
        name = option.split("=", 1)[0].split()[0]
        if name not in policy.allowed_options:
            message = f"{name} is not allowed by this operator (it allows {allowed}); ask the admin"
            problems.append((f"spec.slurm.extraArgs[{i}]", message + f" for --slurm-allow-option={name}"))
    if problems:
        raise NotAllowed(problems, f"{job.kind} {namespace}/{job.metadata.name}")
    return job.model_copy(update={"spec": spec.model_copy(update=update)})


def _inside(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    return posixpath.normpath(path).startswith(root.rstrip("/") + "/")
