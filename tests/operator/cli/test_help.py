"""Every command explains itself: a description, an example, help for every argument; and shells complete
them (the completion scripts are run in a real bash)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from torchyard.operator.cli.main import build_parser

BIN = Path(sys.executable).parent


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("torchyard",)):
    """(path, parser) of every command and action, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


ALL = list(commands(build_parser()))


def test_every_command_is_walked():
    names = {" ".join(path) for path, _ in ALL}
    assert {"torchyard validate", "torchyard slurm submit", "torchyard operator run", "torchyard completion",
            "torchyard dev-cluster", "torchyard tools"} <= names


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[" ".join(path) for path, _ in ALL])
def test_every_command_has_a_description_an_example_and_argument_help(path, parser):
    assert parser.description and len(parser.description) > 10, path
    assert parser.epilog and parser.epilog.startswith("examples:\n  "), path
    undocumented = [action.dest for action in parser._actions
                    if not isinstance(action, argparse._SubParsersAction) and not action.help]
    assert not undocumented, f"{' '.join(path)}: arguments without help: {undocumented}"


def complete(script: str, function: str, words: list[str]) -> list[str]:
    """What bash completes for `words` (the last one partly typed), with `script` sourced."""
    line = " ".join(words)
    program = (f"source /dev/stdin; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; "
               f'COMP_POINT=${{#COMP_LINE}}; {function}; echo "${{COMPREPLY[@]}}"')
    result = subprocess.run(["bash", "-c", program], input=script, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize(("words", "expected"), [
    (["torchyard", "va"], ["validate"]),
    (["torchyard", "slurm", "s"], ["submit", "status"]),
    (["torchyard", "render", "--ta"], ["--target"]),
    (["torchyard", "completion", "z"], ["zsh"]),
])
def test_bash_completes_torchyard(words, expected):
    script = subprocess.run([str(BIN / "torchyard"), "completion", "bash"], capture_output=True, text=True,
                            check=True).stdout

    assert complete(script, "_shtab_torchyard", words) == expected


@pytest.mark.parametrize("program", ["torchyard-train", "torchyard-test"])
def test_bash_completes_the_trainer_commands(program):
    script = subprocess.run([str(BIN / program), "--print-completion", "bash"], capture_output=True,
                            text=True, check=True).stdout
    function = f"_shtab_{program.replace('-', '_')}"

    assert complete(script, function, [program, "--cfg-o"]) == ["--cfg-options"]
    assert complete(script, function, [program, "--launcher", "sl"]) == ["slurm"]
