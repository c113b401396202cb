"""The `torchyard` command. Each command group is a small module with `register(subparsers)`; the
parsers it adds set `func(args) -> exit code`. To add a group, write the module and list it below.

    torchyard validate examples/trainjob.yaml
    torchyard render examples/trainjob.yaml --target k8s|slurm
    torchyard run examples/trainjob.yaml
    torchyard torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.train CONFIG --launcher pytorch
    torchyard submit|status|logs|cancel|list ...        (Kubernetes, through your kubeconfig)
    torchyard crds --out crds/
    torchyard operator run [--namespace NS] [--metrics-port PORT] [--json-logs] [--peering NAME]
    torchyard dev-cluster [--node NAME] [--label K=V] [--taint K=V:EFFECT] [--volumes DIR]
    torchyard tools count-params|publish-model|plot-logs|tsne ...
    torchyard completion bash|zsh|tcsh
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from torchyard.operator.errors import RenderError, SpecError

# Each group's module and the commands it adds. `torchyard COMMAND ...` imports only COMMAND's module, so that
# e.g. `torchyard slurm submit` does not pay for the operator's imports; --help and typos import them all.
COMMAND_GROUPS = {
    "torchyard.operator.cli.jobs": ("validate", "render", "run", "torchrun", "crds"),
    "torchyard.operator.cli.kube": ("submit", "status", "logs", "cancel", "list"),
    "torchyard.operator.cli.slurm": ("slurm",),
    "torchyard.operator.cli.operator": ("operator", "dev-cluster"),
    "torchyard.operator.cli.tools": ("tools",),
    "torchyard.operator.cli.completion": ("completion",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command group, or with only the group that adds `command`."""
    parser = argparse.ArgumentParser(
        prog="torchyard",
        description="Run PyTorch distributed training and evaluation the same way on a laptop, "
        "Kubernetes and Slurm, from one TrainJob/TestJob file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('torchyard')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module, names in COMMAND_GROUPS.items():
        if command is None or command in names:
            importlib.import_module(module).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    known = {name for names in COMMAND_GROUPS.values() for name in names}
    parser = build_parser(argv[0] if argv and argv[0] in known else None)
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
