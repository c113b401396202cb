"""The smallest valid TrainJob and TestJob, and `make` for variants of them (tests everywhere start here)."""

from __future__ import annotations

import copy

TRAIN = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TrainJob",
    "metadata": {"name": "digits-mlp"},
    "spec": {"image": "torchyard/trainer:0.1.0", "config": "configs/digits_mlp.py", "nodes": 2},
}
TEST = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TestJob",
    "metadata": {"name": "digits-eval"},
    "spec": {
        "image": "torchyard/trainer:0.1.0",
        "config": "configs/digits_mlp.py",
        "checkpoint": "/ckpt/best.pth",
    },
}


def make(base: dict, **spec) -> dict:
    """A copy of `base` with spec fields (snake_case or camelCase) replaced."""
    data = copy.deepcopy(base)
    data["spec"].update(spec)
    return data
