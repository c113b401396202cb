"""Every error the control plane raises on purpose, in one place: what each means and who handles it.

    TorchyardError                 the base: catch it to catch any of these
    ├── SpecError (ValueError)     a job file or object is invalid; `problems` lists (field path, message).
    │   │                          The CLI prints it and exits 2; the operator fails the job (InvalidSpec).
    │   └── NotAllowed             valid, but this operator's policy refuses it: a field would reach beyond
    │                              the job's namespace (a path, an sbatch option). The job fails (NotAllowed).
    ├── RenderError (ValueError)   a valid job cannot run on this backend as given (a TestJob without its
    │                              TrainJob, a work dir it cannot reach); handled like SpecError.
    ├── ApiError                   the Kubernetes API server answered with an error (`status`, `reason`).
    │                              5xx and 429 are retried with back-off; other refusals show in the job's
    │                              status and events (CreateRefused). The Client (client.py) raises it too,
    │                              with the server's own message; the CLI prints that and exits 1.
    ├── ClientError (ValueError)   a Client call that cannot be done as asked: a name both kinds use, a node
    │                              the job does not have. The CLI prints it and exits 2.
    └── SlurmError (RuntimeError)  a Slurm command failed or is missing; the message names the fix.
        └── Unschedulable          queued, but it can never start as written (PartitionNodeLimit...).

The trainer's errors (torchyard.trainer.config.ConfigError, torchyard.trainer.checkpoint.CheckpointError)
never cross to this side as exceptions: they become the exit code and the termination message of the
contract (torchyard.contract.exitcodes, torchyard.contract.termination).
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ClientError",
    "NotAllowed",
    "RenderError",
    "SlurmError",
    "SpecError",
    "TorchyardError",
    "Unschedulable",
]


class TorchyardError(Exception):
    """The base of every error the control plane raises on purpose."""


class SpecError(TorchyardError, ValueError):
    """A job spec is invalid; `problems` holds (field path, message) pairs, and str() lists them all."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        where = f"{source}: " if source else ""
        lines = [f"{path or '(top level)'}: {message}" for path, message in problems]
        super().__init__(f"{where}invalid job spec\n  " + "\n  ".join(lines))


class NotAllowed(SpecError):
    """The spec is valid, but the operator's policy refuses what a field names; `problems` says which."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        where = f"{source}: " if source else ""
        lines = [f"{path}: {message}" for path, message in problems]
        TorchyardError.__init__(self, f"{where}not allowed by this operator\n  " + "\n  ".join(lines))


class RenderError(TorchyardError, ValueError):
    """The job cannot be rendered for this backend as given; the message names the field and the fix."""


class ApiError(TorchyardError):
    """The API server answered with an error; `reason` is Kubernetes' (NotFound, AlreadyExists, ...)."""

    def __init__(self, status: int, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.retry_after_s = retry_after_s  # the server's Retry-After, when it sent one


class ClientError(TorchyardError, ValueError):
    """A Client call that cannot be carried out as asked; the message says what to ask instead."""


class SlurmError(TorchyardError, RuntimeError):
    """A Slurm command failed or is missing; the message names the command and the likely fix."""


class Unschedulable(SlurmError):
    """The job is queued but can never start as written (e.g. PENDING with Reason=PartitionNodeLimit)."""
