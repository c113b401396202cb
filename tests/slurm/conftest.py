"""A real single-host Slurm for the session (tests/slurm/cluster.sh), and helpers to run `torchyard slurm`.

The cluster starts once, at the first test that asks for it, and stops at the end of the session. It needs
root (apt-get, munged, slurmd) unless Slurm is already installed and running; otherwise those tests skip.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = Path(__file__).with_name("cluster.sh")
TORCHYARD = Path(sys.executable).with_name("torchyard")


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


def workspace(path: Path) -> Path:
    """A submit dir like a checkout: configs/ (linked) and job files are relative to it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "configs").symlink_to(REPO / "configs")
    return path


@pytest.fixture
def submit_dir(tmp_path) -> Path:
    return workspace(tmp_path / "submit")


def example(name: str, **spec) -> dict:
    """examples/<name> as a dict, spec fields replaced (camelCase); slurm.* merged into the example's."""
    data = yaml.safe_load((REPO / "examples" / name).read_text())
    spec = copy.deepcopy(spec)
    slurm = {**data["spec"].get("slurm", {}), **spec.pop("slurm", {})}
    data["spec"].update(spec, slurm=slurm)
    return data


def write_job(directory: Path, data: dict | list[dict], name: str = "job.yaml") -> Path:
    path = directory / name
    docs = data if isinstance(data, list) else [data]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def torchyard(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None):
    """Run the torchyard CLI as a user would; the CompletedProcess (not checked)."""
    return subprocess.run(
        [str(TORCHYARD), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def slurm_state(job_id: str) -> tuple[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    state, _, reason = out.partition("|")
    return state, reason


def wait_until(predicate, timeout: float = 300, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def val_metrics(work_dir: Path) -> dict:
    """The last validation record of the trainer's scalars.jsonl."""
    rows = [json.loads(line) for line in (work_dir / "scalars.jsonl").read_text().splitlines()]
    return [row for row in rows if row["mode"] == "val"][-1]


@pytest.fixture(scope="session")
def yard():
    """The helpers above, for test modules (conftest modules are not importable under importlib mode)."""
    return SimpleNamespace(
        example=example,
        write_job=write_job,
        torchyard=torchyard,
        slurm_state=slurm_state,
        wait_until=wait_until,
        val_metrics=val_metrics,
        workspace=workspace,
    )
