"""A job array in torchyard's terms (observe.py): its tasks' records as one job, from scontrol or sacct."""

from __future__ import annotations

import pytest

from torchyard.operator.api.spec import Phase
from torchyard.operator.slurm.observe import array_record, array_tasks, job_phase, parse_sacct, task_states


@pytest.mark.parametrize(
    ("text", "ids"),
    [("3", [3]), ("0-3,7", [0, 1, 2, 3, 7]), ("1-5:2", [1, 3, 5]), ("2-4%2", [2, 3, 4]), ("", [])],
)
def test_array_task_ids_as_slurm_writes_them(text, ids):
    assert array_tasks(text) == ids


def task(task_id: str, state: str, **fields: str) -> dict[str, str]:
    own = {"JobId": f"7{task_id[0]}", "ArrayJobId": "70", "ArrayTaskId": task_id, "JobState": state}
    return own | fields


def test_an_array_runs_while_any_run_runs_and_says_what_each_does():
    info = array_record("70", [task("0", "COMPLETED", ExitCode="0:0"), task("1", "RUNNING", NodeList="n1"),
                               task("2-3%2", "PENDING", Reason="JobArrayTaskLimit")])  # fmt: skip
    seen = job_phase(info)

    assert (info["JobId"], info["JobState"], info["NodeList"]) == ("70", "RUNNING", "n1")
    assert task_states(info) == {0: "COMPLETED", 1: "RUNNING", 2: "PENDING", 3: "PENDING"}
    assert seen.phase is Phase.RUNNING and not seen.terminal
    assert seen.message.endswith("runs: 0 COMPLETED, 1 RUNNING, 2-3 PENDING")


def test_an_array_that_cannot_start_says_so_even_while_others_run():
    info = array_record("70", [task("0", "RUNNING"), task("1", "PENDING", Reason="PartitionTimeLimit")])

    assert job_phase(info).unsatisfiable


def test_an_array_succeeds_only_when_every_run_completed():
    completed = task("0", "COMPLETED", ExitCode="0:0")
    done = array_record("70", [completed, task("1", "COMPLETED", ExitCode="0:0")])
    failed = array_record("70", [completed, task("1", "FAILED", ExitCode="3:0")])

    assert job_phase(done).phase is Phase.SUCCEEDED
    assert (job_phase(failed).phase, failed["ExitCode"]) == (Phase.FAILED, "3:0")
    assert "runs: 0 COMPLETED, 1 FAILED" in job_phase(failed).message


def test_a_requeued_run_keeps_the_array_restarting():
    requeued = task("1", "PENDING", Reason="BeginTime", Restarts="1")
    info = array_record("70", [task("0", "COMPLETED"), requeued])

    assert job_phase(info).phase is Phase.RESTARTING and info["Restarts"] == "1"


def test_parse_sacct_gathers_an_arrays_runs_and_skips_their_steps():
    rows = "\n".join(["70_0|COMPLETED|0:0", "70_0.batch|COMPLETED|0:0", "70_1|FAILED|3:0",
                      "70_[2-3]|PENDING|0:0", "7|COMPLETED|0:0"])  # fmt: skip
    info = parse_sacct(rows, "70")

    assert task_states(info) == {0: "COMPLETED", 1: "FAILED", 2: "PENDING", 3: "PENDING"}
    assert job_phase(info).phase is Phase.PENDING
    assert parse_sacct(rows, "7")["JobState"] == "COMPLETED"  # job 7's own row, not job 70's runs
