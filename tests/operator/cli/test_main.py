"""The `torchyard` command: validate, render, crds, and how errors reach the user."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from torchyard.operator.cli.main import main


def test_validate_examples(repo, capsys):
    assert main(["validate", str(repo / "examples/trainjob.yaml"), str(repo / "examples/testjob.yaml")]) == 0
    assert "TrainJob digits-mlp is valid" in capsys.readouterr().out


def test_render_k8s(repo, capsys):
    assert main(["render", str(repo / "examples/trainjob.yaml"), "--target", "k8s"]) == 0
    manifests = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [m["kind"] for m in manifests] == ["Service", "Pod", "Pod"]
    for manifest in manifests:
        kubernetes_validate.validate(manifest, "1.37", strict=True)


def test_render_test_job_with_train_job_file(repo, capsys):
    args = [
        "render",
        str(repo / "examples/testjob.yaml"),
        "--train-job",
        str(repo / "examples/trainjob.yaml"),
    ]
    assert main([*args, "--target", "slurm"]) == 0
    assert "torchyard.trainer.test" in capsys.readouterr().out
    assert main(["render", str(repo / "examples/testjob.yaml"), "--target", "k8s"]) == 2
    assert "--train-job" in capsys.readouterr().err


def test_render_multi_document_file(repo, tmp_path, capsys):
    both = tmp_path / "both.yaml"
    both.write_text(
        (repo / "examples/trainjob.yaml").read_text()
        + "\n---\n"
        + (repo / "examples/testjob.yaml").read_text()
    )
    assert main(["render", str(both), "--target", "k8s"]) == 0
    assert len(list(yaml.safe_load_all(capsys.readouterr().out))) == 5
    assert main(["render", str(both), "--target", "slurm"]) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: TrainJob\nspec: [1\n", "not valid YAML: line 3"),
        ("", "holds no job"),
        ("- 1\n", "expected a mapping"),
        (
            "apiVersion: torchyard.dev/v1alpha1\nkind: TrainJob\nmetadata: {name: x}\n"
            "spec: {image: i, config: c, nodes: 0}\n",
            "spec.nodes",
        ),
    ],
)
def test_bad_files(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_crds_to_stdout_and_folder(tmp_path, capsys, repo):
    assert main(["crds"]) == 0
    assert len(list(yaml.safe_load_all(capsys.readouterr().out))) == 2
    assert main(["crds", "--out", str(tmp_path)]) == 0
    for path in (repo / "crds").iterdir():
        assert (tmp_path / path.name).read_text() == path.read_text()


def test_version(capsys):
    from importlib import metadata

    from torchyard.operator.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"torchyard {metadata.version('torchyard')}"
