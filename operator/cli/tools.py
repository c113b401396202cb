"""`torchyard tools ...`: the trainer's analysis tools (count-params, publish-model, plot-logs, tsne).

They need torch, which the operator never imports: the trainer's tool CLI is loaded only when called.
"""

from __future__ import annotations

import argparse
import sys


def register(commands: argparse._SubParsersAction) -> None:
    tools = commands.add_parser("tools", add_help=False,
                                help="count-params, publish-model, plot-logs, tsne "
                                "(needs torchyard[trainer])")
    tools.add_argument("argv", nargs=argparse.REMAINDER)
    tools.set_defaults(func=tools_command, passthrough=True)


def tools_command(args: argparse.Namespace) -> int:
    try:
        from torchyard.trainer.tools.cli import main
    except ImportError as err:
        print(f"torchyard tools: {err}; install the trainer extra: pip install 'torchyard[trainer]'",
              file=sys.stderr)
        return 2
    return main(args.rest + args.argv)
