"""Run every benchmark, then write the summary (bench/results.md) and the chart (bench/results.png).

What `make bench` runs, with the bench environment's interpreter (mmengine lives only there):

    bench/.venv/bin/python bench/run_all.py          # --quick: fewer rounds, to try the pipeline (~3 min)

Each bench runs as its own process and writes its section of results.md and its numbers to bench/.out/; a
bench that cannot run (no mmengine, no Slurm) is recorded with the reason, which the summary shows. The Slurm
bench needs the real Slurm of tests/slurm/cluster.sh: as root it is started when it is not running, and
stopped afterwards only if this script started it (other tests may be using it). About 7 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / ".out"
CLUSTER = REPO / "tests/slurm/cluster.sh"

# name -> (arguments for a full run, arguments for --quick)
BENCHES = {
    "trainer_overhead": ([], ["--rounds", "2", "--iters", "200"]),
    "framework_overhead": ([], ["--rounds", "1", "--iters", "300", "--starts", "1"]),
    "ddp_scaling": (["--rounds", "5"], ["--rounds", "1", "--iters", "100"]),
    "checkpoint_io": ([], ["--rounds", "3"]),
    "operator_latency": ([], ["--single", "10", "--burst", "50", "--no-kubeflow"]),
    "slurm_submit": ([], ["--rounds", "2"]),
}


def slurm_up() -> tuple[bool, str, bool]:
    """(usable, reason if not, whether this call started it); sets SLURM_CONF for the Slurm bench."""
    if not CLUSTER.exists():
        return False, f"{CLUSTER.relative_to(REPO)} is missing", False
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True, timeout=60)
    started = False
    if status.returncode != 0:
        if os.geteuid() != 0:
            return False, "tests/slurm/cluster.sh needs root to start Slurm (run `make bench` as root)", False
        print("bench: starting Slurm (tests/slurm/cluster.sh start)", file=sys.stderr)
        status = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
        if status.returncode != 0:
            return False, f"tests/slurm/cluster.sh start failed: {status.stderr.strip()[-300:]}", False
        started = True
    conf = re.search(r"SLURM_CONF=(\S+)", status.stdout + status.stderr)
    if conf:
        os.environ["SLURM_CONF"] = conf.group(1)
    if not shutil.which("sbatch"):
        return False, "sbatch is not on PATH", started
    return True, "", started


def run(name: str, extra: list[str]) -> None:
    out = OUT / f"{name}.json"
    argv = [sys.executable, str(HERE / f"{name}.py"), "--json", str(out), *extra]
    print(f"bench: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=REPO)
    took = time.perf_counter() - started
    if result.returncode != 0:
        out.write_text(
            json.dumps({"unavailable": f"{name}.py failed (exit {result.returncode}); see its output"})
        )
    print(f"bench: {name} took {took:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds: check the pipeline, not the numbers"
    )
    parser.add_argument("--only", help="comma-separated benches to run (default: all)")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(BENCHES)
    if args.only is None and OUT.exists():
        shutil.rmtree(OUT)  # a full run reports only what it measured
    OUT.mkdir(exist_ok=True)
    started = time.perf_counter()
    for name in chosen:
        full, quick = BENCHES[name]
        if name != "slurm_submit":
            run(name, quick if args.quick else full)
            continue
        usable, reason, ours = slurm_up()
        try:
            if usable:
                run(name, quick if args.quick else full)
            else:
                print(f"bench: slurm_submit skipped: {reason}", file=sys.stderr)
                (OUT / f"{name}.json").write_text(json.dumps({"unavailable": reason}))
        finally:
            if ours:
                subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=120, check=False)
    command = "make bench" + (" (run_all.py --quick)" if args.quick else "")
    subprocess.run([sys.executable, str(HERE / "report.py"), str(OUT), "--command", command], check=True)
    print(f"bench: all done in {(time.perf_counter() - started) / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
