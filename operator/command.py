"""The one trainer command every backend runs: torchrun's options, then the trainer (or the user's command).

Pods, Slurm and `torchyard run` differ only in where the work dir is and how the node rank and master
address are found; they all call these pure functions.

    torchrun --nnodes=2 --node-rank=0 --nproc-per-node=1 --master-addr=A --master-port=29500 \\
        -m torchyard.trainer.train configs/x.py --launcher pytorch --work-dir /work_dir --resume
"""

from __future__ import annotations

from dataclasses import dataclass

from torchyard.operator.api import Job, TestJob, TrainJob

TRAIN_MODULE = "torchyard.trainer.train"
TEST_MODULE = "torchyard.trainer.test"
LAST_POINTER = "last_checkpoint"  # the trainer's pointer file naming a work dir's latest checkpoint
# Stands for the checkpoint in argv until FOLLOW_POINTER_SH replaces it by the pointer file's content.
CHECKPOINT_PLACEHOLDER = "@torchyard-checkpoint@"
# A constant POSIX sh program (no user data in it): $0 is a pointer file, "$@" the command; it runs the
# command with the placeholder argument replaced by the path the pointer file holds.
FOLLOW_POINTER_SH = (
    'ckpt="$(cat "$0")" || exit 1\n'
    'for a do shift; if [ "$a" = '
    + CHECKPOINT_PLACEHOLDER
    + ' ]; then a="$ckpt"; fi; set -- "$@" "$a"; done\n'
    'exec "$@"'
)


class RenderError(ValueError):
    """The job cannot be rendered for this backend as given; the message names the field and the fix."""


@dataclass(frozen=True)
class Checkpoint:
    """The CHECKPOINT argument of a TestJob: a path, or (for `latest`) a pointer file to follow at start."""

    path: str
    pointer: str | None = None


def work_dir_path(job: Job) -> str:
    """The work dir on Slurm and for `torchyard run`: workDir.path, else work_dirs/<job name>."""
    return job.spec.work_dir.path or f"work_dirs/{job.metadata.name}"


def torchrun_options(
    nnodes: int, node_rank: int | str, nproc: int, master_addr: str, master_port: int | str
) -> list[str]:
    """torchrun's rendezvous options; node_rank/master_addr/port may be shell expansions on Slurm."""
    return [
        f"--nnodes={nnodes}",
        f"--node-rank={node_rank}",
        f"--nproc-per-node={nproc}",
        f"--master-addr={master_addr}",
        f"--master-port={master_port}",
    ]


def program_args(job: Job, work_dir: str, checkpoint: Checkpoint | None = None) -> list[str]:
    """What torchrun starts: the trainer with the spec's flags, or `spec.command` exactly as written."""
    spec = job.spec
    if spec.command is not None:
        return list(spec.command)
    if isinstance(job, TrainJob):
        args = ["-m", TRAIN_MODULE, spec.config, "--launcher", "pytorch", "--work-dir", work_dir]
        if spec.resume == "auto":
            args.append("--resume")
        elif spec.resume != "never":
            args += ["--resume", spec.resume]
        args += ["--amp"] if spec.amp else []
        args += ["--seed", str(spec.seed)] if spec.seed is not None else []
        args += ["--deterministic"] if spec.deterministic else []
    else:
        if checkpoint is None:
            raise RenderError("a TestJob needs its checkpoint resolved (see test_checkpoint)")
        ckpt = CHECKPOINT_PLACEHOLDER if checkpoint.pointer else checkpoint.path
        args = ["-m", TEST_MODULE, spec.config, ckpt, "--launcher", "pytorch", "--work-dir", work_dir]
        args += ["--out", spec.out] if spec.out else []
    return args + (["--cfg-options", *spec.cfg_options] if spec.cfg_options else [])


def test_checkpoint(job: TestJob, train_work_dir: str | None) -> Checkpoint | None:
    """Resolve the TestJob's checkpoint; `train_work_dir` is the fromTrainJob's work dir on this backend."""
    spec = job.spec
    if spec.command is not None:
        return None
    if spec.checkpoint is not None:
        return Checkpoint(spec.checkpoint)
    ref = spec.from_train_job
    if train_work_dir is None:
        raise RenderError(missing_train_job(ref.name))
    if ref.which == "best":  # the trainer picks a work dir's best checkpoint, else its latest
        return Checkpoint(train_work_dir)
    return Checkpoint(train_work_dir, pointer=f"{train_work_dir.rstrip('/')}/{LAST_POINTER}")


test_checkpoint.__test__ = False  # a function named test_*, not a pytest test


def missing_train_job(name: str) -> str:
    return (
        f"spec.fromTrainJob: TrainJob {name!r} is needed to find its work dir; pass it "
        "(torchyard render/run --train-job FILE), or set spec.checkpoint instead"
    )


def check_train_job(job: TestJob, train_job: TrainJob | None) -> TrainJob:
    """The TrainJob that `job.spec.fromTrainJob` names, or RenderError saying how to supply it."""
    ref = job.spec.from_train_job
    if train_job is None or train_job.metadata.name != ref.name:
        raise RenderError(missing_train_job(ref.name))
    return train_job


def node_command(torchrun: list[str], program: list[str], checkpoint: Checkpoint | None) -> list[str]:
    """The full argv one node runs: torchrun, its options and the program, through sh only for `latest`."""
    argv = [*torchrun, *program]
    if checkpoint is not None and checkpoint.pointer:
        return ["sh", "-c", FOLLOW_POINTER_SH, checkpoint.pointer, *argv]
    return argv
