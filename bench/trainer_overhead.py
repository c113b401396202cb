"""Trainer overhead: samples/s of one small training job run three ways, to see what a trainer costs per step.

    1. bare       a hand-written PyTorch loop: DataLoader, forward, cross-entropy, backward, SGD step,
                  per-iteration LR scheduler step;
    2. torchyard  torchyard's Runner built from a config dict equivalent to the bare loop;
    3. mmengine   mmengine's Runner with the same model, data, optimizer and scheduler, epoch-based
                  (``--methods ...,mmengine_iters`` adds its iteration-based loop, which sleeps 2 s at
                  every epoch boundary).

All three train DigitsCNN on DigitsDataset("train") with batch size 32, shuffled, num_workers=0, SGD (lr 0.1,
momentum 0.9, nesterov, weight decay 1e-4) and a cosine LR stepped every iteration; no validation, no
checkpoints, a log line every ``--log-interval`` iterations (the console output goes to a file in a temporary
work dir). The first ``--warmup`` iterations are not timed. The methods run interleaved for ``--rounds``
rounds and each reports its median, because the machine is small, shared and noisy. Beside samples per
wall-clock second it reports samples per CPU second of the process, which other tenants disturb less.
All use ``torch.set_num_threads(--threads)``. Nothing asserts on timing.

mmengine lives only in the bench's own environment, never in the project's:

    python3 -m venv bench/.venv
    bench/.venv/bin/pip install torch==2.13.0           # always this pin: a bare torch pulls CUDA wheels
    bench/.venv/bin/pip install mmengine==0.10.7
    bench/.venv/bin/pip install -e '.[trainer]' torch==2.13.0
    bench/.venv/bin/python bench/trainer_overhead.py    # --iters 600 --warmup 20 --rounds 5 --threads 1

Without mmengine (e.g. ``.venv/bin/python bench/trainer_overhead.py``) its column says why it is unavailable.
The table is printed and written to bench/results.md, replacing that file's ``## trainer_overhead`` section.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from torchyard.trainer.config import Config
from torchyard.trainer.data import DigitsDataset
from torchyard.trainer.hooks import Hook
from torchyard.trainer.models import DigitsCNN
from torchyard.trainer.runner import Runner

BATCH_SIZE = 32
MODEL = dict(channels=32, num_classes=10, dropout=0.1)
SGD = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
ETA_MIN = 1e-4
SEED = 0
RESULTS = Path(__file__).with_name("results.md")
SECTION = "## trainer_overhead"


class Clock:
    """Wall and CPU time at the end of the last warm-up iteration and of the last one (iterations from 1)."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total
        self.start = self.end = (0.0, 0.0)

    def tick(self, step: int) -> None:
        if step == self.warmup:
            self.start = (time.perf_counter(), time.process_time())
        elif step == self.total:
            self.end = (time.perf_counter(), time.process_time())

    def rates(self, dataset_len: int) -> tuple[float, float]:
        """Samples per wall-clock second and per CPU second of this process, over the timed iterations."""
        per_epoch = -(-dataset_len // BATCH_SIZE)
        samples = sum(
            min(BATCH_SIZE, dataset_len - (i % per_epoch) * BATCH_SIZE)
            for i in range(self.warmup, self.total)
        )
        return samples / (self.end[0] - self.start[0]), samples / (self.end[1] - self.start[1])


def make_loader(dataset: DigitsDataset) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        num_workers=0,
        drop_last=False,
        generator=torch.Generator().manual_seed(SEED),
    )


# ---- 1. bare PyTorch -------------------------------------------------------------------------------------


def run_bare(clock: Clock, work_dir: Path, log_interval: int) -> tuple[float, float]:
    torch.manual_seed(SEED)
    dataset = DigitsDataset(split="train")
    loader = make_loader(dataset)
    model = DigitsCNN(**MODEL)
    optimizer = torch.optim.SGD(model.parameters(), **SGD)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=clock.total, eta_min=ETA_MIN)
    model.train()
    step = 0
    while step < clock.total:
        for batch in loader:
            logits = model.logits(batch["inputs"])
            loss = F.cross_entropy(logits, batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % log_interval == 0:
                print(f"iter {step} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.4g}")
            clock.tick(step)
            if step >= clock.total:
                break
    return clock.rates(len(dataset))


# ---- 2. torchyard ----------------------------------------------------------------------------------------


class TorchyardClockHook(Hook):
    priority = 100  # after every built-in hook

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def after_train_iter(self, runner, losses) -> None:
        self.clock.tick(runner.iter)


def run_torchyard(clock: Clock, work_dir: Path, log_interval: int) -> tuple[float, float]:
    cfg = Config(
        dict(
            work_dir=str(work_dir),
            model=dict(type="DigitsCNN", **MODEL),
            train_dataloader=dict(
                batch_size=BATCH_SIZE,
                num_workers=0,
                sampler=dict(shuffle=True),
                dataset=dict(type="DigitsDataset", split="train"),
            ),
            optim_wrapper=dict(optimizer=dict(type="SGD", **SGD)),
            param_scheduler=[dict(type="CosineAnnealingLR", by_epoch=False, eta_min=ETA_MIN)],
            train_cfg=dict(by_epoch=False, max_iters=clock.total),
            default_hooks=dict(logger=dict(type="LoggerHook", interval=log_interval), checkpoint=None),
            randomness=dict(seed=SEED, deterministic=False),
        )
    )
    runner = Runner(cfg)
    runner.hooks.append(TorchyardClockHook(clock))
    runner.train()
    runner.close()
    return clock.rates(len(runner.train_dataloader.dataset))


# ---- 3. mmengine -----------------------------------------------------------------------------------------


def mmengine_unavailable() -> str | None:
    try:
        import mmengine.model
        import mmengine.runner  # noqa: F401 - importing is the check
    except Exception as err:  # any failure to import means "cannot compare"; say why
        return f"{type(err).__name__}: {err}"
    return None


def run_mmengine(
    clock: Clock, work_dir: Path, log_interval: int, by_epoch: bool = True
) -> tuple[float, float]:
    from mmengine.hooks import Hook as MMHook
    from mmengine.model import BaseModel as MMBaseModel
    from mmengine.runner import Runner as MMRunner

    class MMDigitsCNN(MMBaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.net = DigitsCNN(**MODEL)

        def forward(self, inputs, targets=None, index=None, mode="tensor"):
            logits = self.net.logits(inputs)
            if mode == "loss":
                return {"loss": F.cross_entropy(logits, targets)}
            return logits

    class MMClockHook(MMHook):
        priority = "LOWEST"

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            clock.tick(runner.iter + 1)  # mmengine counts iterations from 0 and increments after this hook

    torch.manual_seed(SEED)
    dataset = DigitsDataset(split="train")
    loader = make_loader(dataset)
    runner = MMRunner(
        model=MMDigitsCNN(),
        work_dir=str(work_dir),
        experiment_name=f"trainer_overhead_{work_dir.name}",  # unique: mmengine keys global loggers by it
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type="SGD", **SGD)),
        param_scheduler=dict(
            type="CosineAnnealingLR",
            by_epoch=False,
            begin=0,
            end=clock.total,
            T_max=clock.total,
            eta_min=ETA_MIN,
        ),
        # Epoch-based by default: mmengine's IterBasedTrainLoop sleeps 2 s at every epoch boundary (one digits
        # epoch is 45 iterations), which swamps the per-step cost; "mmengine_iters" measures that loop. The
        # clock stops at clock.total; the rest of the last epoch runs untimed.
        train_cfg=dict(by_epoch=True, max_epochs=-(-clock.total // len(loader)), val_interval=10**6)
        if by_epoch
        else dict(by_epoch=False, max_iters=clock.total, val_interval=10**6),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=log_interval), checkpoint=None),
        custom_hooks=[MMClockHook()],
        randomness=dict(seed=SEED),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo")),
        default_scope=None,
    )
    runner.train()
    return clock.rates(len(dataset))


# ---- measurement and report ------------------------------------------------------------------------------

METHODS = {
    "bare": run_bare,
    "torchyard": run_torchyard,
    "mmengine": run_mmengine,
    "mmengine_iters": functools.partial(run_mmengine, by_epoch=False),
}
DEFAULT_METHODS = "bare,torchyard,mmengine"


def measure(name: str, args: argparse.Namespace) -> tuple[float, float]:
    clock = Clock(args.warmup, args.warmup + args.iters)
    gc.collect()
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as tmp:
        work_dir = Path(tmp)
        with open(work_dir / "console.log", "w") as console, contextlib.redirect_stdout(console):
            torch.set_num_threads(args.threads)
            return METHODS[name](clock, work_dir, args.log_interval)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{model.group(1) if model else platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores "
        f"({usable} usable), Python {platform.python_version()}, torch {torch.__version__}"
    )


def command() -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return f"{python} {' '.join(sys.argv)}"


Rates = dict[str, list[tuple[float, float]]]  # method -> per round (samples/s, samples/CPU-s)


def report(rates: Rates, unavailable: str | None, args: argparse.Namespace) -> str:
    """Medians, as asked of a noisy machine, and the best round: contention only ever slows a run down."""
    wall = {name: statistics.median(r[0] for r in runs) for name, runs in rates.items()}
    best = {name: max(r[0] for r in runs) for name, runs in rates.items()}
    cpu = {name: statistics.median(r[1] for r in runs) for name, runs in rates.items()}
    lines = [
        SECTION,
        "",
        f"Machine: {machine()}; torch.set_num_threads({args.threads}) for every method.",
        f"DigitsCNN, batch {BATCH_SIZE}, {args.iters} timed iterations after {args.warmup} warm-up ones, "
        f"a log line every {args.log_interval}; {args.rounds} interleaved rounds. samples/CPU-s counts this "
        "process's CPU time, which other tenants of a shared machine disturb less.",
        f"Command: `{command()}`",
        "",
        "| method | samples/s median | vs bare | samples/s best | vs bare | samples/CPU-s median | vs bare |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in METHODS:
        if name not in rates and name != "mmengine":
            continue
        if name not in rates:
            lines.append(f"| {name} | unavailable: {unavailable} | | | | | |")
            continue
        lines.append(
            f"| {name} | {wall[name]:.0f} | {wall[name] / wall['bare']:.3f}x | {best[name]:.0f} | "
            f"{best[name] / best['bare']:.3f}x | {cpu[name]:.0f} | {cpu[name] / cpu['bare']:.3f}x |"
        )
    lines.append("")
    lines.append(
        "samples/s per round: "
        + "; ".join(f"{name} {', '.join(f'{r[0]:.0f}' for r in runs)}" for name, runs in rates.items())
    )
    lines.append("")

    def ratios(a: str, b: str) -> str:
        return (
            f"{wall[a] / wall[b]:.3f}x median, {best[a] / best[b]:.3f}x best, "
            f"{cpu[a] / cpu[b]:.3f}x CPU median"
        )

    if "torchyard" in rates:
        lines.append(f"- torchyard / bare: {ratios('torchyard', 'bare')} (target >= 0.97x)")
        if "mmengine" in rates:
            from mmengine import __version__ as mmengine_version

            lines.append(
                f"- torchyard / mmengine {mmengine_version}: {ratios('torchyard', 'mmengine')} "
                "(target >= 1.15x)"
            )
        else:
            lines.append(f"- torchyard / mmengine: unavailable (target >= 1.15x): {unavailable}")
    return "\n".join(lines) + "\n"


def summary(rates: Rates, unavailable: str | None) -> dict:
    """The medians and ratios bench/report.py puts in the summary table."""
    wall = {name: statistics.median(r[0] for r in runs) for name, runs in rates.items()}
    cpu = {name: statistics.median(r[1] for r in runs) for name, runs in rates.items()}
    rounds = {name: [r[0] for r in runs] for name, runs in rates.items()}
    result = {
        "wall": wall,
        "cpu": cpu,
        "rounds": rounds,
        "mmengine_unavailable": unavailable if "mmengine" not in rates else None,
    }
    if "mmengine" in rates:
        from mmengine import __version__ as mmengine_version

        result["mmengine_version"] = mmengine_version
    return result


def write_section(text: str, section: str = SECTION) -> None:
    """Replace a bench's section of results.md (its heading up to the next ``## ``); keep the rest."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=600, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations before them")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every method")
    parser.add_argument("--log-interval", type=int, default=50, help="iterations between log lines")
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated, of {', '.join(METHODS)}; bare always runs",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here (for bench/report.py)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args(argv)

    chosen = {"bare", *args.methods.split(",")}
    unavailable = mmengine_unavailable() if chosen & {"mmengine", "mmengine_iters"} else "not run (--methods)"
    methods = [
        name for name in METHODS if name in chosen and not (name.startswith("mmengine") and unavailable)
    ]
    rates: Rates = {name: [] for name in methods}
    for round_ in range(args.rounds):
        # Rotate the order so that no method always runs first (or right after the same neighbour).
        order = methods[round_ % len(methods) :] + methods[: round_ % len(methods)]
        for name in order:
            rates[name].append(measure(name, args))
            wall, cpu = rates[name][-1]
            print(
                f"round {round_ + 1}/{args.rounds} {name}: {wall:.0f} samples/s, {cpu:.0f} samples/CPU-s",
                file=sys.stderr,
            )
    text = report(rates, unavailable, args)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(summary(rates, unavailable), indent=1))
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
