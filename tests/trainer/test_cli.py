"""The trainer's command lines (trainer/cli.py): --version, help that answers before torch is imported
(the import alone takes seconds), and --print-config."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from .runner_helpers import REPO


@pytest.mark.parametrize(("module", "prog"), [("train", "torchyard-train"), ("test", "torchyard-test")])
def test_version(module, prog):
    done = subprocess.run([sys.executable, "-m", f"torchyard.trainer.{module}", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, f"{prog} {metadata.version('torchyard')}")


@pytest.mark.parametrize("module", ["train", "test"])
def test_help_answers_without_importing_torch(module):
    code = (
        "import contextlib, sys\n"
        f"from torchyard.trainer.{module} import parse_args\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        "    parse_args(['--help'])\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


def test_print_config_shows_what_the_run_would_use_and_runs_nothing(tmp_path):
    from torchyard.trainer.train import main

    work_dir = tmp_path / "wd"
    argv = ["configs/digits_cnn.py", "--print-config", "--work-dir", str(work_dir), "--seed", "3",
            "--cfg-options", "train_cfg.max_epochs=7"]
    code = f"from torchyard.trainer.train import main; main({argv!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'max_epochs': 7" in done.stdout and "'seed': 3" in done.stdout
    assert f"work_dir = '{work_dir}'" in done.stdout
    assert not work_dir.exists()  # nothing built: no work dir, no log, no checkpoint
    assert main(["configs/no-such.py", "--print-config"]) == 3  # a config error stays exit 3


def test_repeated_cfg_options_merge_as_in_mmengine():
    # a sweep's run adds its own --cfg-options after the job's (operator/slurm/render.py)
    argv = ["configs/digits_cnn.py", "--print-config", "--cfg-options", "train_cfg.max_epochs=7",
            "optim_wrapper.optimizer.lr=0.5", "--cfg-options", "optim_wrapper.optimizer.lr=0.25"]
    code = f"from torchyard.trainer.train import main; main({argv!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'max_epochs': 7" in done.stdout and "'lr': 0.25" in done.stdout
