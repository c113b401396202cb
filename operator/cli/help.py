"""Every `torchyard` command declares its one-line summary and an example where it is added, and its
--help shows both."""

from __future__ import annotations

import argparse


def add_command(commands: argparse._SubParsersAction, name: str, summary: str, *examples: str,
                **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help line is `summary` and whose --help also shows `examples`."""
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples) if examples else None
    return commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                               epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
