"""The bad-input corpus: malformed TrainJob/TestJob files, training configs and command lines.

Each gets a clear error naming the field or the file, a documented non-zero exit code (2 for the `torchyard`
command and argparse usage errors, 3 for the trainer's config errors), no trace-back unless asked for
(--debug / TORCHYARD_DEBUG=1), and nothing is created: no pod in the emulator (the job is Failed instead),
nothing handed to sbatch or torchrun, no checkpoint.

- the 65 specs of tests/operator/malformed_specs.yaml, each through `torchyard validate`, `render --target
  k8s|slurm`, `run`, `slurm submit [--dry-run]` (with no sbatch on PATH and process creation forbidden, so
  the spec error must come first), and through the operator;
- 30 training configs: wrong types, unknown model/metric/hook types, hostile strings, huge values, a config
  importing a missing module, a config that raises, broken YAML/JSON;
- 22 bad command lines of torchyard-train, torchyard-test and torchyard.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchyard.contract import exitcodes
from torchyard.operator.cli.main import main as torchyard
from torchyard.trainer.test import main as torchyard_test
from torchyard.trainer.train import main as torchyard_train

from ..operator.api.corpus import CORPUS, walk
from ..operator.jobs import TEST, TRAIN
from ..operator.operator_harness import running_cluster, running_operator

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASES = {"TrainJob": TRAIN, "TestJob": TEST}


def corpus_job(case: dict) -> dict:
    data = copy.deepcopy(BASES[case.get("kind", "TrainJob")])
    for dotted in case.get("delete", []):
        *parents, last = dotted.split(".")
        walk(data, parents).pop(last)
    for dotted, value in case.get("set", {}).items():
        *parents, last = dotted.split(".")
        walk(data, parents)[last] = value
    return data


def test_the_corpus_holds_more_than_sixty_cases_in_all():
    assert len(CORPUS) + len(CONFIGS) + len(COMMAND_LINES) >= 60 + 50


@pytest.fixture
def nothing_may_start(monkeypatch, tmp_path):
    """No sbatch on PATH, and any attempt to start a process fails the test."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a process was started for a bad file: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(subprocess, "run", forbidden)


@pytest.mark.parametrize("case", CORPUS, ids=[case["id"] for case in CORPUS])
def test_bad_job_file_is_refused_by_every_command(case, tmp_path, capsys, nothing_may_start):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(corpus_job(case)))
    commands = [
        ["validate"],
        ["render", "--target", "k8s"],
        ["render", "--target", "slurm"],
        ["run"],
        ["slurm", "submit"],
        ["slurm", "submit", "--dry-run"],
    ]
    for command in commands:
        code = torchyard(
            [*command[: 2 if command[0] == "slurm" else 1], str(path), *command[2:]]
            if command[0] == "slurm"
            else [command[0], str(path), *command[1:]]
        )
        out, err = capsys.readouterr()
        where = f"torchyard {' '.join(command)}"
        assert code == 2, (where, code, err)
        assert out == "", f"{where} printed something for a bad file: {out[:300]}"
        assert "Traceback" not in err and "sbatch not found" not in err, (where, err)
        first = err.splitlines()[0]
        assert str(path) in first and case["path"] in err, (where, err)
        assert len(first) < 2000, (where, first)
    assert not (tmp_path / "work_dirs").exists()


def _operator_cases() -> list[tuple[str, dict, str]]:
    """The corpus entries an API server would store as they are (a kind, a version and a usable name)."""
    cases = []
    for i, case in enumerate(CORPUS):
        job = corpus_job(case)
        name = (job.get("metadata") or {}).get("name")
        if (
            job.get("apiVersion") != "torchyard.dev/v1alpha1"
            or not isinstance(name, str)
            or not re.fullmatch(r"[A-Za-z0-9._-]+", name)
            or "namespace" in job["metadata"]
        ):
            continue
        if case["id"] == "unknown-top-field":  # an API server prunes unknown top-level fields itself
            continue
        if not case["path"].startswith("metadata.name"):
            job["metadata"]["name"] = f"bad-{i}"
        cases.append((case["id"], job, case["path"]))
    return cases


@pytest.mark.asyncio
async def test_bad_objects_fail_with_the_field_path_and_get_no_pods():
    cases = _operator_cases()
    assert len(cases) >= 55
    async with running_cluster() as cluster, running_operator(cluster):
        created = []
        for case_id, job, path in cases:
            refused = await cluster.create_or_refusal(job)
            if refused is None:
                created.append((case_id, job, path))
            else:  # the CRD's schema (422) or strict field validation (400) refused it, naming the field
                assert refused.status in (400, 422) and path in refused.message, (case_id, refused.message)
        assert created, "no case reached the operator's own validation"
        for case_id, job, path in created:
            status = await cluster.wait_phase(job["kind"], job["metadata"]["name"], "Failed", timeout=60)
            failed = next(c for c in status["conditions"] if c["type"] == "Failed")
            assert failed["reason"] == "InvalidSpec" and path in failed["message"], (case_id, failed)
            assert "Traceback" not in failed["message"]
        assert not await cluster.pods() and cluster.kubelet.created == []


# ---- training configs ------------------------------------------------------------------------------------

BASE = f"_base_ = [{str(REPO / 'configs/digits_mlp.py')!r}]\ntrain_cfg = dict(max_epochs=1)\n"
CONFIGS = [
    # (id, file name, text, what the one error line must say)
    (
        "unknown-model",
        "c.py",
        BASE + "model = dict(type='NoSuchNet')",
        r"model\.type: 'NoSuchNet' is not a regis",
    ),
    (
        "model-typo",
        "c.py",
        BASE + "model = dict(type='DigitsMPL')",
        r"model\.type: .*Did you mean 'DigitsMLP'",
    ),
    ("unknown-metric", "c.py", BASE + "val_evaluator = dict(type='Acuracy')", r"val_evaluator.*'Accuracy'"),
    (
        "unknown-metric-in-list",
        "c.py",
        BASE + "val_evaluator = [dict(type='Accuracy'), dict(type='F1')]",
        r"val_evaluator\[1\]\.type: 'F1' is not a registered metric",
    ),
    (
        "unknown-optimizer",
        "c.py",
        BASE + "optim_wrapper = dict(optimizer=dict(type='SDG'))",
        r"Did you mean 'SGD'",
    ),
    (
        "unknown-scheduler",
        "c.py",
        BASE + "param_scheduler = [dict(type='NoSched')]",
        r"param_scheduler\[0\]\.type",
    ),
    ("unknown-hook", "c.py", BASE + "custom_hooks = [dict(type='NoHook')]", r"custom_hooks\[0\]\.type"),
    (
        "unknown-dataset",
        "c.py",
        BASE + "train_dataloader = dict(dataset=dict(type='Nope'))",
        r"train_dataloader\.dataset\.type",
    ),
    ("model-not-a-dict", "c.py", BASE + "model = 5", r"model: expected a dict with a 'type' key"),
    ("model-wrong-argument", "c.py", BASE + "model = dict(hiden=3)", r"model: wrong arguments for DigitsMLP"),
    ("epochs-string", "c.py", BASE + "train_cfg = dict(max_epochs='ten')", r"train_cfg\.max_epochs: must be"),
    ("epochs-negative", "c.py", BASE + "train_cfg = dict(max_epochs=-2)", r"train_cfg\.max_epochs: must be"),
    (
        "batch-string",
        "c.py",
        BASE + "train_dataloader = dict(batch_size='32')",
        r"train_dataloader\.batch_size: must be a positive integer, got '32'",
    ),
    (
        "batch-negative",
        "c.py",
        BASE + "train_dataloader = dict(batch_size=-4)",
        r"train_dataloader\.batch_size",
    ),
    (
        "workers-negative",
        "c.py",
        BASE + "train_dataloader = dict(num_workers=-1)",
        r"train_dataloader\.num_workers: must be a non-negative integer",
    ),
    (
        "lr-string",
        "c.py",
        BASE + "optim_wrapper = dict(optimizer=dict(lr='fast'))",
        r"optim_wrapper\.optimizer: SGD rejected its arguments",
    ),
    ("seed-string", "c.py", BASE + "randomness = dict(seed='abc')", r"randomness\.seed: must be an integer"),
    ("hidden-string", "c.py", BASE + "model = dict(hidden='abc')",
     r"model\.hidden: expected int, got 'abc' \(str\)"),
    ("split-unknown", "c.py", BASE + "train_dataloader = dict(dataset=dict(split='nope'))", r"split: 'nope'"),
    (
        "checkpoint-interval-zero",
        "c.py",
        BASE + "default_hooks = dict(checkpoint=dict(interval=0))",
        r"default_hooks\.checkpoint\.interval must be >= 1",
    ),
    (
        "huge-model",
        "c.py",
        BASE + "model = dict(hidden=10**12)",
        r"model: building DigitsMLP needs more memory",
    ),
    (
        "hostile-type-string",
        "c.py",
        BASE + "model = dict(type='Digits\\nMLP\\x00; rm -rf /')",
        r"model\.type: .* is not a registered model",
    ),
    ("hostile-huge-type-string", "c.py", BASE + "model = dict(type='A' * 100000)", r"model\.type: 'AAAA"),
    (
        "hostile-dotted-path",
        "c.py",
        BASE + "model = dict(type='os.system')",
        r"model: wrong arguments for system",
    ),
    ("hostile-work-dir", "c.py", BASE + "work_dir = '/dev/null/x'", r"work_dir /dev/null/x: cannot create"),
    (
        "imports-missing-module",
        "c.py",
        "import no_such_module_xyz\n" + BASE,
        r"config .*c\.py, line 1, raised ModuleNotFoundError: No module named 'no_such_module_xyz'",
    ),
    (
        "custom-imports-missing-module",
        "c.py",
        BASE + "custom_imports = dict(imports=['no_such_mod_q'])",
        r"custom_imports: could not import 'no_such_mod_q'",
    ),
    (
        "raises",
        "c.py",
        BASE + "raise RuntimeError('boom')",
        r"config .*c\.py, line 3, raised RuntimeError: boom",
    ),
    ("syntax-error", "c.py", "x = (\n", r"config .*c\.py, line 1"),
    (
        "base-missing",
        "c.py",
        "_base_ = ['missing_base.py']\n",
        r"missing_base\.py \(a _base_ of .*c\.py\) does",
    ),
    ("yaml-broken", "c.yaml", "model: [1\n", r"c\.yaml is not valid YAML: line \d+, column \d+: expected"),
    ("yaml-list", "c.yaml", "- 1\n- 2\n", r"config .*c\.yaml must hold a mapping of keys, not a list"),
    ("json-broken", "c.json", '{"model": ', r"config .*c\.json is not valid JSON: line \d+, column \d+"),
    (
        "resume-missing",
        "c.py",
        BASE + "resume = '/nonexistent/x.pth'",
        r"no checkpoint at /nonexistent/x\.pth",
    ),
    (
        "load-from-missing",
        "c.py",
        BASE + "load_from = '/nonexistent/x.pth'",
        r"no checkpoint at /nonexistent",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_bad_config_is_one_clear_line_and_exit_code_3(tmp_path, capsys, monkeypatch, name, text, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCHYARD_DEBUG", raising=False)
    config = tmp_path / name
    config.write_text(text + "\n")
    code = torchyard_train(
        [str(config), "--work-dir", str(tmp_path / "wd")] if "work_dir" not in text else [str(config)]
    )
    err = capsys.readouterr().err
    assert code == exitcodes.CONFIG_ERROR, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(err.strip().splitlines()) == 1, err[-3000:]
    assert re.search(expected, errors[0]), errors[0][:500]
    assert len(errors[0]) < 2000
    assert not list(tmp_path.rglob("*.pth")), "a bad config must not produce checkpoints"


def test_debug_output_shows_the_trace_back_only_when_asked(tmp_path):
    config = tmp_path / "c.py"
    config.write_text(BASE + "train_dataloader = dict(batch_size='32')\n")
    command = [str(BIN / "torchyard-train"), str(config), "--work-dir", str(tmp_path / "wd")]
    env = {k: v for k, v in os.environ.items() if k != "TORCHYARD_DEBUG"}
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    loud = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**env, "TORCHYARD_DEBUG": "1"}
    )
    assert quiet.returncode == loud.returncode == exitcodes.CONFIG_ERROR
    assert "Traceback" not in quiet.stderr and quiet.stderr.strip().startswith(
        "error: train_dataloader.batch"
    )
    assert "Traceback" in loud.stderr and "error: train_dataloader.batch_size" in loud.stderr


# ---- command lines ---------------------------------------------------------------------------------------

GOOD_CONFIG = str(REPO / "configs/digits_mlp.py")
GOOD_JOB = str(REPO / "examples/trainjob.yaml")
COMMAND_LINES = [
    # (id, program, argv, exit code, what stderr must say)
    ("train-no-config", torchyard_train, [], 2, "the following arguments are required: config"),
    ("train-bad-launcher", torchyard_train, [GOOD_CONFIG, "--launcher", "k8s"], 2, "invalid choice: 'k8s'"),
    ("train-seed-not-int", torchyard_train, [GOOD_CONFIG, "--seed", "abc"], 2, "--seed: invalid int value"),
    (
        "train-unknown-flag",
        torchyard_train,
        [GOOD_CONFIG, "--epochs", "3"],
        2,
        "unrecognized arguments: --epochs",
    ),
    ("train-missing-config", torchyard_train, ["nope.py"], 3, "config file .*nope.py does not exist"),
    ("train-config-suffix", torchyard_train, [GOOD_JOB.replace(".yaml", ".txt")], 3, r"trainjob\.txt"),
    ("train-cfg-option-unbalanced", torchyard_train, [GOOD_CONFIG, "--cfg-options", "a=[1"], 3, "unbalanced"),
    ("train-cfg-option-no-equals", torchyard_train, [GOOD_CONFIG, "--cfg-options", "lr"], 3, "lr"),
    (
        "train-pytorch-without-torchrun",
        torchyard_train,
        [GOOD_CONFIG, "--launcher", "pytorch"],
        3,
        "RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set",
    ),
    (
        "train-resume-missing",
        torchyard_train,
        [GOOD_CONFIG, "--resume", "/nonexistent.pth"],
        3,
        "no checkpoint at",
    ),
    ("test-no-checkpoint-argument", torchyard_test, [GOOD_CONFIG], 2, "required: checkpoint"),
    ("test-missing-checkpoint", torchyard_test, [GOOD_CONFIG, "/nonexistent.pth"], 3, "/nonexistent.pth"),
    (
        "test-bad-out-suffix",
        torchyard_test,
        [GOOD_CONFIG, "/nonexistent.pth", "--out", "r.csv"],
        3,
        r"r\.csv|out",
    ),
    ("cli-no-command", torchyard, [], 2, "required: COMMAND"),
    ("cli-unknown-command", torchyard, ["deploy", GOOD_JOB], 2, "invalid choice: 'deploy'"),
    ("validate-no-file", torchyard, ["validate"], 2, "required"),
    (
        "validate-missing-file",
        torchyard,
        ["validate", "/nonexistent.yaml"],
        2,
        "/nonexistent.yaml.*cannot read",
    ),
    ("render-bad-target", torchyard, ["render", GOOD_JOB, "--target", "nomad"], 2, "invalid choice: 'nomad'"),
    ("run-missing-file", torchyard, ["run", "/nonexistent.yaml"], 2, "/nonexistent.yaml"),
    ("run-a-directory", torchyard, ["run", str(REPO / "examples")], 2, "examples.*cannot read"),
    ("slurm-submit-dry-run-missing", torchyard, ["slurm", "submit", "--dry-run", "/no.yaml"], 2, "/no.yaml"),
    ("slurm-submit-no-file", torchyard, ["slurm", "submit"], 2, "required: FILE"),
]


@pytest.mark.parametrize(
    ("program", "argv", "code", "expected"), [c[1:] for c in COMMAND_LINES], ids=[c[0] for c in COMMAND_LINES]
)
def test_bad_command_line_is_a_clear_error(
    tmp_path, capsys, monkeypatch, nothing_may_start, program, argv, code, expected
):
    monkeypatch.chdir(tmp_path)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHYARD_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    try:
        result = program(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        result = exit_.code
    err = capsys.readouterr().err
    assert result == code, (result, err[-2000:])
    assert "Traceback" not in err
    # argparse: usage, then one "error:" line; the trainer: one "error:" line; `torchyard`: a line naming the
    # file, then one indented line per problem (here one)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " " * 10))]
    assert len(lines) <= 2 and len(err.splitlines()) <= 12, err[-2000:]
    assert re.search(expected, " ".join(lines)), err
    assert not list(tmp_path.rglob("*.pth"))
