"""Helpers to run `torchyard slurm` on the session's real Slurm (the `slurm_cluster` fixture, in
tests/conftest.py: tests/operator's Slurm-mode tests share it)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TORCHYARD = Path(sys.executable).with_name("torchyard")


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
    """The last validation record of the trainer's scalars.jsonl, but its wall-clock timestamp."""
    rows = [json.loads(line) for line in (work_dir / "scalars.jsonl").read_text().splitlines()]
    last = [row for row in rows if row["mode"] == "val"][-1]
    return {key: value for key, value in last.items() if key != "timestamp"}


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
