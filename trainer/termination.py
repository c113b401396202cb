"""Leave rank 0's termination message (its format: torchyard/contract/termination.py) for whoever started
the run: Kubernetes reads ``/dev/termination-log``; ``TORCHYARD_TERMINATION_LOG`` names another file (the
local runner and the sbatch scripts give each node its own). Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from torchyard.contract.termination import DEFAULT_PATH, PATH_VARIABLE, encode

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")


def termination_log_path() -> Path | None:
    configured = os.environ.get(PATH_VARIABLE)
    if configured:
        return Path(configured)
    return Path(DEFAULT_PATH) if Path(DEFAULT_PATH).exists() else None


def is_rank_zero() -> bool:
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def write_termination_message(summary: dict) -> None:
    path = termination_log_path()
    if path is None or not is_rank_zero():
        return
    # A read-only or missing termination log must never turn a finished run into a failed one.
    with contextlib.suppress(OSError):
        path.write_text(encode(summary))
