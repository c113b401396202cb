"""The run's text log (rank 0 writes the file; other ranks log warnings and errors to the console) and how
numbers are printed in it. LoggerHook (hooks/logger.py) writes the scalars.
"""

from __future__ import annotations

import logging
import resource
import sys
from pathlib import Path

import torch

LOGGER_NAME = "torchyard"


def setup_logger(work_dir: Path, rank: int, filename: str, level: str = "INFO") -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level if rank == 0 else "WARNING")
    formatter = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
        log_file = logging.FileHandler(work_dir / filename)
        log_file.setFormatter(formatter)
        logger.addHandler(log_file)
    return logger


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_metrics(metrics: dict) -> str:
    """``accuracy/top1: 97.77 accuracy/top3: 100``; per-class lists print as lists."""
    return " ".join(f"{key}: {_fmt(value)}" for key, value in metrics.items())
