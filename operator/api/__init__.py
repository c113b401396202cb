"""The TrainJob/TestJob API: the models (the only place a field is declared), the kinds, the conditions.

    from torchyard.operator.api import load_job
    job = load_job(yaml.safe_load(text))      # a TrainJob or TestJob, or SpecError naming every bad field
"""

from torchyard.operator.api.spec import (
    API_VERSION,
    GROUP,
    KINDS,
    VERSION,
    Job,
    Kind,
    Phase,
    TestJob,
    TrainJob,
    load_job,
)
from torchyard.operator.errors import SpecError

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Job",
    "Kind",
    "Phase",
    "SpecError",
    "TestJob",
    "TrainJob",
    "load_job",
]
