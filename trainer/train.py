"""torchyard-train: train a model from a config, as OpenMMLab's tools/train.py does.

One process:            torchyard-train configs/digits_cnn.py
Two processes (CPU):    torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.train \\
                          configs/digits_cnn.py --launcher pytorch
Two nodes:              torchrun --nnodes=2 --node-rank=$NODE_RANK --nproc-per-node=1 \\
                          --master-addr=$MASTER_ADDR --master-port=29500 -m torchyard.trainer.train \\
                          configs/digits_cnn.py --launcher pytorch
Slurm:                  srun -N2 --ntasks-per-node=1 torchyard-train configs/digits_cnn.py --launcher slurm
Resume:                 torchyard-train configs/digits_cnn.py --resume    (the work dir's last checkpoint)
"""

from __future__ import annotations

import argparse

from torchyard.trainer.cli import add_common_args, entry_points, load_config, print_config
from torchyard.trainer.stop import StopRequest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="torchyard-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                        help="resume from CKPT, or with no value from the work dir's last checkpoint "
                        "(starting fresh when there is none)")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: bf16 on CPU, fp16 with loss scaling on CUDA")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr by total batch size / auto_scale_lr.base_batch_size")
    parser.add_argument("--seed", type=int, help="random seed (randomness.seed; the same on every rank "
                        "unless randomness.diff_rank_seed=True)")
    parser.add_argument("--deterministic", action="store_true", help="use deterministic algorithms only")
    parser.add_argument("--no-validate", action="store_true",
                        help="train without validation (drops val_dataloader, val_evaluator and val_cfg)")
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> dict:
    cfg = load_config(args)
    if args.resume:
        cfg.resume = args.resume
    if args.amp:
        cfg.amp = True
    if args.auto_scale_lr:
        cfg.setdefault("auto_scale_lr", {})["enable"] = True
    randomness = cfg.setdefault("randomness", {})
    if args.seed is not None:
        randomness["seed"] = args.seed
    if args.deterministic:
        randomness["deterministic"] = True
    if args.no_validate:
        cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    if args.print_config:
        return print_config(cfg)
    from torchyard.trainer.dist import destroy_distributed
    from torchyard.trainer.runner import Runner

    # Before the slow setup: SIGTERM from Kubernetes or Slurm while the runner is built must end in a clean
    # stop, not kill this rank mid-rendezvous while the others wait for it.
    stop = StopRequest().install()
    runner = None
    try:
        runner = Runner(cfg, stop=stop)
        metrics = runner.train()
        summary = {"metrics": metrics, "epoch": runner.epoch, "iter": runner.iter,
                   "lastCheckpoint": str(runner.checkpoints.last() or ""),
                   "bestCheckpoint": str(runner.checkpoints.best() or "")}
    finally:
        if runner is not None:
            runner.close()
        # Also when building the runner failed after joining the group: a live group at exit aborts the
        # process.
        destroy_distributed()
        # Last: after a stop, a rank that has exited makes torchrun SIGTERM the others, and one still in the
        # steps above must not die of it before it says where to resume (run_main prints that next).
        stop.restore()
    return summary


main, cli = entry_points(train, parse_args)


if __name__ == "__main__":
    cli()
