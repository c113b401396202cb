"""The Slurm operator mode's policy (operator/slurm/policy.py): paths stay in the job's namespace, and only
allowed sbatch options pass. Each refusal names the field."""

from __future__ import annotations

import pytest

from torchyard.operator.errors import NotAllowed
from torchyard.operator.launch.command import work_dir_path
from torchyard.operator.slurm.policy import SlurmPolicy, confine
from torchyard.operator.slurm.render import render_slurm

POLICY = SlurmPolicy()


def test_work_dirs_are_per_namespace(train_job):
    """Before, team-a/foo and team-b/foo shared work_dirs/foo: checkpoints, and resume: auto."""
    team_a = confine(train_job(), "team-a", POLICY)
    team_b = confine(train_job(), "team-b", POLICY)

    assert work_dir_path(team_a) == "work_dirs/team-a/digits-mlp"
    assert work_dir_path(team_b) == "work_dirs/team-b/digits-mlp"
    assert "work_dir=work_dirs/team-a/digits-mlp" in render_slurm(team_a)
    assert "#SBATCH --output=work_dirs/team-a/digits-mlp/slurm-%j.out" in render_slurm(team_a)


def test_relative_paths_are_placed_in_the_namespace(train_job, test_job):
    train = confine(train_job(workDir={"path": "runs/mlp"}, resume="runs/old/epoch_3.pth"), "team-a", POLICY)
    test = confine(test_job(checkpoint="runs/mlp/best_checkpoint"), "team-a", POLICY)

    assert work_dir_path(train) == "work_dirs/team-a/runs/mlp"
    assert train.spec.resume == "work_dirs/team-a/runs/old/epoch_3.pth"
    assert test.spec.checkpoint == "work_dirs/team-a/runs/mlp/best_checkpoint"
    assert train.spec.config == "configs/digits_mlp.py"  # configs stay relative to the submit dir


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"workDir": {"path": "../team-b/digits-mlp"}}, "spec.workDir.path"),
        ({"workDir": {"path": "runs/../../team-b"}}, "spec.workDir.path"),
        ({"workDir": {"path": "/home/alice/runs"}}, "spec.workDir.path"),
        ({"resume": "/scratch/team-b/epoch_3.pth"}, "spec.resume"),
        ({"config": "../../secrets.py"}, "spec.config"),
        ({"config": "/etc/passwd"}, "spec.config"),
        ({"slurm": {"extraArgs": ["--exclusive", "--uid=0"]}}, "spec.slurm.extraArgs[1]"),
        ({"slurm": {"extraArgs": ["--chdir=/"]}}, "spec.slurm.extraArgs[0]"),
        ({"slurm": {"extraArgs": ["--output=/home/bob/.bashrc"]}}, "spec.slurm.extraArgs[0]"),
        ({"slurm": {"extraArgs": ["--export=ALL,LD_PRELOAD=/tmp/x.so"]}}, "spec.slurm.extraArgs[0]"),
    ],
)
def test_paths_out_of_the_namespace_and_unsafe_options_are_refused(train_job, spec, field):
    with pytest.raises(NotAllowed) as refused:
        confine(train_job(**spec), "team-a", POLICY)

    assert [path for path, _ in refused.value.problems] == [field]
    assert str(refused.value).startswith("TrainJob team-a/digits-mlp: not allowed by this operator")


def test_a_test_job_checkpoint_of_another_team_is_refused(test_job):
    with pytest.raises(NotAllowed, match=r"spec.checkpoint: '\.\./team-b/x/best_checkpoint' climbs out"):
        confine(test_job(checkpoint="../team-b/x/best_checkpoint"), "team-a", POLICY)


def test_absolute_paths_under_an_admins_root_pass(train_job):
    policy = SlurmPolicy(work_roots=("/scratch/{namespace}",))
    job = confine(train_job(workDir={"path": "/scratch/team-a/mlp"}), "team-a", policy)
    assert work_dir_path(job) == "/scratch/team-a/mlp"

    with pytest.raises(NotAllowed, match=r"outside the roots this operator allows \(/scratch/team-a\)"):
        confine(train_job(workDir={"path": "/scratch/team-b/mlp"}), "team-a", policy)
    with pytest.raises(NotAllowed, match="outside the roots"):
        confine(train_job(workDir={"path": "/scratch/team-abc/mlp"}), "team-a", policy)  # not a prefix match


def test_allowed_options_pass_and_an_admin_may_add_more(train_job):
    options = ["--exclusive", "--constraint=a100", "-C a100", "--mem-per-gpu=40G"]
    assert confine(train_job(slurm={"extraArgs": options}), "team-a", POLICY).spec.slurm.extra_args == options

    reservation = train_job(slurm={"extraArgs": ["--reservation=maint"]})
    with pytest.raises(NotAllowed, match="ask the admin for --slurm-allow-option"):
        confine(reservation, "team-a", POLICY)
    wider = SlurmPolicy(allowed_options=(*POLICY.allowed_options, "--reservation"))
    assert confine(reservation, "team-a", wider).spec.slurm.extra_args == ["--reservation=maint"]


def test_every_problem_is_listed_at_once(train_job):
    job = train_job(workDir={"path": "/x"}, config="../c.py", slurm={"extraArgs": ["--uid=0"]})
    with pytest.raises(NotAllowed) as refused:
        confine(job, "team-a", POLICY)
    assert [path for path, _ in refused.value.problems] == [
        "spec.workDir.path",
        "spec.config",
        "spec.slurm.extraArgs[0]",
    ]


def test_operator_run_takes_the_policy_flags(tmp_path):
    from torchyard.operator.cli.main import build_parser

    args = build_parser().parse_args(
        ["operator", "run", "--backend", "slurm", "--slurm-work-root", "/scratch/{namespace}",
         "--slurm-allow-option=--reservation"]
    )
    assert args.slurm_work_root == ["/scratch/{namespace}"] and args.slurm_allow_option == ["--reservation"]
