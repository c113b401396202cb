"""Where node 0's rendezvous listens: one rule for the trainer's launchers and the sbatch scripts.

On Slurm two jobs may share a node, so the port comes from the job id unless the spec sets one.
"""

from __future__ import annotations

DEFAULT_MASTER_PORT = 29500
SLURM_PORT_BASE = 10000
SLURM_PORT_SPAN = 20000


def slurm_port(job_id: int) -> int:
    """The port of Slurm job `job_id`."""
    return SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN


def slurm_port_shell(job_id_variable: str = "SLURM_JOB_ID") -> str:
    """The same rule as a bash arithmetic expansion, for a script that runs inside the job."""
    return f"$(({SLURM_PORT_BASE} + {job_id_variable} % {SLURM_PORT_SPAN}))"
