"""Read job files: YAML, one or more documents, each a TrainJob or TestJob (the CLI's only file I/O)."""

from __future__ import annotations

from pathlib import Path

import yaml

from torchyard.operator.api.spec import Job, TrainJob, load_job
from torchyard.operator.errors import SpecError


def load_jobs(path: str | Path) -> list[Job]:
    """Every job in the file, validated; SpecError names the file, document and field on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError([("", f"cannot read the file: {err.strerror or err}")], str(path)) from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError([("", f"not valid YAML: {where}{problem}")], str(path)) from None
    if not documents:
        raise SpecError([("", "the file holds no job; see examples/trainjob.yaml")], str(path))
    many = len(documents) > 1
    return [
        load_job(doc, f"{path} (document {i + 1})" if many else str(path)) for i, doc in enumerate(documents)
    ]


def train_job_of(job: Job, *sources: list[Job]) -> TrainJob | None:
    """The TrainJob `job` needs (a TestJob's fromTrainJob), from the first of `sources` that holds it."""
    name = job.spec.train_job_name
    if name is None:
        return None
    trainers = (other for jobs in sources for other in jobs if isinstance(other, TrainJob))
    return next((other for other in trainers if other.metadata.name == name), None)
