"""DDP scaling on CPU: throughput with 2 processes / with 1, for torchyard's Runner and for a bare DDP loop.

The same training as trainer_overhead.py (DigitsCNN, batch 32 per process, SGD, cosine LR per iteration, a log
line every 50 iterations), launched by ``torchrun --standalone`` with 1 and with 2 processes, gloo,
``OMP_NUM_THREADS=1`` and ``torch.set_num_threads(1)`` in every process. The bare loop wraps the model in
DistributedDataParallel and shards with DistributedSampler, as a hand-written DDP script would; torchyard runs
its Runner with ``launcher="pytorch"``. Each process times its own iterations after the warm-up ones and the
job's throughput is the sum over its processes (weak scaling: the global batch grows with the processes).
Reported per method: samples/s with 1 and 2 processes (medians over interleaved rounds), the scaling factor
2-proc/1-proc (ideal 2.0 on 2 free cores) and torchyard's scaling / bare scaling (target >= 0.97x). With one
process both train the plain model (no DDP wrapper), as torchyard's Runner does when WORLD_SIZE is 1.

    bench/.venv/bin/python bench/ddp_scaling.py            # --rounds 3 --iters 300 --warmup 20

The table is printed and written to bench/results.md, replacing that file's ``## ddp_scaling`` section;
``--json FILE`` also writes the numbers for bench/report.py. Nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer_overhead import BATCH_SIZE, ETA_MIN, MODEL, SEED, SGD, write_section

SECTION = "## ddp_scaling"
METHODS = ("bare", "torchyard")
PROCS = (1, 2)


# ---- worker: one process of a torchrun job ---------------------------------------------------------------


def worker(method: str, iters: int, warmup: int, log_interval: int, out: Path) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    total = warmup + iters
    marks: dict[str, float] = {}

    def tick(step: int) -> None:
        if step in (warmup, total):
            marks["start" if step == warmup else "end"] = time.perf_counter()

    if method == "bare":
        dataset_len, world = _bare(total, log_interval, tick)
    else:
        dataset_len, world = _torchyard(total, log_interval, tick, Path(out).parent)
    rank = int(os.environ["RANK"])
    per_rank = math.ceil(dataset_len / world)  # DistributedSampler pads every rank to this many samples
    per_epoch = math.ceil(per_rank / BATCH_SIZE)
    samples = sum(min(BATCH_SIZE, per_rank - (i % per_epoch) * BATCH_SIZE) for i in range(warmup, total))
    seconds = marks["end"] - marks["start"]
    Path(f"{out}.{rank}").write_text(json.dumps({"samples": samples, "seconds": seconds}))
    if dist.is_initialized():
        dist.destroy_process_group()
    from torchyard.trainer.cli import exit_process

    exit_process(0)  # both methods, as torchyard-train does: see exit_process for the shutdown abort


def _bare(total: int, log_interval: int, tick) -> tuple[int, int]:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from torchyard.trainer.data import DigitsDataset
    from torchyard.trainer.models import DigitsCNN

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(SEED + rank)
    dataset = DigitsDataset(split="train")
    sampler = DistributedSampler(dataset, shuffle=True, seed=SEED)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, sampler=sampler, num_workers=0)
    torch.manual_seed(SEED)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    model = DigitsCNN(**MODEL)
    if world > 1:  # as torchyard's Runner does: one process trains the plain model, without DDP's hooks
        model = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), **SGD)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=ETA_MIN)
    model.train()
    step = epoch = 0
    while step < total:
        sampler.set_epoch(epoch)
        for batch in loader:
            loss = model(batch, mode="loss")["loss"]  # through DDP's forward, which arms the gradient sync
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % log_interval == 0 and rank == 0:
                lr = scheduler.get_last_lr()[0]
                print(f"iter {step} loss {loss.item():.4f} lr {lr:.4g}", file=sys.stderr)
            tick(step)
            if step >= total:
                break
        epoch += 1
    return len(dataset), world


def _torchyard(total: int, log_interval: int, tick, work_dir: Path) -> tuple[int, int]:
    from torchyard.trainer.config import Config
    from torchyard.trainer.hooks import Hook
    from torchyard.trainer.runner import Runner

    class ClockHook(Hook):
        priority = 100  # after every built-in hook

        def after_train_iter(self, runner, losses) -> None:
            tick(runner.iter)

    cfg = Config(
        dict(
            work_dir=str(work_dir / "work"),
            launcher="pytorch",
            model=dict(type="DigitsCNN", **MODEL),
            train_dataloader=dict(
                batch_size=BATCH_SIZE,
                num_workers=0,
                sampler=dict(shuffle=True),
                dataset=dict(type="DigitsDataset", split="train"),
            ),
            optim_wrapper=dict(optimizer=dict(type="SGD", **SGD)),
            param_scheduler=[dict(type="CosineAnnealingLR", by_epoch=False, eta_min=ETA_MIN)],
            train_cfg=dict(by_epoch=False, max_iters=total),
            default_hooks=dict(logger=dict(type="LoggerHook", interval=log_interval), checkpoint=None),
            randomness=dict(seed=SEED, deterministic=False),
        )
    )
    runner = Runner(cfg)
    runner.hooks.append(ClockHook())
    runner.train()
    dataset_len, world = len(runner.train_dataloader.dataset), runner.env.world_size
    runner.close()
    return dataset_len, world


# ---- driver: launch the jobs, interleaved ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(method: str, nproc: int, args: argparse.Namespace) -> float:
    """One torchrun job; its throughput in samples/s (the sum over its processes)."""
    with tempfile.TemporaryDirectory(prefix=f"bench_ddp_{method}{nproc}_") as tmp:
        out = Path(tmp) / "rate"
        argv = [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            f"--nproc-per-node={nproc}",
            f"--rdzv-endpoint=127.0.0.1:{free_port()}",
            __file__,
            "--worker",
            method,
            "--iters",
            str(args.iters),
            "--warmup",
            str(args.warmup),
            "--log-interval",
            str(args.log_interval),
            "--out",
            str(out),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(nproc)]
        return sum(r["samples"] / r["seconds"] for r in ranks)


def measure(args: argparse.Namespace) -> dict:
    jobs = [(method, nproc) for method in METHODS for nproc in PROCS]
    rates: dict[str, list[float]] = {f"{m}/{n}": [] for m, n in jobs}
    for round_ in range(args.rounds):
        order = jobs[round_ % len(jobs) :] + jobs[: round_ % len(jobs)]  # no job always first
        for method, nproc in order:
            rate = launch(method, nproc, args)
            rates[f"{method}/{nproc}"].append(rate)
            print(
                f"round {round_ + 1}/{args.rounds} {method} x{nproc}: {rate:.0f} samples/s", file=sys.stderr
            )
    median = {key: statistics.median(values) for key, values in rates.items()}
    scaling = {m: median[f"{m}/2"] / median[f"{m}/1"] for m in METHODS}
    # Scaling per round too (each round's two jobs ran close together), for the spread.
    round_scaling = {
        m: [b / a for a, b in zip(rates[f"{m}/1"], rates[f"{m}/2"], strict=True)] for m in METHODS
    }
    return {
        "rates": rates,
        "median": median,
        "scaling": scaling,
        "round_scaling": round_scaling,
        "ratio": scaling["torchyard"] / scaling["bare"],
        "two_proc_ratio": median["torchyard/2"] / median["bare/2"],
        "rounds": args.rounds,
        "iters": args.iters,
    }


def report(result: dict, args: argparse.Namespace) -> str:
    median, scaling = result["median"], result["scaling"]
    lines = [
        SECTION,
        "",
        f"DigitsCNN, batch {BATCH_SIZE} per process, {args.iters} timed iterations after {args.warmup} "
        f"warm-up ones, torchrun --standalone, gloo, OMP_NUM_THREADS=1; medians of {args.rounds} "
        f"interleaved rounds ({os.cpu_count()} CPUs, shared). Throughput: the sum over the job's processes.",
        "",
        "| method | 1 process (samples/s) | 2 processes (samples/s) | scaling 2/1 | per round |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {m} | {median[f'{m}/1']:.0f} | {median[f'{m}/2']:.0f} | {scaling[m]:.2f}x | "
            f"{', '.join(f'{s:.2f}' for s in result['round_scaling'][m])} |"
            for m in METHODS
        ),
        "",
        f"- torchyard scaling / bare DDP scaling: {result['ratio']:.3f}x (target >= 0.97x)",
        f"- torchyard / bare DDP throughput with 2 processes: {result['two_proc_ratio']:.3f}x",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--iters", type=int, default=300, help="timed iterations per process")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations before them")
    parser.add_argument("--log-interval", type=int, default=50, help="iterations between log lines")
    parser.add_argument("--json", type=Path, help="also write the numbers here (for bench/report.py)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.iters, args.warmup, args.log_interval, Path(args.out))
        return
    result = measure(args)
    text = report(result, args)
    print(text, end="")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
