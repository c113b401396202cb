"""Two 2-node jobs at once on this machine through `torchyard run` (the real trainer, 4 torchrun "nodes"):
each picks its own free rendezvous port, neither disturbs the other, both succeed.
(The operator + dev-cluster pair is in test_operator_faults.py; Slurm's in tests/slurm.)"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from ..operator.dev.agent_harness import REPO, TORCHYARD, example


def _span(log: str) -> tuple[str, str]:
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ", log, re.M)
    return stamps[0], stamps[-1]


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_two_two_node_jobs_at_once_pick_distinct_ports_and_both_succeed(tmp_path):
    procs, logs = {}, {}
    for name in ("first", "second"):
        job = example(cfgOptions=["train_cfg.max_epochs=3"], workDir={"path": str(tmp_path / name)})
        job["metadata"]["name"] = name
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(job))
        logs[name] = open(tmp_path / f"{name}.log", "w+")  # noqa: SIM115
        procs[name] = subprocess.Popen(
            [TORCHYARD, "run", str(tmp_path / f"{name}.yaml")],
            cwd=REPO,
            stdout=logs[name],
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, proc in procs.items():
        code = proc.wait(600)
        logs[name].seek(0)
        logs[name] = logs[name].read()
        assert code == 0, logs[name][-3000:]

    ports = {name: re.search(r"master 127\.0\.0\.1:(\d+)", log).group(1) for name, log in logs.items()}
    assert ports["first"] != ports["second"], ports
    spans = [_span((tmp_path / name / "train.log").read_text()) for name in ("first", "second")]
    assert spans[0][0] <= spans[1][1] and spans[1][0] <= spans[0][1], f"the two runs did not overlap: {spans}"
    for name in ("first", "second"):
        assert (tmp_path / name / "last_checkpoint").read_text().endswith("epoch_3.pth")
