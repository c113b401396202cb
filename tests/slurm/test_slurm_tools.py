"""tools/slurm_train.sh and tools/slurm_test.sh as OpenMMLab's docs run them, on the session's real Slurm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
# Two tasks on the two one-CPU nodes; GRES= because the test cluster has no GPUs to ask for. Its node names
# resolve to nothing, so the first node's address is given.
SHAPE = {"GPUS": "2", "GPUS_PER_NODE": "1", "CPUS_PER_TASK": "1", "GRES": "", "MASTER_ADDR": "127.0.0.1",
         "OMP_NUM_THREADS": "1"}


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PATH": path, **SHAPE})


def test_slurm_train_then_slurm_test(slurm_cluster, tmp_path):
    config = str(REPO / "configs/digits_mlp.py")
    trained = run("bash", str(REPO / "tools/slurm_train.sh"), "debug", "digits", config, "wd",
                  "--cfg-options", "train_cfg.max_epochs=2", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = (tmp_path / "wd/train.log").read_text()
    assert "world size 2" in log and "training finished: " in log

    tested = run("bash", str(REPO / "tools/slurm_test.sh"), "debug", "digits-test", config,
                 "wd/last_checkpoint", "--work-dir", "wd/test", cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "accuracy/top1" in json.loads((tmp_path / "wd/test/metrics.json").read_text())["metrics"]
