"""Checkpoint save/load: torchyard's crash-safe checkpoints vs a bare torch.save/torch.load of the same state.

Two states, each saved and loaded many times to the same directory (under work_dirs/, the disk checkpoints go
to), interleaved, medians reported:

    small   what the Runner saves for DigitsCNN: model + SGD momentum + meta (about 0.3 MB)
    large   a 16M-parameter model + momentum (128 MB), where the bytes dominate

Save methods (each writes a new file; ``os.sync()`` before each, untimed, so no method pays for the dirty
pages of the one before):

    bare            torch.save(state, path)                  (page cache only: not durable on power loss)
    bare + fsync    torch.save to an open file, flush, fsync  (durable bytes; a crash can leave a torn file)
    torchyard       the Runner's CheckpointManager (sync_in_background=True): save() writes a temp file and
                    renames it into place, then returns; a thread fsyncs file and directory and only then
                    moves the ``last_checkpoint`` pointer (no rotation: every method deletes its old file
                    untimed). Two times: until save() returns (what training waits for, vs bare) and until
                    wait() returns, when the checkpoint is durable and published (vs bare + fsync).

Load: ``torch.load(path, weights_only=True)`` vs ``CheckpointManager.load_resumable()`` (pointer file, then
load_checkpoint, which maps errors to messages), from the page cache. Target: torchyard within 1.1x of bare.
Nothing asserts on timing.

    bench/.venv/bin/python bench/checkpoint_io.py            # --rounds 7

The table is printed and written to bench/results.md, replacing that file's ``## checkpoint_io`` section;
``--json FILE`` also writes the numbers for bench/report.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from torchyard.trainer.checkpoint import CheckpointManager
from torchyard.trainer.models import DigitsCNN

from trainer_overhead import MODEL, SGD, write_section  # isort: skip

SECTION = "## checkpoint_io"
REPO = Path(__file__).resolve().parents[1]
SAVES = ("bare", "bare + fsync", "torchyard")
DURABLE = "torchyard until durable"
LOADS = ("bare", "torchyard")


def runner_state(model: torch.nn.Module) -> dict:
    """The shape of the Runner's checkpoint: meta, model and optimizer state (momentum filled by one step)."""
    optimizer = torch.optim.SGD(model.parameters(), **SGD)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    return {
        "meta": {"epoch": 3, "iter": 3000, "seed": 0, "torch": str(torch.__version__)},
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "message_hub": {"best": 0.97},
    }


def states() -> dict[str, dict]:
    torch.manual_seed(0)
    large = torch.nn.Sequential(*(torch.nn.Linear(2048, 2048) for _ in range(4)))  # 16.8M parameters
    return {"small": runner_state(DigitsCNN(**MODEL)), "large": runner_state(large)}


def save_bare(state: dict, path: Path) -> None:
    torch.save(state, path)


def save_bare_fsync(state: dict, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def timed(fn, *args) -> float:
    os.sync()
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure(name: str, state: dict, rounds: int, root: Path) -> dict:
    folder = root / name
    folder.mkdir()
    manager = CheckpointManager(folder / "torchyard", sync_in_background=True)  # no rotation, as for bare
    save: dict[str, list[float]] = {m: [] for m in (*SAVES, DURABLE)}
    load: dict[str, list[float]] = {m: [] for m in LOADS}
    bare_path = folder / "bare.pth"
    size = 0
    for i in range(rounds + 1):  # round 0 warms up the allocator, the page cache and the directories
        order = SAVES[i % len(SAVES) :] + SAVES[: i % len(SAVES)]
        for method in order:
            if method == "bare":
                bare_path.unlink(missing_ok=True)
                t = timed(save_bare, state, bare_path)
            elif method == "bare + fsync":
                bare_path.unlink(missing_ok=True)
                t = timed(save_bare_fsync, state, bare_path)
            else:
                for old in manager.work_dir.glob("iter_*.pth"):
                    old.unlink()
                os.sync()
                start = time.perf_counter()
                manager.save(state, f"iter_{i}.pth")
                t = time.perf_counter() - start
                manager.wait()
                if i:
                    save[DURABLE].append(time.perf_counter() - start)
            if i:
                save[method].append(t)
        size = bare_path.stat().st_size
        for method in LOADS if i % 2 else LOADS[::-1]:
            start = time.perf_counter()
            if method == "bare":
                torch.load(bare_path, map_location="cpu", weights_only=True)
            else:
                manager.load_resumable()
            if i:
                load[method].append(time.perf_counter() - start)
    shutil.rmtree(folder)
    save_ms = {m: statistics.median(v) * 1e3 for m, v in save.items()}
    load_ms = {m: statistics.median(v) * 1e3 for m, v in load.items()}
    return {
        "bytes": size,
        "save_ms": save_ms,
        "load_ms": load_ms,
        "save_ratio": save_ms["torchyard"] / save_ms["bare"],
        "save_ratio_fsync": save_ms[DURABLE] / save_ms["bare + fsync"],
        "load_ratio": load_ms["torchyard"] / load_ms["bare"],
    }


def report(results: dict[str, dict], args: argparse.Namespace, where: Path) -> str:
    lines = [
        SECTION,
        "",
        f"Medians of {args.rounds} interleaved rounds, each save to a new file in {where} "
        f"(`os.sync()` before each); loads from the page cache ({os.cpu_count()} CPUs, shared).",
        "",
        "| state | size | bare save (ms) | torchyard save returns (ms) | torchyard / bare | "
        "bare + fsync (ms) | torchyard durable (ms) | durable / bare + fsync | bare load (ms) | "
        "torchyard load (ms) | load ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        s, lo = r["save_ms"], r["load_ms"]
        lines.append(
            f"| {name} | {r['bytes'] / 2**20:.2f} MB | {s['bare']:.1f} | {s['torchyard']:.1f} | "
            f"{r['save_ratio']:.2f}x | {s['bare + fsync']:.1f} | {s[DURABLE]:.1f} | "
            f"{r['save_ratio_fsync']:.2f}x | {lo['bare']:.1f} | {lo['torchyard']:.1f} | "
            f"{r['load_ratio']:.2f}x |"
        )
    lines += [
        "",
        "- target: torchyard within 1.1x of bare torch.save / torch.load. Training waits only until save "
        "returns; the fsyncs that make it durable run beside the next steps (bench/README.md).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; medians are reported")
    parser.add_argument(
        "--dir",
        type=Path,
        default=REPO / "work_dirs",
        help="write the checkpoints under this folder (default: work_dirs/)",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here (for bench/report.py)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_checkpoint_", dir=args.dir) as tmp:
        results = {}
        for name, state in states().items():
            results[name] = measure(name, state, args.rounds, Path(tmp))
            print(f"{name}: {results[name]}", file=sys.stderr)
    where = args.dir
    with contextlib.suppress(ValueError):
        where = where.resolve().relative_to(REPO)
    text = report(results, args, where)
    print(text, end="")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
