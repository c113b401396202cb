from pathlib import Path

from torchyard.operator.launch.agent_output import AgentNoise

# What torchrun printed, unfiltered, when both ranks of a config with model.channels=abc failed.
RECORDED = (Path(__file__).parent / "torchrun_failure.txt").read_text().splitlines(keepends=True)


def kept(lines: list[str]) -> list[str]:
    noise = AgentNoise()
    return [out for line in lines for out in noise.feed(line)] + noise.flush()


def test_torchruns_banner_failure_line_and_traceback_are_dropped_the_workers_lines_kept():
    assert len(RECORDED) > 40
    assert kept(RECORDED) == ["error: model.channels: expected int, got 'abc' (str)\n"] * 2


def test_the_agents_stopping_of_the_other_workers_is_dropped():
    # Under load one rank fails first and the agent stops the other one before it reaches its own error.
    stopping = (
        "W1207 14:02:11.518000 4117 torch/distributed/elastic/multiprocessing/api.py:1028] "
        "Sending process 4123 closing signal SIGTERM\n"
    )
    error = "error: model.channels: expected int, got 'abc' (str)\n"

    assert kept([error, stopping]) == [error]


def test_a_workers_own_traceback_and_other_agent_warnings_pass_unchanged():
    lines = [
        "W1203 18:19:03.409000 9756 torch/distributed/elastic/agent/server/api.py:753] "
        "Received 15 death signal, shutting down workers\n",
        "Traceback (most recent call last):\n",
        '  File "/work/main/trainer/train.py", line 70, in <module>\n',
        "ValueError: boom\n",
    ]

    assert kept(lines) == lines


def test_a_traceback_line_at_the_very_end_is_not_lost():
    assert kept(["Traceback (most recent call last):\n"]) == ["Traceback (most recent call last):\n"]
