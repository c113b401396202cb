"""The README's numbers are the recorded ones: its task table is bench/tasks.md's (written by
`make demo-tasks`), its benchmark table is bench/results.md's summary (written by `make bench`), and the size
of the malformed-input corpus it quotes is the one the tests run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def table_rows(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_the_task_table_is_the_one_make_demo_tasks_recorded():
    header = "| family | config | metric on the test split |"
    recorded = table_rows((REPO / "bench/tasks.md").read_text(), header)

    assert len(recorded) == 7
    assert table_rows(README, header) == recorded


def test_the_benchmark_table_is_the_one_make_bench_recorded():
    header = "| measure | torchyard | baseline (same run) | ratio | target | met | note |"
    recorded = table_rows((REPO / "bench/results.md").read_text(), header)

    assert len(recorded) > 10
    assert table_rows(README, header) == recorded


def test_the_malformed_input_count_is_the_corpus_size():
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                                "no:cacheprovider", str(REPO / "tests/faults/test_bad_input.py")],
                               capture_output=True, text=True, cwd=REPO, timeout=120).stdout
    case = re.compile(r"::test_bad_(command_line|config|job_file)\w*\[")
    cases = [line for line in collected.splitlines() if case.search(line)]
    quoted = re.search(r"\| (\d+) malformed job files, configs and command lines \|", README)

    assert quoted, "the README's fault table lost its malformed-input row"
    assert int(quoted.group(1)) == len(cases)
