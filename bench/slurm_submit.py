"""Slurm submit overhead: time from "submit" to RUNNING, `torchyard slurm submit` vs a hand-written sbatch.

Both submit an equivalent tiny 2-node job (one task per node) to the same cluster, interleaved for
``--rounds`` rounds; each job is cancelled as soon as it is RUNNING. Reported per method (medians):

    submit      wall time of the submit command itself (torchyard: Python start, validation, render, sbatch)
    to RUNNING  from starting the submit command until squeue shows RUNNING (polled every 20 ms)

and the ratio and overhead of torchyard's path. Nothing asserts on timing.

    tests/slurm/cluster.sh start && export SLURM_CONF=/tmp/torchyard-slurm/slurm.conf
    .venv/bin/python bench/slurm_submit.py                 # --rounds 5; --start-cluster starts and stops it

The table is printed and written to bench/results.md, replacing that file's ``## slurm_submit`` section;
``--json FILE`` also writes the numbers for bench/report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests/slurm/cluster.sh"
TORCHYARD = Path(sys.executable).with_name("torchyard")
RESULTS = Path(__file__).with_name("results.md")
SECTION = "## slurm_submit"
JOB = """apiVersion: torchyard.dev/v1alpha1
kind: TrainJob
metadata: {name: bench-submit}
spec:
  image: torchyard/trainer:0.1.0
  config: configs/digits_mlp.py
  nodes: 2
  workDir: {path: work_dirs/bench-submit}
"""
HAND = """#!/bin/bash
#SBATCH --job-name=bench-hand --nodes=2 --ntasks-per-node=1
#SBATCH --output=work_dirs/bench-hand/slurm-%j.out --error=work_dirs/bench-hand/slurm-%j.err
srun --nodes=2 --ntasks-per-node=1 sleep 60
"""


def state(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def settle_nodes(timeout: float = 60) -> None:
    """Wait until no node is still COMPLETING the job before: a job submitted meanwhile waits for the next
    scheduler pass (~0.9 s here) instead of starting at once, whichever way it was submitted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30)
        if "comp" not in out.stdout:
            return
        time.sleep(0.05)


def timed_submit(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds the submit command took, seconds until RUNNING); the job is cancelled afterwards."""
    settle_nodes()
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    submitted = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr}")
    job_id = result.stdout.strip().splitlines()[0].split(";")[0]
    try:
        deadline = time.monotonic() + 120
        while state(job_id) != "RUNNING":
            if time.monotonic() > deadline:
                sys.exit(f"job {job_id} did not start within 120 s ({state(job_id)})")
            time.sleep(0.02)
        running = time.perf_counter() - start
    finally:
        subprocess.run(["scancel", job_id], timeout=30, check=False)
    while state(job_id) not in ("CANCELLED", "COMPLETED", "FAILED", ""):  # free the nodes for the next one
        time.sleep(0.05)
    return submitted, running


def run(rounds: int) -> tuple[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "configs").symlink_to(REPO / "configs")
        (cwd / "work_dirs/bench-hand").mkdir(parents=True)
        (cwd / "job.yaml").write_text(JOB)
        (cwd / "hand.sbatch").write_text(HAND)
        methods = {
            "torchyard slurm submit": [str(TORCHYARD), "slurm", "submit", "job.yaml"],
            "hand-written sbatch": ["sbatch", "--parsable", "hand.sbatch"],
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
        timed_submit(methods["hand-written sbatch"], cwd)  # warm up the controller and the page cache
        for round_ in range(rounds):
            for name, argv in list(methods.items())[:: 1 if round_ % 2 else -1]:  # alternate the order
                times[name].append(timed_submit(argv, cwd))
    medians = {
        name: (statistics.median(t[0] for t in rows), statistics.median(t[1] for t in rows))
        for name, rows in times.items()
    }
    ours, hand = medians["torchyard slurm submit"], medians["hand-written sbatch"]
    lines = [
        SECTION,
        "",
        f"Submit -> RUNNING of a 2-node job on tests/slurm/cluster.sh, median of {rounds} interleaved rounds "
        f"({os.cpu_count()} CPUs); each submit waits until no node is still completing the job before.",
        "",
        "| method | submit command (ms) | submit -> RUNNING (ms) |",
        "|---|---:|---:|",
        *(f"| {name} | {s * 1000:.0f} | {r * 1000:.0f} |" for name, (s, r) in medians.items()),
        "",
        "to RUNNING per round (ms): "
        + "; ".join(f"{name} {', '.join(f'{t[1] * 1000:.0f}' for t in ts)}" for name, ts in times.items()),
        "",
        f"torchyard / hand-written to RUNNING: {ours[1] / hand[1]:.2f}x, "
        f"overhead {(ours[1] - hand[1]) * 1000:+.0f} ms "
        f"(submit command alone: {(ours[0] - hand[0]) * 1000:+.0f} ms).",
    ]
    numbers = {
        "torchyard_submit": ours[0],
        "torchyard_running": ours[1],
        "hand_submit": hand[0],
        "hand_running": hand[1],
        "rounds": rounds,
        "times": times,
    }
    return "\n".join(lines) + "\n", numbers


def write_section(text: str) -> None:
    """Replace this bench's section of results.md (its heading up to the next ``## ``); keep the rest."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    new = (
        pattern.sub(lambda _: text + "\n", old, count=1)
        if pattern.search(old)
        else old.rstrip() + "\n\n" + text
    )
    RESULTS.write_text(new.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument(
        "--start-cluster", action="store_true", help="start tests/slurm/cluster.sh, stop it after"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here (for bench/report.py)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args(argv)
    if args.start_cluster:
        out = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, check=True).stdout
        os.environ["SLURM_CONF"] = re.search(r"SLURM_CONF=(\S+)", out).group(1)
    try:
        text, numbers = run(args.rounds)
    finally:
        if args.start_cluster:
            subprocess.run([str(CLUSTER), "stop"], capture_output=True, check=False)
    print(text, end="")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=1))
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
