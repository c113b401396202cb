"""The operator with a dev-cluster node on the real control plane (real processes: the node agent, the
operator, torchrun "nodes"), under faults. The first test does several things in one run to keep CI short:

1. node 1 of job `killed` is SIGKILLed at a seeded iteration; the gang restarts and resumes, and the final
   checkpoint in the dev-cluster volume is bit-identical to a `torchyard run` of the same spec;
2. then the operator itself is SIGKILLed mid-job, a second job is created while it is down, and it is
   restarted: no pod started twice, status and restart count intact, the second job picked up;
3. both jobs then train at the same time on this one "node" (each job's rendezvous port maps to its own
   local port) and both succeed.
The second kills a rank inside validation and, after the restart, rank 0 half-way through a checkpoint write.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ..operator.dev.agent_harness import REPO, TORCHYARD, DevCluster, example
from ..trainer.runner_helpers import assert_same_training_state, final_state
from .faults_helpers import module_text

EPOCHS, ITERS_PER_EPOCH = 4, 23  # configs/digits_mlp.py on 2 nodes x 1 process
PACE = 0.3  # seconds of sleep per iteration, so that the two jobs overlap for sure (no effect on weights)
KILL_AT = random.Random(7).randint(ITERS_PER_EPOCH + 1, 3 * ITERS_PER_EPOCH - 1)  # after a checkpoint


def _spec(name: str, config: str) -> dict:
    job = example(
        config=config, cfgOptions=["optim_wrapper.optimizer.lr=0.05", f"train_cfg.max_epochs={EPOCHS}"]
    )
    job["metadata"]["name"] = name
    job["spec"]["workDir"] = {"claimName": "runs", "subPath": name}
    return job


def _start_reference(tmp_path: Path) -> subprocess.Popen:
    """The same spec without the fault, through `torchyard run` into tmp_path/reference, in the background
    (its output goes to tmp_path/reference.log)."""
    reference = _spec("reference", str(REPO / "configs/digits_mlp.py"))
    reference["spec"]["workDir"] = {"path": str(tmp_path / "reference")}
    (tmp_path / "reference.yaml").write_text(yaml.safe_dump(reference))
    with open(tmp_path / "reference.log", "wb") as log:
        return subprocess.Popen(
            [TORCHYARD, "run", str(tmp_path / "reference.yaml")],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _starts(tmp_path: Path, namespace: str) -> Counter:
    """How many times the dev-cluster started each pod's process (from its log)."""
    log = (tmp_path / "dev-cluster.log").read_text()
    return Counter(re.findall(rf"started pod {namespace}/(\S+) as pid", log))


def _span(work_dir: Path) -> tuple[str, str]:
    """The first and last timestamps of a run's training log (the last attempt's, for a restarted job)."""
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ", (work_dir / "train.log").read_text(), re.M)
    return stamps[0], stamps[-1]


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_node_and_operator_killed_mid_job_two_jobs_at_once(tmp_path, monkeypatch):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "fault_hooks.py").write_text(module_text())
    base = f"_base_ = [{str(REPO / 'configs/digits_mlp.py')!r}]\n"
    base += "custom_imports = dict(imports=['fault_hooks'])\n"
    faulty, paced = hooks / "faulty_mlp.py", hooks / "paced_mlp.py"
    pace = f"dict(type='Pace', seconds={PACE})"
    faulty.write_text(f"{base}custom_hooks = [dict(type='KillOnceAt', at={KILL_AT}, rank=1), {pace}]\n")
    paced.write_text(f"{base}custom_hooks = [{pace}]\n")
    monkeypatch.setenv("PYTHONPATH", str(hooks))  # pods inherit the dev-cluster's environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    local = _start_reference(tmp_path)

    cluster = DevCluster(tmp_path)
    try:
        cluster.create(_spec("killed", str(faulty)))
        restarted = cluster._wait(
            lambda: (
                (s := cluster.status("killed")).get("restarts") == 1 and s.get("phase") == "Running" and s
            ),
            600,
            "the gang restart after the SIGKILL",
        )
        assert (tmp_path / f"volumes/runs/killed/.killed_at_{KILL_AT}").exists()

        # The operator dies mid-job; a job is created while it is down; it comes back.
        operator = cluster.procs[1]
        operator.send_signal(signal.SIGKILL)
        operator.wait(30)
        cluster.procs.remove(operator)
        cluster.create(_spec("second", str(paced)))
        assert cluster.status("second") == {}  # nobody has seen it yet
        log = open(tmp_path / "operator.log", "ab")  # noqa: SIM115
        cluster.logs.append(log)
        cluster.procs.append(
            subprocess.Popen(
                [TORCHYARD, "operator", "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
            )
        )

        second = cluster.wait_phase("second", {"Succeeded", "Failed"}, timeout=900)
        killed = cluster.wait_phase("killed", {"Succeeded", "Failed"}, timeout=900)
    finally:
        cluster.close()
        local.wait(600)

    assert killed["phase"] == "Succeeded", killed
    assert second["phase"] == "Succeeded", second
    # status survived the operator's death: the same start, the one restart counted once
    assert killed["restarts"] == 1 and killed["startTime"] == restarted["startTime"]
    assert second["restarts"] == 0 and killed["epoch"] == second["epoch"] == EPOCHS
    # no duplicate pods: each pod of the killed job ran once per attempt, the second job's once
    assert _starts(tmp_path, cluster.ns) == {
        "killed-node-0": 2,
        "killed-node-1": 2,
        "second-node-0": 1,
        "second-node-1": 1,
    }
    # the two jobs trained at the same time (both default to MASTER_PORT 29500; the runner maps each job's
    # rendezvous port to its own local one)
    second_span, killed_span = (
        _span(tmp_path / "volumes/runs/second"),
        _span(tmp_path / "volumes/runs/killed"),
    )
    assert second_span[0] < killed_span[1] and killed_span[0] < second_span[1], (second_span, killed_span)
    killed_log = (tmp_path / "volumes/runs/killed/train.log").read_text()
    assert f"resumed from {tmp_path / 'volumes/runs/killed'}" in killed_log, killed_log[-2000:]

    assert local.returncode == 0, (tmp_path / "reference.log").read_text()[-3000:]
    assert_same_training_state(
        final_state(tmp_path / "reference"), final_state(tmp_path / "volumes/runs/killed")
    )


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_deaths_during_validation_and_during_a_checkpoint_write_through_the_operator(tmp_path, monkeypatch):
    """Rank 1 dies inside the validation of epoch 2, then, in the restarted gang, rank 0 dies half-way
    through writing epoch 3's checkpoint: two gang restarts, and still the weights of an unbroken run."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "fault_hooks.py").write_text(module_text())
    faulty = hooks / "faulty_mlp.py"
    faulty.write_text(
        f"_base_ = [{str(REPO / 'configs/digits_mlp.py')!r}]\n"
        "custom_imports = dict(imports=['fault_hooks'])\n"
        # 90 validation images per rank: 3 batches, so that the second is in the middle of the validation
        "val_dataloader = dict(batch_size=32)\n"
        f"custom_hooks = [dict(type='KillInValidationOnce', at={2 * ITERS_PER_EPOCH}, rank=1, batches=2),\n"
        f"                dict(type='DieWhileSavingOnce', at={3 * ITERS_PER_EPOCH})]\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    local = _start_reference(tmp_path)

    cluster = DevCluster(tmp_path)
    try:
        cluster.create(_spec("killed", str(faulty)))
        status = cluster.wait_phase("killed", {"Succeeded", "Failed"}, timeout=900)
    finally:
        cluster.close()
        local.wait(600)

    work_dir = tmp_path / "volumes/runs/killed"
    assert status["phase"] == "Succeeded" and status["restarts"] == 2, status
    assert (work_dir / f".killed_in_val_{2 * ITERS_PER_EPOCH}").exists()
    assert (work_dir / f".died_saving_{3 * ITERS_PER_EPOCH}").exists()
    log = (work_dir / "train.log").read_text()
    assert (
        f"resumed from {work_dir / 'epoch_1.pth'}" in log
        and f"resumed from {work_dir / 'epoch_2.pth'}" in log
    )
    assert local.returncode == 0, (tmp_path / "reference.log").read_text()[-3000:]
    assert_same_training_state(final_state(tmp_path / "reference"), final_state(work_dir))
