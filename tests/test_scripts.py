"""Every shell script of the project passes shellcheck (sourced files followed with -x), so the scripts
that build images and start clusters fail on the lines a reviewer would flag, not on a user's machine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shell_scripts() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    paths = [path for path in tracked.stdout.splitlines() if (REPO / path).is_file()]
    # golden sbatch scripts are checked where they are rendered (tests/slurm/test_slurm_units.py)
    scripts = [p for p in paths if p.endswith(".sh") and not p.startswith("tests/operator/golden/")]
    bash = b"#!/usr/bin/env bash"
    scripts += [p for p in paths if not p.endswith(".sh") and (REPO / p).read_bytes().startswith(bash)]
    return sorted(scripts)


def test_every_shell_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: run `make system-deps` (apt-get install shellcheck)")
    scripts = shell_scripts()
    assert {"scripts/cluster/kubelet.sh", "images/build.sh", ".ci/run"} <= set(scripts)
    result = subprocess.run([shellcheck, "-x", *scripts], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
