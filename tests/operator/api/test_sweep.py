"""slurm.sweep: the runs a grid and points make, and what a sweep cannot be, each error naming its field."""

from __future__ import annotations

import pytest
import yaml

from torchyard.operator.api.spec import MAX_SWEEP_RUNS, load_job
from torchyard.operator.errors import RenderError, SpecError
from torchyard.operator.kube.render import render_k8s
from torchyard.operator.launch.command import check_train_job
from torchyard.operator.launch.local import local_commands


def sweep_job(train_job, **sweep):
    return train_job(slurm={"sweep": sweep})


def test_the_grid_gives_every_combination_last_key_fastest_then_the_points(train_job):
    job = sweep_job(train_job, grid={"lr": [0.01, 0.1], "model.act": ["relu", "gelu"], "amp": [True]},
                    points=[["lr=1", "x=[1, 2]"]])  # fmt: skip

    assert job.spec.slurm.sweep.runs() == [
        ["lr=0.01", "model.act=relu", "amp=True"],
        ["lr=0.01", "model.act=gelu", "amp=True"],
        ["lr=0.1", "model.act=relu", "amp=True"],
        ["lr=0.1", "model.act=gelu", "amp=True"],
        ["lr=1", "x=[1, 2]"],
    ]


def test_the_example_sweep_is_four_runs_two_at_a_time(repo):
    job = load_job(yaml.safe_load((repo / "examples/sweep.yaml").read_text()))

    assert [run[0] for run in job.spec.slurm.sweep.runs()] == [
        f"optim_wrapper.optimizer.lr={lr}" for lr in (0.02, 0.05, 0.1, 0.2)
    ]
    assert job.spec.slurm.sweep.max_parallel == 2


def sweep(**fields):
    return {"slurm": {"sweep": fields}}


@pytest.mark.parametrize(
    ("spec", "path", "says"),
    [
        (sweep(), "grid", "at least one run"),
        (sweep(grid={"lr": []}), "grid.lr", "at least 1 item"),
        (sweep(grid={"": [1]}), "grid", "a key is empty"),
        (sweep(grid={"lr": [[1]]}), "grid.lr[0]", "write a list as a string"),
        (sweep(points=[["no-equals"]]), "points[0][0]", "KEY=VALUE"),
        (sweep(points=[[]]), "points[0]", "at least 1 item"),
        (sweep(points=[["a=1"]], maxParallel=0), "maxParallel", "greater than or equal to 1"),
        (sweep(grid={"a": list(range(40)), "b": list(range(30))}), "grid",
         f"1200 runs; a Slurm job array holds at most {MAX_SWEEP_RUNS}"),
        ({"config": None, "command": ["train.py"], **sweep(points=[["a=1"]])}, "", "write one job per run"),
    ],
    ids=["empty", "no-values", "empty-key", "list-value", "not-an-option", "empty-point", "parallel-0",
         "too-many", "with-command"],
)  # fmt: skip
def test_a_sweep_that_cannot_run_names_its_field(train_job, spec, path, says):
    with pytest.raises(SpecError) as raised:
        train_job(**spec)

    messages = dict(raised.value.problems)
    path = "spec.slurm.sweep" + (f".{path}" if path else "")
    assert path in messages, messages
    assert says in messages[path]


def test_a_test_job_cannot_sweep(test_job):
    with pytest.raises(SpecError) as raised:
        test_job(slurm={"sweep": {"points": [["a=1"]]}})

    assert "one TestJob per run" in dict(raised.value.problems)["spec.slurm.sweep"]


def test_kubernetes_and_torchyard_run_refuse_a_sweep_saying_where_it_runs(train_job):
    job = sweep_job(train_job, grid={"lr": [0.1, 0.2]})

    for render in (lambda: render_k8s(job), lambda: local_commands(job, port=29500)):
        with pytest.raises(RenderError, match=r"cannot run a sweep \(2 runs\).*torchyard slurm submit"):
            render()


def test_a_test_job_of_a_sweep_is_told_to_name_one_runs_checkpoint(train_job, test_job):
    train = sweep_job(train_job, points=[["a=1"], ["a=2"]])
    test = test_job(checkpoint=None, fromTrainJob={"name": "digits-mlp"})

    with pytest.raises(RenderError, match=r"a sweep of 2 runs.*work_dirs/digits-mlp/0/best_checkpoint"):
        check_train_job(test, train)
