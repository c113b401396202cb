"""``torchyard tools SUBCOMMAND ...``: the analysis tools, one module each.

    torchyard tools count-params configs/digits_cnn.py          (or python -m torchyard.trainer.tools ...)
    torchyard tools publish-model work_dirs/digits_cnn digits_cnn.pth
    torchyard tools plot-logs work_dirs/digits_cnn --keys loss accuracy/top1 --out curves.png
    torchyard tools tsne configs/digits_cnn.py work_dirs/digits_cnn --out tsne.png
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from torchyard.contract import exitcodes
from torchyard.trainer.checkpoint import CheckpointError
from torchyard.trainer.config import ConfigError
from torchyard.trainer.tools import count_params, plot_logs, publish_model, tsne

TOOLS = {"count-params": count_params, "publish-model": publish_model, "plot-logs": plot_logs, "tsne": tsne}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchyard tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full trace-backs on errors")
    subparsers = parser.add_subparsers(dest="tool", required=True, metavar="TOOL")
    for name, module in TOOLS.items():
        summary = module.__doc__.strip().splitlines()[0]
        sub = subparsers.add_parser(name, help=summary, description=module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ConfigError, CheckpointError) as err:
        if args.debug or os.environ.get("TORCHYARD_DEBUG") == "1":
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    return exitcodes.SUCCESS
