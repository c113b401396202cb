"""`torchyard run`: the laptop path of the same job file, nodes x procsPerNode processes on this machine.

Each "node" is one torchrun, given the pods' env contract with MASTER_ADDR=127.0.0.1 and a free port
unless the spec sets one; output streams to this terminal and the job's exit code is returned. When one
node fails the others are stopped, as their rendezvous could never complete, and the whole job restarts
(up to backoffLimit times) unless rank 0 said a restart cannot help.

    commands = local_commands(job, port=29500)          # pure: the argv and env of every node
    exit_code = run_job(job)                            # starts them and waits
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from torchyard.contract.restarts import verdict
from torchyard.contract.termination import PATH_VARIABLE, Termination
from torchyard.operator.api.spec import Job, TrainJob
from torchyard.operator.launch.agent_output import AgentNoise
from torchyard.operator.launch.command import (
    check_single_run,
    check_train_job,
    node_program,
    torchrun_options,
    work_dir_path,
)

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class NodeProcess:
    """What one node runs: its argv and the env variables added to this process's environment."""

    argv: list[str]
    env: dict[str, str]


def torchrun_executable() -> str:
    """The torchrun next to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "torchrun"
    return str(beside) if beside.exists() else (shutil.which("torchrun") or "torchrun")


def local_commands(
    job: Job, port: int, train_job: TrainJob | None = None, torchrun: str = "torchrun"
) -> list[NodeProcess]:
    """The argv and env of every node of `job` on this machine (pure)."""
    spec = job.spec
    check_single_run(job, "torchyard run")
    train_job = check_train_job(job, train_job)
    program = node_program(job, work_dir_path(job), train_job and work_dir_path(train_job))
    nodes = []
    for rank in range(spec.nodes):
        values = {
            "MASTER_ADDR": LOCALHOST,
            "MASTER_PORT": str(port),
            "NNODES": str(spec.nodes),
            "NODE_RANK": str(rank),
            "NPROC_PER_NODE": str(spec.nproc_per_node),
        }
        env = values | {f"PET_{name}": value for name, value in values.items()} | {"PYTHONUNBUFFERED": "1"}
        options = torchrun_options(spec.nodes, rank, spec.nproc_per_node, LOCALHOST, port)
        nodes.append(NodeProcess([torchrun, *options, *program], env))
    return nodes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def run_job(job: Job, train_job: TrainJob | None = None, poll_seconds: float = 0.2) -> int:
    """Run every node of `job` here; 0 once it succeeds, else the exit code of its last failure.

    A failure that spec.restartPolicy restarts (by default anything but an error rank 0 reports as not
    retryable, such as a bad config) restarts the whole gang, up to backoffLimit times, as the operator
    restarts pods; a TrainJob resumes from the last checkpoint (resume: auto)."""
    check_single_run(job, "torchyard run")  # before anything is written
    work_dir = Path(work_dir_path(job))
    work_dir.mkdir(parents=True, exist_ok=True)
    termination_log = work_dir / ".torchyard-run-termination.json"
    limit, restarts = job.spec.backoff_limit, 0
    while True:
        termination_log.unlink(missing_ok=True)
        code = _trainer_exit_code(termination_log, _run_gang(job, train_job, termination_log, poll_seconds))
        if code in (0, 128 + signal.SIGINT):
            return code
        restart, why = verdict(job.spec.restart_policy, _termination(termination_log), code)
        if not restart:
            _say(f"the job failed (exit {code}): {why} (see above); not restarting")
            return code
        if restarts == limit:
            _say(f"the job failed (exit {code}); no restarts left ({restarts} of backoffLimit={limit} used)")
            return code
        restarts += 1
        _say(f"a node failed (exit {code}); restarting the whole job ({restarts} of {limit})"
             + (", from the last checkpoint" if isinstance(job, TrainJob) else ""))


def run_torchrun(args: list[str]) -> int:
    """`torchrun ARGS` with torchyard's output: the trainer's lines without the agent's noise, and the
    trainer's exit code (torchrun's own is 1 for any failure), e.g. 3 for a config error."""
    with tempfile.TemporaryDirectory(prefix="torchyard-torchrun-") as folder:
        termination_log = Path(folder) / "termination.json"  # rank 0 writes it (trainer/termination.py)
        env = {**os.environ, PATH_VARIABLE: str(termination_log)}
        proc = subprocess.Popen([torchrun_executable(), *args], env=env, stderr=subprocess.PIPE, text=True,
                                bufsize=1)
        forwarder = threading.Thread(target=_forward_stderr, args=(proc,), daemon=True)
        forwarder.start()
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # torchrun got the SIGINT too and stops its workers
            code = proc.wait()
        forwarder.join(timeout=5)
        return _trainer_exit_code(termination_log, code if code >= 0 else 128 - code)


def _run_gang(job: Job, train_job: TrainJob | None, termination_log: Path, poll_seconds: float) -> int:
    """One attempt: the first failing node's exit code (the others are stopped), else 0."""
    port = job.spec.master_port or free_port()
    nodes = local_commands(job, port, train_job, torchrun=torchrun_executable())
    _say(f"{job.kind} {job.metadata.name}, {job.spec.nodes} node(s) x "
         f"{job.spec.nproc_per_node} process(es), master {LOCALHOST}:{port}")
    extra = {PATH_VARIABLE: str(termination_log)}  # only rank 0 writes it
    procs = [subprocess.Popen(node.argv, env={**os.environ, **node.env, **extra}, stderr=subprocess.PIPE,
                              text=True, bufsize=1) for node in nodes]
    forwarders = [threading.Thread(target=_forward_stderr, args=(proc,), daemon=True) for proc in procs]
    for forwarder in forwarders:
        forwarder.start()
    try:
        while True:
            codes = [proc.poll() for proc in procs]
            failed = next((code for code in codes if code not in (None, 0)), None)
            if failed is not None:
                _stop(procs)
                return failed
            if all(code == 0 for code in codes):
                return 0
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        _stop(procs)
        return 128 + signal.SIGINT
    finally:
        for forwarder in forwarders:
            forwarder.join(timeout=5)


def _forward_stderr(proc: subprocess.Popen) -> None:
    """The node's stderr (its workers' too) to ours, as it comes, without torchrun's own noise."""
    noise = AgentNoise()
    for line in proc.stderr:
        sys.stderr.writelines(noise.feed(line))
        sys.stderr.flush()
    sys.stderr.writelines(noise.flush())


def _trainer_exit_code(termination_log: Path, node_code: int) -> int:
    """torchrun exits 1 whatever its worker's code; rank 0's message keeps the trainer's own (3: config)."""
    if node_code in (0, 128 + signal.SIGINT):
        return node_code
    termination = _termination(termination_log)
    if termination is None or termination.status != "failed" or not termination.exit_code:
        return node_code
    return termination.exit_code


def _termination(termination_log: Path) -> Termination | None:
    """Rank 0's message; none when rank 0 was killed before writing it, or it cannot be read."""
    try:
        return Termination.parse(termination_log.read_text())
    except OSError:
        return None


def _say(message: str) -> None:
    print(f"torchyard run: {message}", file=sys.stderr, flush=True)


def _stop(procs: list[subprocess.Popen], grace_seconds: float = 10) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
