"""A job slurmctld has forgotten (MinJobAge after its end) is still known, from sacct: here the job
completion log (sacct -c, JobCompType=jobcomp/filetxt, as cluster.sh configures), on the session's real
Slurm; a cluster with slurmdbd answers plain sacct the same way."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from torchyard.operator.slurm.client import SlurmClient

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

# slurmctld purges finished jobs older than MinJobAge in a pass about once a minute
FORGET_TIMEOUT = 180.0


@contextlib.contextmanager
def forgetful(conf: str):
    """MinJobAge=2 for the duration (scontrol reconfigure), then the cluster's own value back."""
    path = Path(conf)
    original = path.read_text()
    path.write_text(re.sub(r"^MinJobAge=\d+$", "MinJobAge=2", original, flags=re.MULTILINE))
    subprocess.run(["scontrol", "reconfigure"], check=True, timeout=30)
    try:
        yield
    finally:
        path.write_text(original)
        subprocess.run(["scontrol", "reconfigure"], check=True, timeout=30)


def forgotten(job_id: str) -> bool:
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    return "Invalid job id specified" in shown.stderr


def test_a_forgotten_job_ends_as_sacct_says(slurm_cluster, tmp_path):
    client = SlurmClient()
    scripts = {}
    for name, code in (("ok", 0), ("bad", 3)):
        scripts[name] = tmp_path / f"{name}.sh"
        header = f"#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --output=/dev/null\n"
        scripts[name].write_text(f"{header}exit {code}\n")
    with forgetful(slurm_cluster):
        ids = {name: client.sbatch(script, cwd=tmp_path) for name, script in scripts.items()}
        deadline = time.monotonic() + FORGET_TIMEOUT
        while not all(forgotten(job_id) for job_id in ids.values()):
            assert time.monotonic() < deadline, f"slurmctld still knows {ids} after {FORGET_TIMEOUT:g} s"
            time.sleep(2)

    assert client.show_job(ids["ok"]) == {"JobId": ids["ok"], "JobState": "COMPLETED", "ExitCode": "0:0",
                                          "Reason": "None"}
    failed = client.show_job(ids["bad"])
    assert (failed["JobState"], failed["ExitCode"]) == ("FAILED", "3:0")
    assert client.show_job("999999") is None  # neither scontrol nor the log knows it
