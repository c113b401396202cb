"""`torchyard validate | render | run | crds`: the job-file commands (see cli/main.py for the layout)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from torchyard.operator.api.crds import render_crds
from torchyard.operator.api.jobfile import load_jobs, train_job_of
from torchyard.operator.api.spec import Job, TrainJob
from torchyard.operator.kube.render import render_k8s
from torchyard.operator.launch.local import run_job
from torchyard.operator.slurm.render import render_slurm


def register(commands: argparse._SubParsersAction) -> None:
    validate = commands.add_parser("validate", help="check job files; errors name the field")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=validate_command)

    render = commands.add_parser("render", help="print the Kubernetes manifests or the sbatch script")
    render.add_argument("file", metavar="FILE")
    render.add_argument("--target", choices=["k8s", "slurm"], required=True)
    _train_job_option(render)
    render.set_defaults(func=render_command)

    run = commands.add_parser("run", help="run the job on this machine (nodes x procsPerNode processes)")
    run.add_argument("file", metavar="FILE")
    _train_job_option(run)
    run.set_defaults(func=run_command)

    crds = commands.add_parser("crds", help="print the CRDs, or write them to a folder")
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
