"""publish-model IN OUT: a checkpoint with the weights only, on CPU, named after its sha256 (as mmengine's
publish_model). The result loads with ``load_from`` and with ``torchyard-test``.

    torchyard tools publish-model work_dirs/shapes_fcn/epoch_12.pth shapes_fcn.pth  # shapes_fcn-1a2b3c4d.pth
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from torchyard.trainer.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a training checkpoint, or a work dir (its best, else last)")
    parser.add_argument("output", help="where to write; the name gets the first 8 hex digits of the sha256")


def run(args: argparse.Namespace) -> None:
    print(publish_model(args.input, args.output))


def publish_model(source: str | Path, output: str | Path,
                  keys: Sequence[str] = ("meta", "state_dict")) -> Path:
    """Keep ``keys`` of the checkpoint: by default ``state_dict`` (tensors moved to CPU) and ``meta`` (the
    config, epoch, versions), dropping the optimizer, schedulers, RNG and hook state. Returns the written
    file, ``<stem>-<sha256[:8]><suffix>``; ``output`` itself is never written, so it may be ``source``."""
    import torch

    from torchyard.trainer.checkpoint import digest_path, load_checkpoint, resolve_checkpoint, save_checkpoint

    state = load_checkpoint(resolve_checkpoint(source))
    weights = state.get("state_dict", state)
    if not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ConfigError(f"publish-model: {source} holds no state_dict of tensors; "
                          "pass a training checkpoint")
    published = {key: state[key] for key in keys if key in state and key != "state_dict"}
    if "state_dict" in keys:
        published["state_dict"] = {name: tensor.detach().cpu().clone() for name, tensor in weights.items()}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    unnamed = output.with_name(f".{output.stem}.publishing{output.suffix}")
    save_checkpoint(published, unnamed)
    digest = hashlib.sha256(unnamed.read_bytes()).hexdigest()
    final = output.with_name(f"{output.stem}-{digest[:8]}{output.suffix}")
    os.replace(unnamed, final)
    digest_path(unnamed).unlink(missing_ok=True)
    digest_path(final).write_text(f"{digest}  {final.name}\n")  # what every load verifies
    return final
