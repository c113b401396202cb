"""Slurm rendering: golden scripts, `bash -n` and shellcheck, and hostile strings that must stay inert."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from torchyard.operator.api.spec import load_job
from torchyard.operator.errors import SpecError
from torchyard.operator.launch.command import program_args, test_checkpoint
from torchyard.operator.slurm.render import render_slurm, sbatch_options

SHELLCHECK = shutil.which("shellcheck")
MARK = "pwned"
HOSTILE = f"x'y\"z $(touch {MARK}) `touch {MARK}`; touch {MARK} $HOME \\ %j"
HOSTILE_LINES = [HOSTILE, f"a\ntouch {MARK}"]


def check_script(script: str, tmp_path: Path) -> Path:
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    if SHELLCHECK:
        result = subprocess.run([SHELLCHECK, "--severity=style", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
    return path


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed (apt-get install shellcheck)")
def test_shellcheck_is_used():
    assert SHELLCHECK


def _load(repo, name):
    return load_job(yaml.safe_load((repo / "examples" / name).read_text()))


@pytest.mark.parametrize(
    ("case", "spec"),
    [
        ("minimal", {}),
        (
            "gpus-container",
            {
                "gpusPerNode": 4,
                "masterPort": 23456,
                "resources": {"requests": {"cpu": "3500m", "memory": "30Gi"}},
                "slurm": {
                    "partition": "gpu",
                    "time": "2-00:00:00",
                    "account": "proj1",
                    "qos": "high",
                    "extraArgs": ["--exclusive"],
                    "container": {"image": "nvcr.io#nvidia/pytorch:24.05-py3", "mounts": ["/data:/data"]},
                },
            },
        ),
        (
            "command-venv",
            {
                "config": None,
                "command": ["tools/train.py", "configs/x.py", "--launcher", "pytorch"],
                "workDir": {"path": "/scratch/runs/x"},
                "slurm": {"pythonEnv": "/opt/venvs/torch/"},
            },
        ),
    ],
)
def test_train_golden(train_job, golden, tmp_path, case, spec):
    script = render_slurm(train_job(**spec))
    check_script(script, tmp_path)
    golden(f"slurm-train-{case}.sh", script)


def test_sweep_golden(train_job, golden, tmp_path):
    sweep = {"grid": {"optim_wrapper.optimizer.lr": [0.01, 0.1], "model.act": ["relu"]},
             "points": [["model.hidden=[8, 16]"]], "maxParallel": 2}  # fmt: skip
    script = render_slurm(train_job(slurm={"sweep": sweep}))
    check_script(script, tmp_path)
    golden("slurm-train-sweep.sh", script)


@pytest.mark.parametrize("cfg_options", [["a.b=1"], []], ids=["after-cfgOptions", "alone"])
def test_an_array_task_runs_its_point_in_its_own_work_dir(train_job, tmp_path, cfg_options):
    sweep = {"grid": {"lr": [0.01, 0.1]}, "points": [["model.hidden=[8, 16]", "x=a b"]]}
    job = train_job(cfgOptions=cfg_options, slurm={"sweep": sweep})
    array = {"SLURM_ARRAY_JOB_ID": "1230", "SLURM_ARRAY_TASK_ID": "2"}
    argv = run_with_stubs(check_script(render_slurm(job), tmp_path), tmp_path, array)

    run_dir = str(tmp_path / "work_dirs/digits-mlp/2")
    options = [*([] if cfg_options else ["--cfg-options"]), "model.hidden=[8, 16]", "x=a b"]
    assert argv[5:] == [*program_args(job, run_dir), *options]
    assert (tmp_path / "work_dirs/digits-mlp/2").is_dir()


def test_an_array_task_outside_the_sweep_stops_with_a_message(train_job, tmp_path):
    job = train_job(slurm={"sweep": {"points": [["a=1"]]}})
    path = check_script(render_slurm(job), tmp_path)
    env = {**os.environ, "SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "5"}
    result = subprocess.run(["bash", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True)

    assert result.returncode == 2
    assert "array task 5 is not one of the sweep's runs (0-0)" in result.stderr


def test_a_runs_requeue_and_stop_name_the_run_not_the_array(train_job):
    script = render_slurm(train_job(slurm={"sweep": {"points": [["a=1"], ["a=2"]]}}))

    assert 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in script
    assert 'scancel --signal=TERM "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' not in script


@pytest.mark.parametrize("where", ["grid key", "grid value", "point"])
def test_hostile_sweep_strings_are_inert(base_train, tmp_path, where):
    value = f'"$(touch {MARK}) `touch {MARK}`; touch {MARK} $HOME %j"'  # quoted: a string to the parser
    sweep = {
        "grid key": {"grid": {f"k{value.replace('.', '')}": [1]}},
        "grid value": {"grid": {"k": [value]}},
        "point": {"points": [[f"k={value}"]]},
    }[where]
    base_train["spec"]["slurm"] = {"sweep": sweep}
    job = load_job(base_train)
    array = {"SLURM_ARRAY_JOB_ID": "1230", "SLURM_ARRAY_TASK_ID": "0"}
    argv = run_with_stubs(check_script(render_slurm(job), tmp_path), tmp_path, array)

    assert not (tmp_path / MARK).exists() and not (Path.home() / MARK).exists()
    assert argv[-1] == job.spec.slurm.sweep.runs()[0][0]


@pytest.mark.parametrize("which", ["best", "latest"])
def test_test_job_golden(repo, golden, tmp_path, which):
    train, test = _load(repo, "trainjob.yaml"), _load(repo, "testjob.yaml")
    test.spec.from_train_job.which = which
    script = render_slurm(test, train)
    check_script(script, tmp_path)
    golden(f"slurm-test-from-train-{which}.sh", script)


def test_sbatch_options(train_job):
    options = sbatch_options(
        train_job(
            gpusPerNode=2,
            resources={"requests": {"cpu": "1500m", "memory": "1G"}},
            slurm={"time": "10", "signalSeconds": 60},
        )
    )
    for expected in [
        "--job-name=digits-mlp",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=2",
        "--mem=954M",
        "--gres=gpu:2",
        "--time=10",
        "--signal=B:USR1@60",
        "--requeue",
        "--output=work_dirs/digits-mlp/slurm-%j.out",
    ]:
        assert expected in options


def test_a_sweep_is_a_job_array_with_its_logs_in_each_runs_dir(train_job):
    options = sbatch_options(train_job(slurm={"sweep": {"grid": {"a": [1, 2, 3]}, "maxParallel": 2}}))

    assert "--array=0-2%2" in options
    assert "--output=work_dirs/digits-mlp/%a/slurm-%A_%a.out" in options
    assert "--error=work_dirs/digits-mlp/%a/slurm-%A_%a.err" in options


STUBS = {
    "scontrol": '#!/bin/sh\nif [ "$1" = show ]; then printf "node1\\nnode2\\n"; fi\n',
    # srun runs its command once, as node 0: skip srun's options up to the command (bash)
    "srun": '#!/bin/sh\nwhile [ "$1" != bash ]; do shift; done\nSLURM_NODEID=0 exec "$@"\n',
    "torchrun": "#!/usr/bin/env python3\nimport json, sys\n"
    'json.dump(sys.argv[1:], open("torchrun_argv.json", "w"))\n',
}


def run_with_stubs(script_path: Path, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    stubs = cwd / "stubs"
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(stat.S_IRWXU)
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "1234",
        "SLURM_JOB_NODELIST": "node[1-2]",
        **(env or {}),
    }
    env.pop("MASTER_PORT", None)
    subprocess.run(["bash", str(script_path)], cwd=cwd, env=env, check=True, timeout=60)
    return json.loads((cwd / "torchrun_argv.json").read_text())


def test_script_runs_with_stubs(train_job, tmp_path):
    job = train_job(cfgOptions=["a.b=1"])
    argv = run_with_stubs(check_script(render_slurm(job), tmp_path), tmp_path)
    work_dir = str(tmp_path / "work_dirs/digits-mlp")
    assert argv[:5] == [
        "--node-rank=0",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--master-addr=node1",
        "--master-port=11234",
    ]
    assert argv[5:] == program_args(job, work_dir)


def _train_fields(value):
    return {
        "config": {"config": value},
        "cfgOptions key": {"cfgOptions": [f"{value.replace('.', '').replace('=', '')}=1"]},
        "command": {"config": None, "command": ["train.py", value, "--x", value]},
        "resume": {"resume": value},
        "image": {"image": value},
        "workDir.path": {"workDir": {"path": value}},
        "slurm.pythonEnv": {"slurm": {"pythonEnv": value}},
        "slurm.container.image": {"slurm": {"container": {"image": value}}},
        "slurm.container.mounts": {"slurm": {"container": {"image": "img", "mounts": [value]}}},
        "slurm.extraArgs": {"slurm": {"extraArgs": [f"--comment={value}"]}},
        "slurm.partition": {"slurm": {"partition": value}},
        "slurm.account": {"slurm": {"account": value}},
        "slurm.qos": {"slurm": {"qos": value}},
        "slurm.time": {"slurm": {"time": value}},
        "resources.requests.cpu": {"resources": {"requests": {"cpu": value}}},
    }


FIELDS = list(_train_fields("v"))


@pytest.mark.parametrize("value", HOSTILE_LINES, ids=["one-line", "newline"])
@pytest.mark.parametrize("field", FIELDS)
def test_hostile_strings_are_inert(base_train, tmp_path, field, value):
    data = base_train
    data["spec"].update(_train_fields(value)[field])
    data["spec"] = {k: v for k, v in data["spec"].items() if v is not None}
    try:
        job = load_job(data)
    except SpecError as err:  # rejected: fine, as long as the error names the field
        assert any(path.startswith(f"spec.{field.split()[0]}") for path, _ in err.problems), str(err)
        return
    script_path = check_script(render_slurm(job), tmp_path)
    argv = run_with_stubs(script_path, tmp_path)
    assert not (tmp_path / MARK).exists(), f"{field} executed a command"
    assert not (Path.home() / MARK).exists()
    assert argv[5:] == program_args(job, str(tmp_path / (job.spec.work_dir.path or "work_dirs/digits-mlp")))


def test_hostile_test_job_strings_are_inert(base_test, tmp_path):
    base_test["spec"].update(checkpoint=HOSTILE, out=HOSTILE)
    job = load_job(base_test)
    argv = run_with_stubs(check_script(render_slurm(job), tmp_path), tmp_path)
    assert not (tmp_path / MARK).exists()
    assert argv[5:] == program_args(job, str(tmp_path / "work_dirs/digits-eval"), test_checkpoint(job, None))


def test_latest_passes_the_pointer_file(repo, tmp_path):
    train, test = _load(repo, "trainjob.yaml"), _load(repo, "testjob.yaml")
    test.spec.from_train_job.which = "latest"
    argv = run_with_stubs(check_script(render_slurm(test, train), tmp_path), tmp_path)
    assert argv[5:9] == [
        "-m",
        "torchyard.trainer.test",
        "configs/digits_mlp.py",
        "work_dirs/digits-mlp/last_checkpoint",
    ]
