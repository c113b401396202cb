"""What `torchyard run` passes on from torchrun's stderr: the trainer's own lines, without the agent's
noise around them.

When a worker fails, torchrun's agent adds a log line and then its own trace-back (ChildFailedError, about
35 lines) after the worker's one-line error, and, if the other workers are still running, a line for each
one it stops; on start it prints an OMP_NUM_THREADS banner. `torchyard run`
already says which node failed and why it does or does not restart, so these are dropped; every other
line, the agent's other warnings included, is passed on unchanged.

    noise = AgentNoise()
    for line in stream:
        for kept in noise.feed(line):
            sys.stderr.write(kept)
"""

from __future__ import annotations

import re

# torchrun's glog-style lines: W1203 18:19:03.409000 9756 torch/distributed/run.py:874] ...
_AGENT_LOG = re.compile(r"^[IWE]\d{4} [\d:.]+ \d+ torch/distributed/")
_BANNER = re.compile(r"torch/distributed/run\.py:\d+\]")
_WORKER_FAILED = re.compile(r"\] failed \(exitcode: -?\d+\) local_rank")
_STOPPING_WORKER = re.compile(r"\] Sending process \d+ closing signal SIG[A-Z]+$")
_RULE = "=" * 60


class AgentNoise:
    """A line filter with one trace-back of look-ahead: whether it is the agent's shows on its first frame."""

    def __init__(self) -> None:
        self._pending: str | None = None  # a "Traceback" line whose first frame has not come yet
        self._in_agent_traceback = False
        self._seen_root_cause = False

    def feed(self, line: str) -> list[str]:
        if self._in_agent_traceback:
            self._seen_root_cause |= line.startswith("Root Cause")
            if self._seen_root_cause and line.strip() == _RULE:
                self._in_agent_traceback = self._seen_root_cause = False
            return []
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if '/torchrun", line' in line:
                self._in_agent_traceback = True
                return []
            return [pending, *self.feed(line)]
        if line.startswith("Traceback (most recent call last):"):
            self._pending = line
            return []
        if _AGENT_LOG.match(line) and (
            _BANNER.search(line) or _WORKER_FAILED.search(line) or _STOPPING_WORKER.search(line.rstrip())
        ):
            return []
        return [line]

    def flush(self) -> list[str]:
        pending, self._pending = self._pending, None
        return [pending] if pending is not None else []
