"""`torchyard tools ...`: the trainer's analysis tools (count-params, publish-model, plot-logs, tsne).

They need torch, which the operator never imports: the trainer's tool CLI is loaded only when called.
"""

from __future__ import annotations

import argparse
import sys

from torchyard.operator.cli.help import add_command


def register(commands: argparse._SubParsersAction) -> None:
    tools = add_command(commands, "tools", "count-params, publish-model, plot-logs, tsne (needs "
                        "torchyard[trainer])", "torchyard tools count-params configs/digits_cnn.py",
                        "torchyard tools plot-logs work_dirs/digits_cnn --keys loss", add_help=False)
    tools.add_argument("argv", nargs=argparse.REMAINDER, help="the tool and its arguments")
    tools.set_defaults(func=tools_command, passthrough=True)


def tools_command(args: argparse.Namespace) -> int:
    try:
        from torchyard.trainer.tools.cli import main
    except ImportError as err:
        print(f"torchyard tools: {err}; install the trainer extra: pip install 'torchyard[trainer]'",
              file=sys.stderr)
        return 2
    return main(args.rest + args.argv)
