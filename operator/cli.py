"""The `torchyard` command. Each command group is a small module with `register(subparsers)`; the
parsers it adds set `func(args) -> exit code`. To add a group, write the module and list it below.

    torchyard validate examples/trainjob.yaml
    torchyard render examples/trainjob.yaml --target k8s|slurm
    torchyard run examples/trainjob.yaml
    torchyard crds --out crds/
    torchyard operator run [--namespace NS] [--metrics-port PORT] [--json-logs] [--peering NAME]
    torchyard dev-cluster [--emulator --port 8001 --kubeconfig FILE] [--volumes DIR]
    torchyard tools count-params|publish-model|plot-logs|tsne ...
"""

from __future__ import annotations

import argparse
import sys

from torchyard.operator import cli_jobs, cli_operator, cli_slurm, cli_tools
from torchyard.operator.api import SpecError
from torchyard.operator.command import RenderError

COMMAND_GROUPS = [cli_jobs, cli_slurm, cli_operator, cli_tools]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchyard",
        description="Run PyTorch distributed training and evaluation the same way on a laptop, "
        "Kubernetes and Slurm, from one TrainJob/TestJob file.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `torchyard tools` hands its options (even --help) to the trainer's own tool parser.
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return args.func(args)
    except (SpecError, RenderError) as err:
        print(f"torchyard {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
