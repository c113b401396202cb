"""The trainer's command lines (trainer/cli.py): --version, and help that answers before torch is imported
(the import alone takes seconds)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest


@pytest.mark.parametrize(("module", "prog"), [("train", "torchyard-train"), ("test", "torchyard-test")])
def test_version(module, prog):
    done = subprocess.run([sys.executable, "-m", f"torchyard.trainer.{module}", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, f"{prog} {metadata.version('torchyard')}")


@pytest.mark.parametrize("module", ["train", "test"])
def test_help_answers_without_importing_torch(module):
    code = (
        "import contextlib, sys\n"
        f"from torchyard.trainer.{module} import parse_args\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        "    parse_args(['--help'])\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr
