"""The one trainer command every backend runs: torchrun's options, then the trainer (or the user's command).

Pods, Slurm and `torchyard run` differ only in where the work dir is and how the node rank and master
address are found; they all call these pure functions.

    torchrun --nnodes=2 --node-rank=0 --nproc-per-node=1 --master-addr=A --master-port=29500 \\
        -m torchyard.trainer.train configs/x.py --launcher pytorch --work-dir /work_dir --resume
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from torchyard.contract.launchers import TORCHRUN
from torchyard.contract.workdir import POINTERS
from torchyard.operator.api.spec import Job, TestJob, TrainJob
from torchyard.operator.errors import RenderError

TRAIN_MODULE = "torchyard.trainer.train"
TEST_MODULE = "torchyard.trainer.test"


@dataclass(frozen=True)
class Checkpoint:
    """The CHECKPOINT argument of a TestJob: a checkpoint file, a work dir or a pointer file in a work dir."""

    path: str


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
        args = ["-m", TRAIN_MODULE, spec.config, "--launcher", TORCHRUN, "--work-dir", work_dir]
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
        args = ["-m", TEST_MODULE, spec.config, checkpoint.path]
        args += ["--launcher", TORCHRUN, "--work-dir", work_dir]
        args += ["--out", posixpath.join(work_dir, spec.out)] if spec.out else []  # absolute stays absolute
    return args + (["--cfg-options", *spec.cfg_options] if spec.cfg_options else [])


def check_single_run(job: Job, backend: str) -> None:
    """RenderError for a sweep on a backend that runs one job as one run (only Slurm has job arrays)."""
    sweep = job.spec.slurm.sweep
    if sweep is not None:
        raise RenderError(
            f"spec.slurm.sweep: {backend} cannot run a sweep ({len(sweep.runs())} runs), only Slurm's job "
            "arrays can: submit it with torchyard slurm submit, or write one TrainJob per run"
        )


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
    # torchyard-test reads the pointer file when it starts, so it takes the checkpoint current at that time.
    return Checkpoint(f"{train_work_dir.rstrip('/')}/{POINTERS[ref.which]}")


test_checkpoint.__test__ = False  # a function named test_*, not a pytest test


def missing_train_job(name: str) -> str:
    return (
        f"spec.fromTrainJob: TrainJob {name!r} is needed to find its work dir; pass it "
        "(torchyard render/run --train-job FILE), or set spec.checkpoint instead"
    )


def check_train_job(job: Job, train_job: TrainJob | None) -> TrainJob | None:
    """The TrainJob whose work dir `job` needs (None: it needs none), or RenderError saying how to pass it."""
    name = job.spec.train_job_name
    if name is None:
        return None
    if train_job is None or train_job.metadata.name != name:
        raise RenderError(missing_train_job(name))
    if train_job.spec.slurm.sweep is not None:
        raise RenderError(
            f"spec.fromTrainJob: TrainJob {name!r} is a sweep of {len(train_job.spec.slurm.sweep.runs())} "
            f"runs, each with its own checkpoints; set spec.checkpoint to one run's, e.g. "
            f"{work_dir_path(train_job)}/0/best_checkpoint"
        )
    return train_job


def node_program(job: Job, work_dir: str, train_work_dir: str | None = None) -> list[str]:
    """What torchrun starts on every node of every backend, a TestJob's checkpoint resolved;
    `train_work_dir`: where the work dir of the TrainJob it evaluates is on this backend."""
    checkpoint = test_checkpoint(job, train_work_dir) if isinstance(job, TestJob) else None
    return program_args(job, work_dir, checkpoint)
