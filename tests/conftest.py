"""Fixtures shared across test folders.

`slurm_cluster`: a real single-host Slurm (tests/slurm/cluster.sh) for the session, used by tests/slurm and
by the operator's Slurm-mode tests in tests/operator. It starts once, at the first test that asks for it,
and stops at the end of the session. It needs root (apt-get, munged, slurmd) unless Slurm is already
installed and running; otherwise those tests skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLUSTER = Path(__file__).parent / "slurm" / "cluster.sh"


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start tests/slurm/cluster.sh once; SLURM_CONF points at it for the session."""
    if os.geteuid() != 0 and shutil.which("slurmctld") is None:
        pytest.skip("a real Slurm needs root (to apt-get install and start it) or an installed one")
    started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.fail(f"cluster.sh start failed:\n{started.stderr}{started.stdout}")
    conf = next(line.split("=", 1)[1] for line in started.stdout.splitlines() if "SLURM_CONF=" in line)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    subprocess.run([str(CLUSTER), "stop"], capture_output=True, text=True, timeout=300)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


def pytest_sessionfinish(session, exitstatus):
    """Stop the real control plane if this session started it (tests/operator/operator_harness.py)."""
    harness = sys.modules.get(f"{__package__}.operator.operator_harness")
    if harness is not None:
        harness.stop_control_plane()
