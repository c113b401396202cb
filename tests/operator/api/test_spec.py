"""The API models: examples, defaults, and a corpus of malformed specs each naming its field path."""

from __future__ import annotations

import copy
from typing import get_args

import pytest
import yaml

from torchyard.contract.restarts import POLICIES
from torchyard.operator.api.spec import (
    MAX_DNS_LABEL,
    JobSpec,
    TestJob,
    TrainJob,
    load_job,
    slurm_time_seconds,
)
from torchyard.operator.errors import SpecError

from .corpus import CORPUS, walk


def test_examples_are_valid(repo):
    train = load_job(yaml.safe_load((repo / "examples/trainjob.yaml").read_text()))
    test = load_job(yaml.safe_load((repo / "examples/testjob.yaml").read_text()))
    assert isinstance(train, TrainJob) and train.spec.nodes == 2 and train.spec.cfg_options
    assert isinstance(test, TestJob) and test.spec.from_train_job.name == train.metadata.name


def test_defaults(train_job):
    spec = train_job().spec
    assert (spec.nproc_per_node, spec.backoff_limit, spec.resume, spec.master_port) == (1, 3, "auto", None)
    assert spec.work_dir.mount_path == "/work_dir" and not spec.suspend


def test_restart_policy_offers_exactly_the_contracts_policies():
    assert get_args(JobSpec.model_fields["restart_policy"].annotation) == POLICIES


@pytest.mark.parametrize(("procs", "gpus", "expected"), [(None, 0, 1), (None, 4, 4), (2, 4, 2), (3, 0, 3)])
def test_procs_per_node_defaults_to_gpus(train_job, procs, gpus, expected):
    assert train_job(procsPerNode=procs, gpusPerNode=gpus).spec.nproc_per_node == expected


def test_snake_case_names_work_too(train_job):
    assert train_job(procs_per_node=2).spec.nproc_per_node == 2


@pytest.mark.parametrize("nodes", [1, 9, 10, 100])
def test_name_length_limit_depends_on_nodes(base_train, nodes):
    limit = MAX_DNS_LABEL - len(f"-node-{nodes - 1}")
    base_train["spec"]["nodes"] = nodes
    base_train["metadata"]["name"] = "a" * limit
    load_job(base_train)
    base_train["metadata"]["name"] = "a" * (limit + 1)
    with pytest.raises(SpecError) as err:
        load_job(base_train)
    assert err.value.problems[0][0] == "metadata.name"
    assert f"at most {limit} characters" in str(err.value)


def test_to_dict_round_trips(repo):
    data = yaml.safe_load((repo / "examples/trainjob.yaml").read_text())
    job = load_job(data)
    assert load_job(job.to_dict()) == job


def test_command_replaces_trainer_fields(train_job, base_train):
    del base_train["spec"]["config"]
    base_train["spec"]["command"] = ["tools/train.py", "configs/x.py", "--launcher", "pytorch"]
    assert load_job(base_train).spec.command[0] == "tools/train.py"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("1:30", 90),
        ("01:00:00", 3600),
        ("2-00", 172800),
        ("1-02:03", 93780),
        ("1-0:0:5", 86405),
    ],
)
def test_slurm_time(text, seconds):
    assert slurm_time_seconds(text) == seconds


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 40
    assert len({case["id"] for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[case["id"] for case in CORPUS])
def test_malformed_spec_names_its_field(case, base_train, base_test):
    data = copy.deepcopy(base_test if case.get("kind") == "TestJob" else base_train)
    for dotted in case.get("delete", []):
        *parents, last = dotted.split(".")
        walk(data, parents).pop(last)
    for dotted, value in case.get("set", {}).items():
        # keys holding dots (nvidia.com/gpu) only appear inside values here, never in a set path
        *parents, last = dotted.split(".")
        walk(data, parents)[last] = value
    with pytest.raises(SpecError) as err:
        load_job(data)
    paths = [path for path, _ in err.value.problems]
    assert case["path"] in paths, f"expected an error at {case['path']}, got {err.value}"
    message = dict(err.value.problems)[case["path"]]
    assert len(message) > 10, f"message too terse: {message!r}"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, 2], "expected a mapping"),
        ({"kind": "TrainJobs"}, "did you mean TrainJob"),
        ({"kind": None}, "not a torchyard kind"),
    ],
)
def test_not_a_job(data, expected):
    with pytest.raises(SpecError, match=expected):
        load_job(data)


def test_unknown_field_suggests_the_nearest(base_train):
    base_train["spec"]["procPerNode"] = 2
    with pytest.raises(SpecError, match="did you mean procsPerNode"):
        load_job(base_train)


def test_missing_field_shows_its_description(base_train):
    del base_train["spec"]["image"]
    with pytest.raises(SpecError, match=r"spec.image: required: Container image"):
        load_job(base_train)
