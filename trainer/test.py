"""torchyard-test: evaluate a checkpoint on a config's test set, as OpenMMLab's tools/test.py does.

    torchyard-test configs/digits_cnn.py work_dirs/digits_cnn      (the work dir's best, else last checkpoint)
    torchyard-test configs/digits_cnn.py work_dirs/digits_cnn/last_checkpoint        (its latest checkpoint)
    torchyard-test configs/digits_cnn.py work_dirs/digits_cnn/epoch_10.pth --out results.json --show-dir vis/
    torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.test CONFIG CKPT --launcher pytorch
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from torchyard.contract.workdir import TEST_RESULT
from torchyard.trainer.cli import add_common_args, entry_points, load_config, print_config
from torchyard.trainer.config import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="torchyard-test", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("checkpoint", help="a checkpoint file, a work dir (its best, else last checkpoint), "
                        "or a work dir's last_checkpoint / best_checkpoint pointer file")
    parser.add_argument("--out",
                        help="write every sample's prediction and the metrics to this .json or .pkl file")
    parser.add_argument("--show-dir", help="save PNG pictures of predictions in this directory")
    parser.add_argument("--show-limit", type=int, default=64, help="at most this many pictures (default 64)")
    # OpenMMLab's test.py flags that have no torchyard counterpart: refused with what to do instead.
    parser.add_argument("--tta", action="store_true", help="not supported: test-time augmentation")
    parser.add_argument("--show", action="store_true", help="not supported: use --show-dir")
    parser.add_argument("--wait-time", type=float, help="not supported: goes with --show")
    return parser.parse_args(argv)


def test(args: argparse.Namespace) -> dict:
    if args.tta:
        raise ConfigError("--tta: test-time augmentation is not supported; test without it")
    if args.show or args.wait_time is not None:
        raise ConfigError("--show/--wait-time: torchyard draws no windows; --show-dir DIR saves the pictures")
    cfg = load_config(args)
    if args.out:
        evaluators = cfg.get("test_evaluator") or []
        cfg.test_evaluator = [*(evaluators if isinstance(evaluators, list) else [evaluators]),
                              {"type": "DumpResults", "out_file": args.out}]
    if args.show_dir:
        cfg.custom_hooks = [*cfg.get("custom_hooks", []),
                            {"type": "VisualizationHook", "show_dir": args.show_dir,
                             "max_samples": args.show_limit}]
    if args.print_config:
        return print_config(cfg)
    from torchyard.trainer.checkpoint import sha256_of
    from torchyard.trainer.dist import destroy_distributed
    from torchyard.trainer.runner import Runner

    runner = None
    try:
        runner = Runner(cfg, log_name="test.log")
        metrics = runner.test(args.checkpoint)
        checkpoint = Path(runner.tested_checkpoint)
        if runner.env.is_main:
            result = {"metrics": metrics, "checkpoint": str(checkpoint.resolve()),
                      "checkpoint_sha256": sha256_of(checkpoint), "config": cfg.pretty_text,
                      "time": time.time()}
            (runner.work_dir / TEST_RESULT).write_text(json.dumps(result, indent=2))
            for key, value in metrics.items():
                print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    finally:
        if runner is not None:
            runner.close()
        destroy_distributed()  # also when building the runner failed after joining the group
    return {"metrics": metrics, "checkpoint": str(checkpoint)}


main, cli = entry_points(test, parse_args)


if __name__ == "__main__":
    cli()
