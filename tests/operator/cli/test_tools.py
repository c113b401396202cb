"""`torchyard tools` passes everything after it, --help included, to the trainer's tool parser."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TORCHYARD = str(Path(sys.executable).parent / "torchyard")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TORCHYARD, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_tools_count_params_runs_the_trainer_tool():
    result = run("tools", "count-params", "configs/digits_mlp.py")
    assert result.returncode == 0, result.stderr
    assert "DigitsMLP" in result.stdout and "4,810" in result.stdout


def test_tools_help_is_the_tools_own_help():
    result = run("tools", "--help")
    assert result.returncode == 0
    assert "count-params" in result.stdout and "publish-model" in result.stdout


def test_other_commands_still_reject_unknown_options():
    result = run("validate", "--bogus", "examples/trainjob.yaml")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr
