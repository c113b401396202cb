"""`torchyard validate | render | run | crds`: the job-file commands (see cli/main.py for the layout)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from torchyard.operator.api.crds import render_crds
from torchyard.operator.api.jobfile import load_jobs, train_job_of
from torchyard.operator.api.spec import Job, TrainJob
from torchyard.operator.cli.help import add_command
from torchyard.operator.kube.render import render_k8s
from torchyard.operator.launch.local import run_job, run_torchrun
from torchyard.operator.slurm.render import render_slurm


def register(commands: argparse._SubParsersAction) -> None:
    validate = add_command(commands, "validate", "check job files; errors name the field",
                           "torchyard validate examples/trainjob.yaml examples/testjob.yaml")
    validate.add_argument("files", nargs="+", metavar="FILE", help="TrainJob/TestJob YAML files")
    validate.set_defaults(func=validate_command)

    render = add_command(commands, "render", "print the Kubernetes manifests or the sbatch script",
                         "torchyard render examples/trainjob.yaml --target k8s",
                         "torchyard render examples/testjob.yaml --target slurm "
                         "--train-job examples/trainjob.yaml")
    render.add_argument("file", metavar="FILE", help="a TrainJob/TestJob YAML file")
    render.add_argument("--target", choices=["k8s", "slurm"], required=True,
                        help="k8s: the Pods and the headless Service; slurm: the sbatch script")
    _train_job_option(render)
    render.set_defaults(func=render_command)

    run = add_command(commands, "run", "run the job on this machine (nodes x procsPerNode processes)",
                      "torchyard run examples/trainjob.yaml")
    run.add_argument("file", metavar="FILE", help="a TrainJob/TestJob YAML file")
    _train_job_option(run)
    run.set_defaults(func=run_command)

    torchrun = add_command(
        commands, "torchrun", "torchrun ARGS with the trainer's lines only (no agent banner or trace-back) "
        "and the trainer's exit code (3: a config error)",
        "torchyard torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.train configs/digits_cnn.py "
        "--launcher pytorch", add_help=False)
    torchrun.add_argument("argv", nargs=argparse.REMAINDER, help="torchrun's arguments, as for torchrun")
    torchrun.set_defaults(func=torchrun_command, passthrough=True)

    crds = add_command(commands, "crds", "print the CRDs, or write them to a folder",
                       "torchyard crds --out crds/", "torchyard crds | kubectl apply --server-side -f -")
    crds.add_argument("--out", type=Path, metavar="DIR", help="write one file per CRD here (e.g. crds/)")
    crds.set_defaults(func=crds_command)


def _train_job_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--train-job",
        type=Path,
        metavar="FILE",
        help="file with the TrainJob a TestJob's fromTrainJob names (if not in FILE itself)",
    )


def validate_command(args: argparse.Namespace) -> int:
    for path in args.files:
        for job in load_jobs(path):
            print(f"{path}: {job.kind} {job.metadata.name} is valid")
    return 0


def render_command(args: argparse.Namespace) -> int:
    jobs = load_jobs(args.file)
    if args.target == "slurm":
        if len(jobs) != 1:
            print(
                f"torchyard render: {args.file} holds {len(jobs)} jobs; an sbatch script runs one",
                file=sys.stderr,
            )
            return 2
        sys.stdout.write(render_slurm(jobs[0], _train_job(jobs[0], jobs, args.train_job)))
        return 0
    manifests = [m for job in jobs for m in render_k8s(job, _train_job(job, jobs, args.train_job))]
    sys.stdout.write(yaml.safe_dump_all(manifests, sort_keys=False))
    return 0


def run_command(args: argparse.Namespace) -> int:
    jobs = load_jobs(args.file)
    code = 0
    for job in jobs:  # in file order, so a TrainJob runs before the TestJob that evaluates it
        code = run_job(job, _train_job(job, jobs, args.train_job))
        if code:
            break
    return code


def torchrun_command(args: argparse.Namespace) -> int:
    return run_torchrun(args.rest + args.argv)


def crds_command(args: argparse.Namespace) -> int:
    files = render_crds()
    if args.out is None:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


def _train_job(job: Job, jobs: list[Job], train_job_file: Path | None) -> TrainJob | None:
    """The TrainJob a TestJob's fromTrainJob names: from the same file, else from --train-job."""
    found = train_job_of(job, jobs)
    if found is None and job.spec.train_job_name and train_job_file is not None:
        found = train_job_of(job, load_jobs(train_job_file))
    return found
