"""`torchyard run`: the local commands (pure) and a real two-node run of a stand-in script (e2e)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchyard.operator.launch.local import LOCALHOST, local_commands

STAND_IN = Path(__file__).parent / "stand_in_trainer.py"
REPO = Path(__file__).resolve().parents[3]


def test_local_commands(train_job):
    nodes = local_commands(train_job(nodes=2, procsPerNode=3), port=4321)
    assert len(nodes) == 2
    for rank, node in enumerate(nodes):
        assert node.argv[:6] == [
            "torchrun",
            "--nnodes=2",
            f"--node-rank={rank}",
            "--nproc-per-node=3",
            f"--master-addr={LOCALHOST}",
            "--master-port=4321",
        ]
        assert node.argv[6:10] == ["-m", "torchyard.trainer.train", "configs/digits_mlp.py", "--launcher"]
        assert "work_dirs/digits-mlp" in node.argv
        for prefix in ("", "PET_"):
            assert node.env[f"{prefix}NODE_RANK"] == str(rank)
            assert node.env[f"{prefix}MASTER_ADDR"] == LOCALHOST


def _write_job(tmp_path: Path, **spec: object) -> Path:
    job = {
        "apiVersion": "torchyard.dev/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "stand-in"},
        "spec": {
            "image": "unused",
            "nodes": 2,
            "procsPerNode": 2,
            "command": [str(STAND_IN), "--flag", "a b"],
            "workDir": {"path": "runs/stand-in"},
            **spec,
        },
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _run(tmp_path: Path, env: dict | None = None, **spec: object) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "torchyard.operator.cli.main", "run", str(_write_job(tmp_path, **spec))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.e2e
def test_run_two_nodes_of_two_processes(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = re.findall(r"stand-in .*", result.stdout)
    assert len(lines) == 4, result.stdout
    ranks = sorted(int(re.search(r" RANK=(\d+)", line).group(1)) for line in lines)
    assert ranks == [0, 1, 2, 3]
    for line in lines:
        assert "WORLD_SIZE=4" in line and "LOCAL_WORLD_SIZE=2" in line and "MASTER_ADDR=127.0.0.1" in line
        assert line.endswith("ARGS=--flag,a b")
    assert (tmp_path / "runs/stand-in").is_dir()


@pytest.mark.e2e
def test_a_failure_restarts_the_whole_job_up_to_the_backoff_limit(tmp_path):
    result = _run(tmp_path, {"STAND_IN_EXIT": "5"})
    assert result.returncode != 0, result.stdout
    restarts = re.findall(
        r"a node failed \(exit \d+\); restarting the whole job \((\d) of 3\)", result.stderr
    )
    assert restarts == ["1", "2", "3"], result.stderr
    assert "no restarts left (3 of backoffLimit=3 used)" in result.stderr
    assert len(re.findall(r"^stand-in RANK=0 ", result.stdout, re.M)) == 4  # each attempt ran the whole gang


@pytest.mark.e2e
@pytest.mark.parametrize(("policy", "why"), [
    ("Never", "restartPolicy Never: no restart after a failure"),
    ("ExitCode", "exit code 1 is permanent under restartPolicy ExitCode"),  # torchrun's 1
])  # fmt: skip
def test_restart_policy_keeps_a_failure_final(tmp_path, policy, why):
    result = _run(tmp_path, {"STAND_IN_EXIT": "5"}, restartPolicy=policy)
    assert result.returncode != 0, result.stdout
    assert why in result.stderr and "restarting the whole job" not in result.stderr, result.stderr


@pytest.mark.e2e
def test_a_failure_rank_0_calls_final_is_not_restarted(tmp_path):
    result = _run(tmp_path, {"STAND_IN_NOT_RETRYABLE": "1"})
    assert result.returncode != 0, result.stdout
    assert "a restart cannot fix" in result.stderr and "restarting the whole job" not in result.stderr


@pytest.mark.e2e
def test_torchyard_torchrun_says_a_config_error_in_one_line_and_exits_3(tmp_path):
    """The issue's torchrun command through `torchyard torchrun` (what make demo runs): plain torchrun prints
    its banner and trace-back and exits 1 whatever its worker's code; this prints the trainer's line."""
    argv = ["torchrun", "--standalone", "--nproc-per-node=2", "-m", "torchyard.trainer.train",
            str(REPO / "configs/digits_cnn.py"), "--launcher", "pytorch", "--work-dir", str(tmp_path / "wd"),
            "--cfg-options", "model.channels=abc"]
    result = subprocess.run([sys.executable, "-m", "torchyard.operator.cli.main", *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)

    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == ["error: model.channels: expected int, got 'abc' (str)"]


@pytest.mark.e2e
def test_a_config_error_is_one_line_between_run_s_own_and_exits_3(tmp_path):
    """Through torchrun and two ranks: one rank's line, none of the agent's trace-back, the trainer's code."""
    job = {
        "apiVersion": "torchyard.dev/v1alpha1", "kind": "TrainJob", "metadata": {"name": "bad-config"},
        "spec": {"image": "unused", "nodes": 1, "procsPerNode": 2, "workDir": {"path": "runs/bad-config"},
                 "config": str(REPO / "configs/digits_cnn.py"), "cfgOptions": ["model.channels=abc"]},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    result = subprocess.run([sys.executable, "-m", "torchyard.operator.cli.main", "run", "job.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        "torchyard run: TrainJob bad-config, 1 node(s) x 2 process(es), master "
        + re.search(r"master (\S+)", result.stderr).group(1),
        "error: model.channels: expected int, got 'abc' (str)",
        "torchyard run: the job failed (exit 3): a restart cannot fix this (see above); not restarting",
    ]
