"""tools/: the entry points OpenMMLab's docs teach, run the way those docs show (Slurm ones: tests/slurm)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs/digits_mlp.py")
SHORT = ["--cfg-options", "train_cfg.max_epochs=1"]


def run(*command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `python` is this venv's
    return subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", **env})


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.mark.e2e
def test_train_and_test_py_as_in_the_docs(tmp_path):
    trained = run("python", str(REPO / "tools/train.py"), CONFIG, "--work-dir", "wd", "--no-validate", *SHORT,
                  cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "wd/scalars.jsonl").read_text().splitlines()]
    assert rows and all(row["mode"] == "train" for row in rows)  # --no-validate

    tested = run("python", str(REPO / "tools/test.py"), CONFIG, "wd/last_checkpoint", "--work-dir", "wd/test",
                 cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "accuracy/top1" in json.loads((tmp_path / "wd/test/metrics.json").read_text())["metrics"]


@pytest.mark.e2e
def test_dist_train_and_dist_test_sh_start_gpus_processes(tmp_path):
    trained = run("bash", str(REPO / "tools/dist_train.sh"), CONFIG, "2", "--work-dir", "wd", *SHORT,
                  cwd=tmp_path, PORT=free_port())
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "world size 2" in (tmp_path / "wd/train.log").read_text()

    tested = run("bash", str(REPO / "tools/dist_test.sh"), CONFIG, "wd/last_checkpoint", "2", "--work-dir",
                 "wd/test", cwd=tmp_path, PORT=free_port())
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "world size 2" in (tmp_path / "wd/test/test.log").read_text()


@pytest.mark.parametrize(("flag", "message"), [
    ("--tta", "error: --tta: test-time augmentation is not supported; test without it"),
    ("--show", "error: --show/--wait-time: torchyard draws no windows; --show-dir DIR saves the pictures"),
])
def test_test_py_refuses_what_it_cannot_do_in_one_line(tmp_path, flag: str, message: str):
    refused = run("python", str(REPO / "tools/test.py"), CONFIG, "nowhere.pth", flag, cwd=tmp_path)

    assert refused.returncode == 3
    assert refused.stderr.strip() == message


@pytest.mark.parametrize("script", ["dist_train.sh", "dist_test.sh", "slurm_train.sh", "slurm_test.sh"])
def test_scripts_without_their_arguments_print_their_usage(tmp_path, script: str):
    result = run("bash", str(REPO / "tools" / script), cwd=tmp_path)

    assert result.returncode == 2 and result.stderr.startswith("usage: ")
