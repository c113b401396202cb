"""`torchyard completion bash|zsh|tcsh`: a shell completion script for every command and option, made by
shtab from the same parser that reads the command line.

    eval "$(torchyard completion bash)"                 # this shell; add it to ~/.bashrc to keep it
    torchyard completion zsh > ~/.zfunc/_torchyard       # zsh, with ~/.zfunc on $fpath
"""

from __future__ import annotations

import argparse

import shtab

from torchyard.operator.cli.help import add_command


def register(commands: argparse._SubParsersAction) -> None:
    completion = add_command(commands, "completion", "print a shell completion script",
                             'eval "$(torchyard completion bash)"',
                             "torchyard completion zsh > ~/.zfunc/_torchyard")
    completion.add_argument("shell", choices=shtab.SUPPORTED_SHELLS, help="the shell to complete in")
    completion.set_defaults(func=completion_command)


def completion_command(args: argparse.Namespace) -> int:
    from torchyard.operator.cli.main import build_parser

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0
