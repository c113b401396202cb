"""The images' install steps, run as the Dockerfiles run them (images/*/install.sh on a copy of the build
context) in a fresh virtual environment; then what the containers run: the entrypoints' --help, and for the
trainer a one-epoch training from the image's working directory. torch is `torch==2.13.0` (the CPU wheel
here, as in the image's default build)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def build_stage_sources(image: str) -> list[str]:
    """What the Dockerfile COPYs from the context before its RUN of install.sh (the sources it installs)."""
    text = (REPO / "images" / image / "Dockerfile").read_text()
    before_install = text[: text.index(f"images/{image}/install.sh /opt/torchyard /src")]
    return [src for line in re.findall(r"^COPY ([^-].*) \S+$", before_install, re.M) for src in line.split()]


def build_context(image: str, tmp: Path) -> Path:
    src = tmp / "src"
    for name in build_stage_sources(image):
        target = src / name.rstrip("/")
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, target)
    return src


def install(image: str, tmp: Path) -> Path:
    src, venv = build_context(image, tmp), tmp / "venv"
    env = {**os.environ, "PYTHON": sys.executable, "TORCH_INDEX_URL": ""}  # torch: this machine's pip index
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run([str(src / "images" / image / "install.sh"), str(venv), str(src)],
                            capture_output=True, text=True, env=env, timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return venv


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs outside the checkout: its operator/ folder would shadow the standard library's `operator`."""
    kwargs.setdefault("cwd", "/")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def assert_pinned(venv: Path) -> None:
    """Every package installed is pinned in images/constraints.txt (local labels such as +cpu aside)."""
    pins = dict(
        line.lower().replace("_", "-").split("==")
        for line in (REPO / "images" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    frozen = run([str(venv / "bin" / "pip"), "freeze", "--exclude-editable", "--disable-pip-version-check"])
    for line in frozen.stdout.splitlines():
        name, _, version = line.lower().replace("_", "-").partition("==")
        if name == "torchyard" or not version:
            continue
        assert pins.get(name) == re.sub(r"\+.*", "", version), (
            f"{line} is not pinned in images/constraints.txt"
        )


def test_operator_install(tmp_path):
    venv = install("operator", tmp_path)
    help_text = run([str(venv / "bin" / "torchyard"), "operator", "run", "--help"]).stdout
    for flag in ("--namespace", "--metrics-port", "--json-logs", "--peering", "--priority"):
        assert flag in help_text
    python = str(venv / "bin" / "python")
    run([python, "-c", "import torchyard.operator.control.handlers, kopf, kubernetes, prometheus_client"])
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, cwd="/")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    assert_pinned(venv)


def test_trainer_install_and_one_epoch(tmp_path):
    venv = install("trainer", tmp_path)
    bin_dir = venv / "bin"
    assert "--cfg-options" in run([str(bin_dir / "torchyard-train"), "--help"]).stdout
    assert "--help" in run([str(bin_dir / "torchyard-test"), "--help"]).stdout
    assert run([str(bin_dir / "python"), "-c", "import torch; print(torch.__version__)"]).stdout.startswith(
        "2.13.0"
    )
    workspace = tmp_path / "workspace"  # the image's WORKDIR: configs/ and examples/
    for name in ("configs", "examples"):
        shutil.copytree(REPO / name, workspace / name)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }
    run([str(bin_dir / "torchyard-train"), "configs/digits_mlp.py", "--work-dir", "work", "--cfg-options",
         "train_cfg.max_epochs=1"], cwd=workspace, env=env)  # fmt: skip
    work = workspace / "work"
    assert (work / "last_checkpoint").exists() and list(work.glob("*.pth")), sorted(work.iterdir())
    assert_pinned(venv)
