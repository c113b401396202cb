"""Framework overhead: what a trainer itself costs per iteration, and from start to the first step.

    1. per iteration: a tiny step (DigitsMLP with 4 hidden units, batch 4, one thread: about 0.5 ms in a
       bare loop, most of it the DataLoader) trained three ways, as in trainer_overhead.py: a bare PyTorch
       loop, torchyard's Runner, mmengine's Runner (epoch-based), with the same data loader settings, SGD
       and a per-iteration cosine. Each framework's cost is its time per iteration minus the bare loop's,
       measured in the same round; the data loading every method does the same way cancels out.
    2. cold start: a fresh process, from its start to the end of its first training iteration, for
       torchyard and for mmengine (the same tiny job), and for `import torch` alone.

The methods run interleaved for ``--rounds`` rounds; medians are reported. Nothing asserts on timing.
mmengine lives in the bench environment (see trainer_overhead.py); without it its rows say why.

    bench/.venv/bin/python bench/framework_overhead.py     # --iters 3000 --rounds 5 --starts 5

The table is printed and written to bench/results.md, replacing its ``## framework_overhead`` section.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from trainer_overhead import Clock, command, machine, mmengine_unavailable, write_section

from torchyard.trainer.config import Config
from torchyard.trainer.data import DigitsDataset
from torchyard.trainer.hooks import Hook
from torchyard.trainer.models import DigitsMLP
from torchyard.trainer.runner import Runner

BATCH_SIZE = 4
HIDDEN = 4
SGD = dict(lr=0.05, momentum=0.9)
SECTION = "## framework_overhead"
LOG_INTERVAL = 1000


def loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(DigitsDataset("train"), batch_size=BATCH_SIZE, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


def run_bare(clock: Clock, work_dir: Path) -> float:
    torch.manual_seed(0)
    model = DigitsMLP(hidden=HIDDEN)
    optimizer = torch.optim.SGD(model.parameters(), **SGD)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=clock.total)
    data = loader()
    step = 0
    while step < clock.total:
        for batch in data:
            loss = F.cross_entropy(model.logits(batch["inputs"]), batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % LOG_INTERVAL == 0:
                print(f"iter {step} loss {loss.item():.4f}")
            clock.tick(step)
            if step >= clock.total:
                break
    return seconds_per_iter(clock)


class ClockHook(Hook):
    priority = 100

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def after_train_iter(self, runner, losses) -> None:
        self.clock.tick(runner.iter)


def torchyard_cfg(work_dir: Path, iters: int) -> dict:
    return dict(
        work_dir=str(work_dir), model=dict(type="DigitsMLP", hidden=HIDDEN),
        train_dataloader=dict(batch_size=BATCH_SIZE, dataset=dict(type="DigitsDataset", split="train")),
        optim_wrapper=dict(optimizer=dict(type="SGD", **SGD)),
        param_scheduler=[dict(type="CosineAnnealingLR", by_epoch=False)],
        train_cfg=dict(by_epoch=False, max_iters=iters),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=LOG_INTERVAL), checkpoint=None))


def run_torchyard(clock: Clock, work_dir: Path) -> float:
    runner = Runner(Config(torchyard_cfg(work_dir, clock.total)))
    runner.hooks.append(ClockHook(clock))
    runner.train()
    runner.close()
    return seconds_per_iter(clock)


def run_mmengine(clock: Clock, work_dir: Path) -> float:
    from mmengine.hooks import Hook as MMHook
    from mmengine.runner import Runner as MMRunner

    class MMClockHook(MMHook):
        priority = "LOWEST"

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            clock.tick(runner.iter + 1)

    torch.manual_seed(0)
    data = loader()
    runner = MMRunner(
        model=mm_model(), work_dir=str(work_dir), experiment_name=f"framework_overhead_{work_dir.name}",
        train_dataloader=data, optim_wrapper=dict(optimizer=dict(type="SGD", **SGD)),
        param_scheduler=dict(type="CosineAnnealingLR", by_epoch=False, begin=0, end=clock.total,
                             T_max=clock.total),
        train_cfg=dict(by_epoch=True, max_epochs=-(-clock.total // len(data)), val_interval=10**6),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=LOG_INTERVAL), checkpoint=None),
        custom_hooks=[MMClockHook()], randomness=dict(seed=0),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo")), default_scope=None)
    runner.train()
    return seconds_per_iter(clock)


def mm_model():
    from mmengine.model import BaseModel

    class MMDigitsMLP(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.net = DigitsMLP(hidden=HIDDEN)

        def forward(self, inputs, targets=None, index=None, mode="tensor"):
            logits = self.net.logits(inputs)
            return {"loss": F.cross_entropy(logits, targets)} if mode == "loss" else logits

    return MMDigitsMLP()


def seconds_per_iter(clock: Clock) -> float:
    return (clock.end[0] - clock.start[0]) / (clock.total - clock.warmup)


STEPS = {"bare": run_bare, "torchyard": run_torchyard, "mmengine": run_mmengine}

# Cold starts: a fresh interpreter prints time.time() at the end of its first training iteration.
FIRST_STEP = {
    "import torch": "import time, torch; print('FIRST_STEP', time.time())",
    "torchyard": textwrap.dedent("""
        import sys, time
        sys.path.insert(0, {bench!r})
        from framework_overhead import ClockHook, torchyard_cfg
        from torchyard.trainer.config import Config
        from torchyard.trainer.runner import Runner
        class Stamp(ClockHook):
            def after_train_iter(self, runner, losses):
                print("FIRST_STEP", time.time(), flush=True)
        runner = Runner(Config(torchyard_cfg(__import__("pathlib").Path({work_dir!r}), 1)))
        runner.hooks.append(Stamp(None))
        runner.train()
    """),
    "mmengine": textwrap.dedent("""
        import sys, time
        sys.path.insert(0, {bench!r})
        from framework_overhead import loader, mm_model, SGD
        from mmengine.hooks import Hook
        from mmengine.runner import Runner
        class Stamp(Hook):
            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                print("FIRST_STEP", time.time(), flush=True)
        Runner(model=mm_model(), work_dir={work_dir!r}, train_dataloader=loader(),
               optim_wrapper=dict(optimizer=dict(type="SGD", **SGD)),
               train_cfg=dict(by_epoch=False, max_iters=1),
               default_hooks=dict(checkpoint=None), custom_hooks=[Stamp()], default_scope=None,
               env_cfg=dict(dist_cfg=dict(backend="gloo"))).train()
    """),
}


def cold_start(name: str) -> float:
    with tempfile.TemporaryDirectory(prefix="bench_start_") as work_dir:
        code = FIRST_STEP[name].format(bench=str(Path(__file__).parent), work_dir=work_dir)
        started = time.time()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"cold start of {name} failed: {done.stderr[-2000:]}")
        stamp = next(line for line in done.stdout.splitlines() if line.startswith("FIRST_STEP"))
        return float(stamp.split()[1]) - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=3000, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--starts", type=int, default=5, help="cold starts per method")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    parser.add_argument("--json", type=Path, help="also write the numbers here (for bench/report.py)")
    args = parser.parse_args(argv)
    unavailable = mmengine_unavailable()
    methods = [name for name in STEPS if not (name == "mmengine" and unavailable)]
    per_iter: dict[str, list[float]] = {name: [] for name in methods}
    torch.set_num_threads(1)
    for round_ in range(args.rounds):
        for name in methods[round_ % len(methods):] + methods[:round_ % len(methods)]:
            gc.collect()
            clock = Clock(args.warmup, args.warmup + args.iters)
            with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as tmp, \
                    open(Path(tmp) / "console.log", "w") as console, contextlib.redirect_stdout(console):
                per_iter[name].append(STEPS[name](clock, Path(tmp)))
            print(f"round {round_ + 1} {name}: {per_iter[name][-1] * 1e6:.1f} us/iter", file=sys.stderr)
    starters = [name for name in FIRST_STEP if not (name == "mmengine" and unavailable)]
    starts: dict[str, list[float]] = {name: [] for name in starters}
    for _ in range(args.starts):
        for name in starters:
            starts[name].append(cold_start(name))
    text = report(per_iter, starts, unavailable, args)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(summary(per_iter, starts, unavailable), indent=1))
    if not args.no_write:
        write_section(text, SECTION)


def framework_costs(per_iter: dict[str, list[float]]) -> dict[str, float]:
    """Each framework's time per iteration minus the bare loop's of the same round (us), median of rounds."""
    return {name: statistics.median((t - b) * 1e6 for t, b in zip(times, per_iter["bare"], strict=True))
            for name, times in per_iter.items() if name != "bare"}


def summary(per_iter: dict[str, list[float]], starts: dict[str, list[float]],
            unavailable: str | None) -> dict:
    """The numbers bench/report.py puts in the summary table."""
    return {"bare_us": statistics.median(per_iter["bare"]) * 1e6, "cost_us": framework_costs(per_iter),
            "start_s": {name: statistics.median(times) for name, times in starts.items()},
            "mmengine_unavailable": unavailable}


def report(per_iter: dict[str, list[float]], starts: dict[str, list[float]], unavailable: str | None,
           args: argparse.Namespace) -> str:
    us = {name: statistics.median(times) * 1e6 for name, times in per_iter.items()}
    cost = framework_costs(per_iter)
    if unavailable:
        compared = f"mmengine unavailable: {unavailable}"
    else:
        import mmengine

        compared = f"mmengine {mmengine.__version__} from {Path(mmengine.__file__).parent.parent}"
    lines = [SECTION, "", f"Machine: {machine()}; one thread; {compared}.",
             f"DigitsMLP(hidden={HIDDEN}), batch {BATCH_SIZE}, {args.iters} timed iterations after "
             f"{args.warmup}; {args.rounds} interleaved rounds; {args.starts} cold starts each.",
             f"Command: `{command()}`", "",
             "| method | us per iteration (median) | framework cost: minus bare, median of rounds |",
             "|---|---:|---:|"]
    for name in STEPS:
        if name not in us:
            lines.append(f"| {name} | unavailable: {unavailable} | |")
            continue
        lines.append(f"| {name} | {us[name]:.1f} | {'' if name == 'bare' else f'{cost[name]:+.1f} us'} |")
    lines += ["", "| cold start to the end of the first training iteration | seconds (median) |",
              "|---|---:|"]
    lines += [f"| {name} | {statistics.median(times):.2f} |" for name, times in starts.items()]
    lines.append("")
    share = cost["torchyard"] / us["bare"] * 100
    lines.append(f"- torchyard's cost / the bare step: {share:.1f}% (target <= 3%)")
    if "mmengine" in cost:
        lines.append(f"- torchyard's cost / mmengine's: {cost['torchyard'] / cost['mmengine']:.3f}x "
                     "(target <= 0.125x)")
        ratio = statistics.median(starts["torchyard"]) / statistics.median(starts["mmengine"])
        lines.append(f"- cold start, torchyard / mmengine: {ratio:.2f}x (target <= 0.6x)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
