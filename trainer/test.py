"""torchyard-test: evaluate a checkpoint on a config's test set, as OpenMMLab's tools/test.py does.

    torchyard-test configs/digits_cnn.py work_dirs/digits_cnn            (the work dir's best, else last checkpoint)
    torchyard-test configs/digits_cnn.py work_dirs/digits_cnn/epoch_10.pth --out results.json
    torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.test CONFIG CKPT --launcher pytorch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path

from torchyard.trainer.cli import add_common_args, load_config, run_main
from torchyard.trainer.config import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="torchyard-test", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("checkpoint", help="a checkpoint file, or a work dir (its best, else last checkpoint)")
    parser.add_argument("--out", help="also write the metrics to this .json or .pkl file")
    return parser.parse_args(argv)


def test(args: argparse.Namespace) -> int:
    from torchyard.trainer.runner import Runner

    if args.out and Path(args.out).suffix not in (".json", ".pkl"):
        raise ConfigError(f"--out {args.out}: must end in .json or .pkl")
    cfg = load_config(args)
    runner = Runner(cfg, log_name="test.log")
    try:
        metrics = runner.test(args.checkpoint)
        if runner.env.is_main:
            checkpoint = Path(runner.tested_checkpoint)
            result = {"metrics": metrics, "checkpoint": str(checkpoint), "checkpoint_sha256": _sha256(checkpoint),
                      "config": cfg.pretty_text, "time": time.time()}
            (runner.work_dir / "metrics.json").write_text(json.dumps(result, indent=2))
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                if args.out.endswith(".json"):
                    Path(args.out).write_text(json.dumps(result, indent=2))
                else:
                    Path(args.out).write_bytes(pickle.dumps(result))
            for key, value in metrics.items():
                print(f"{key}: {value:.4f}")
    finally:
        runner.close()
    return 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    return run_main(test, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
