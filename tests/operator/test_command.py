"""The trainer command shared by every backend."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from torchyard.operator.command import Checkpoint, node_command, program_args, test_checkpoint


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
        "r.json",
        "--cfg-options",
        "x=1",
    ]


def test_command_runs_as_written(train_job):
    command = ["tools/train.py", "configs/x.py", "--launcher", "pytorch"]
    assert program_args(train_job(config=None, command=command), "/w") == command


def test_latest_follows_the_pointer_file(tmp_path):
    """The sh wrapper pods use for `which: latest`, run for real with a stand-in torchrun."""
    (tmp_path / "last_checkpoint").write_text("/runs/epoch_9.pth\n")
    fake = tmp_path / "torchrun"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(stat.S_IRWXU)
    checkpoint = Checkpoint(str(tmp_path), pointer=str(tmp_path / "last_checkpoint"))
    argv = node_command(
        [str(fake), "--nnodes=1"], ["-m", "m", "cfg", "@torchyard-checkpoint@", "--x", "a b"], checkpoint
    )
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["--nnodes=1", "-m", "m", "cfg", "/runs/epoch_9.pth", "--x", "a b"]
