"""How the trainer learns its place in a job: the launchers of `--launcher`, as in mmengine.

Every backend starts the trainer under torchrun, so what it passes is `TORCHRUN`; the trainer reads that
launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR...) and nothing of Kubernetes or Slurm.
"""

from __future__ import annotations

LAUNCHERS = ("none", "pytorch", "slurm", "mpi")
TORCHRUN = "pytorch"
