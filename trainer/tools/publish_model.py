"""publish-model IN OUT: a checkpoint with the weights only, on CPU, named after its sha256 (as mmengine's
publish_model). The result loads with ``load_from`` and with ``torchyard-test``.

    torchyard tools publish-model work_dirs/shapes_fcn/epoch_12.pth shapes_fcn.pth  # shapes_fcn-1a2b3c4d.pth
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from torchyard.trainer.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a training checkpoint, or a work dir (its best, else last)")
    parser.add_argument("output", help="where to write; the name gets the first 8 hex digits of the sha256")


def run(args: argparse.Namespace) -> None:
    print(publish_model(args.input, args.output))


def publish_model(source: str | Path, output: str | Path) -> Path:
    """Keep ``state_dict`` (tensors moved to CPU) and ``meta`` (the config, epoch, versions); drop the
    optimizer, schedulers, RNG and hook state. Returns the written file, ``<stem>-<sha256[:8]><suffix>``."""
    import torch

    from torchyard.trainer.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint

    state = load_checkpoint(resolve_checkpoint(source))
    weights = state.get("state_dict", state)
    if not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ConfigError(f"publish-model: {source} holds no state_dict of tensors; "
                          "pass a training checkpoint")
    published = {"state_dict": {name: tensor.detach().cpu().clone() for name, tensor in weights.items()}}
    if "meta" in state:
        published["meta"] = state["meta"]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(published, output)
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    final = output.with_name(f"{output.stem}-{digest[:8]}{output.suffix}")
    os.replace(output, final)
    return final
