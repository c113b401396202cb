"""``model_wrapper_cfg=dict(type="FullyShard")``: FSDP2 (``torch.distributed.fsdp.fully_shard``) instead of
DDP, so that parameters, gradients and optimizer states are split across the ranks.

    model_wrapper_cfg = dict(type="FullyShard", reshard_after_forward=True,
                             mp_policy=dict(param_dtype="bfloat16", reduce_dtype="float32"))

Each direct child of the model that has parameters is sharded, then the model itself (the root holds what
is left), as torchtitan shards its blocks. Checkpoints keep the work dir's one-file layout: the full state is
gathered onto rank 0 (on the CPU) to be saved, and each rank takes its shard when loading, so a resume is
exact and the weights load in any run, sharded or not. As with DDP, a run of one process is not wrapped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchyard.trainer.config import ConfigError

WRAPPER = "FullyShard"
ARGS = {"type", "reshard_after_forward", "mp_policy"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def options(cfg: dict) -> dict[str, Any] | None:
    """fully_shard's arguments from ``model_wrapper_cfg``; None when it asks for DDP (or names nothing)."""
    wrapper = cfg.get("model_wrapper_cfg") or {}
    if not isinstance(wrapper, dict) or wrapper.get("type") != WRAPPER:
        return None
    unknown = sorted(set(wrapper) - ARGS)
    if unknown:
        raise ConfigError(f"model_wrapper_cfg: unknown key(s) {', '.join(unknown)} for FullyShard; known: "
                          f"{', '.join(sorted(ARGS - {'type'}))}")
    kwargs: dict[str, Any] = {}
    if "reshard_after_forward" in wrapper:
        if not isinstance(wrapper["reshard_after_forward"], bool):
            raise ConfigError("model_wrapper_cfg.reshard_after_forward: must be True or False, got "
                              f"{wrapper['reshard_after_forward']!r}")
        kwargs["reshard_after_forward"] = wrapper["reshard_after_forward"]
    policy = wrapper.get("mp_policy")
    if policy is not None:
        if not isinstance(policy, dict) or set(policy) - {"param_dtype", "reduce_dtype"}:
            raise ConfigError("model_wrapper_cfg.mp_policy: expected dict(param_dtype=..., reduce_dtype=...) "
                              f"with dtypes among {', '.join(DTYPES)}, got {policy!r}")
        dtypes = {}
        for key, name in policy.items():
            if name not in DTYPES:
                raise ConfigError(f"model_wrapper_cfg.mp_policy.{key}: {name!r} is not one of "
                                  f"{', '.join(DTYPES)}")
            dtypes[key] = DTYPES[name]
        from torch.distributed.fsdp import MixedPrecisionPolicy

        kwargs["mp_policy"] = MixedPrecisionPolicy(**dtypes)
    return kwargs


def shard(model: nn.Module, kwargs: dict[str, Any], device: torch.device) -> nn.Module:
    """The model, sharded in place: its children with parameters first, then the root."""
    from torch.distributed.fsdp import fully_shard

    policy = kwargs.get("mp_policy")
    low = policy is not None and policy.param_dtype not in (None, torch.float32)
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if low and device.type == "cpu" and has_batch_norm:
        # batch_norm on the CPU refuses weights in bfloat16 beside running statistics in float32
        raise ConfigError("model_wrapper_cfg.mp_policy.param_dtype: a model with BatchNorm cannot keep its "
                          "parameters in low precision on the CPU; use --amp (autocast) instead")

    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child, **kwargs)
    return fully_shard(model, **kwargs)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _full(cpu: bool = True, strict: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu, strict=strict)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full weights, on rank 0's CPU (empty elsewhere); a collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full())


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Full weights (every rank holds them) into the sharded model: each rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_full(cpu=False, strict=strict))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The full optimizer state, keyed by parameter name, on rank 0's CPU; a collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full())


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_full(cpu=False))
