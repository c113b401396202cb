"""Checkpoints written by other tools (mmengine's Runner, OpenMMLab's model zoos), for ``load_from``.

Their state holds objects of classes torchyard does not have (mmengine's MessageHub keeps HistoryBuffers and
numpy arrays), which ``torch.load(weights_only=True)`` refuses. They are loaded with weights_only all the
same: each such class is replaced by a stand-in that keeps its arguments and state and runs nothing, so that
no code of the file's choosing runs. numpy's array and dtype rebuilding, which is plain data, is allowed.
Only the weights are used.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchyard.trainer.checkpoint import CheckpointError, load_checkpoint

_NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
_multiarray = importlib.import_module("numpy._core.multiarray" if _NUMPY_2 else "numpy.core.multiarray")
# What numpy's arrays, scalars and dtypes pickle as (numpy 1 and 2 names), resolved to the real objects.
NUMPY_DATA = {
    "numpy.dtype": np.dtype,
    "numpy.ndarray": np.ndarray,
    "numpy.core.multiarray._reconstruct": _multiarray._reconstruct,
    "numpy._core.multiarray._reconstruct": _multiarray._reconstruct,
    "numpy.core.multiarray.scalar": _multiarray.scalar,
    "numpy._core.multiarray.scalar": _multiarray.scalar,
    "builtins.getattr": getattr,  # numpy 2 pickles dtypes as getattr(numpy.dtypes, "Float64DType")
}
# mmengine's load_checkpoint strips this prefix by default: weights saved from a DDP-wrapped model.
REVISE_KEYS = [(r"^module\.", "")]


class _StandInType(type):
    """A stand-in class answers any attribute with a further stand-in: pickles name methods as
    getattr(cls, "name") (mmengine's HistoryBuffer keeps its statistics methods that way)."""

    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _stand_in(f"{cls.__module__}.{cls.__qualname__}.{name}")


class StandIn(metaclass=_StandInType):
    """An object of a class this process does not load: its arguments and state are kept, nothing runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def load_weights_of(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights (``state_dict``) of a torchyard, mmengine or plain ``torch.save`` checkpoint."""
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        if "weights_only=True" not in str(err):
            raise
        state = _load_with_stand_ins(Path(path))
    weights = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(weights, dict):
        raise CheckpointError(f"load_from {path}: holds no state_dict of weights "
                              f"(found {type(weights).__name__})")
    return revise_keys(weights)


def revise_keys(weights: dict[str, torch.Tensor], rules: list[tuple[str, str]] = REVISE_KEYS) -> dict:
    revised = dict(weights)
    for pattern, replacement in rules:
        revised = {re.sub(pattern, replacement, key): value for key, value in revised.items()}
    return revised


def _load_with_stand_ins(path: Path) -> dict:
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    allowed = [(NUMPY_DATA[name], name) if name in NUMPY_DATA else (_stand_in(name), name) for name in names]
    # The dtype classes a getattr above yields are built from their state; they are data too.
    allowed += [cls for cls in vars(np.dtypes).values() if isinstance(cls, type)]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = next((line for line in str(err).splitlines() if "WeightsUnpickler" not in line
                       and line.strip() and "weights_only" not in line), str(err))
        raise CheckpointError(f"load_from {path}: cannot read it even with stand-ins for its classes: "
                              f"{detail.strip()}") from None


@functools.cache  # one class per name: the one registered is the one a getattr of its owner finds
def _stand_in(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return type(name, (StandIn,), {"__module__": module, "__qualname__": name})
