"""The trainer command shared by every backend."""

from __future__ import annotations

import pytest

from torchyard.operator.launch.command import Checkpoint, program_args, test_checkpoint


@pytest.mark.parametrize(
    ("spec", "expected_tail"),
    [
        ({}, ["--resume"]),
        ({"resume": "never"}, []),
        ({"resume": "/ckpt/epoch_2.pth"}, ["--resume", "/ckpt/epoch_2.pth"]),
        (
            {"resume": "never", "amp": True, "seed": 7, "deterministic": True},
            ["--amp", "--seed", "7", "--deterministic"],
        ),
        ({"resume": "never", "cfgOptions": ["a=1", "b.c=[1,2]"]}, ["--cfg-options", "a=1", "b.c=[1,2]"]),
    ],
)
def test_train_args(train_job, spec, expected_tail):
    args = program_args(train_job(**spec), "/w")
    head = [
        "-m",
        "torchyard.trainer.train",
        "configs/digits_mlp.py",
        "--launcher",
        "pytorch",
        "--work-dir",
        "/w",
    ]
    assert args == head + expected_tail


def test_test_args(test_job):
    job = test_job(out="r.json", cfgOptions=["x=1"])
    assert program_args(job, "/w", test_checkpoint(job, None)) == [
        "-m",
        "torchyard.trainer.test",
        "configs/digits_mlp.py",
        "/ckpt/best.pth",
        "--launcher",
        "pytorch",
        "--work-dir",
        "/w",
        "--out",
        "/w/r.json",
        "--cfg-options",
        "x=1",
    ]
    absolute = test_job(out="/results/r.json")
    assert program_args(absolute, "/w", test_checkpoint(absolute, None))[-1] == "/results/r.json"


def test_command_runs_as_written(train_job):
    command = ["tools/train.py", "configs/x.py", "--launcher", "pytorch"]
    assert program_args(train_job(config=None, command=command), "/w") == command


@pytest.mark.parametrize(("which", "pointer"), [("best", "best_checkpoint"), ("latest", "last_checkpoint")])
def test_from_train_job_passes_the_pointer_file(test_job, which, pointer):
    """torchyard-test follows the pointer file itself, so every backend passes the same plain path."""
    job = test_job(checkpoint=None, fromTrainJob={"name": "digits-mlp", "which": which})
    assert test_checkpoint(job, "/runs/digits-mlp/") == Checkpoint(f"/runs/digits-mlp/{pointer}")
