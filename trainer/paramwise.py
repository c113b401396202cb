"""``optim_wrapper.paramwise_cfg``: per-parameter learning rates and weight decays, as mmengine's
DefaultOptimWrapperConstructor sets them.

    optim_wrapper = dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
                         paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                                            custom_keys={"backbone": dict(lr_mult=0.1)}))

A parameter whose full name contains a ``custom_keys`` key takes that key's ``lr_mult``/``decay_mult`` (the
longest matching key wins; its other entries go into the group as they are). Any other parameter: a bias
takes ``bias_lr_mult``; normalisation layers take ``norm_decay_mult``, else a bias ``bias_decay_mult``, else a
depthwise convolution ``dwconv_decay_mult``, else a 1-D parameter ``flat_decay_mult``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from torchyard.trainer.config import ConfigError

PARAMWISE_KEYS = {"custom_keys", "bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult",
                  "flat_decay_mult", "bypass_duplicate"}
NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, optimizer_cfg: dict, paramwise_cfg: dict | None) -> list[dict[str, Any]]:
    """One group per trainable parameter, with the learning rate and weight decay paramwise_cfg gives it."""
    cfg = paramwise_cfg or {}
    unknown = sorted(set(cfg) - PARAMWISE_KEYS)
    if "dcn_offset_lr_mult" in unknown:
        raise ConfigError("optim_wrapper.paramwise_cfg.dcn_offset_lr_mult: needs mmcv's deformable "
                          "convolutions, which torchyard does not have; remove it")
    if unknown:
        raise ConfigError(f"optim_wrapper.paramwise_cfg: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(PARAMWISE_KEYS))}")
    custom_keys = cfg.get("custom_keys") or {}
    if not isinstance(custom_keys, dict) or not all(isinstance(v, dict) for v in custom_keys.values()):
        raise ConfigError("optim_wrapper.paramwise_cfg.custom_keys: expected {'name part': dict(lr_mult=..., "
                          f"decay_mult=...)}}, got {custom_keys!r}")
    base_lr, base_wd = optimizer_cfg.get("lr"), optimizer_cfg.get("weight_decay")
    if base_lr is None and (custom_keys or cfg.get("bias_lr_mult") is not None):
        raise ConfigError("optim_wrapper.paramwise_cfg: lr multipliers need optimizer.lr")
    decay_mults = [key for key in ("bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult") if key in cfg]
    decay_mults += [f"custom_keys[{key!r}].decay_mult" for key, options in custom_keys.items()
                    if "decay_mult" in options]
    if base_wd is None and decay_mults:
        raise ConfigError(f"optim_wrapper.paramwise_cfg: {', '.join(decay_mults)} multiply "
                          "optimizer.weight_decay, which is not given; set it")
    keys = sorted(sorted(custom_keys), key=len, reverse=True)
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or (cfg.get("bypass_duplicate") and id(param) in seen):
                continue
            seen.add(id(param))
            group = {"params": [param]}
            key = next((key for key in keys if key in f"{prefix}.{name}"), None)
            if key is not None:
                group.update(_custom(custom_keys[key], base_lr, base_wd))
            else:
                group.update(_by_kind(module, name, param.ndim, cfg, base_lr, base_wd))
            groups.append(group)
    return groups


def _custom(options: dict, base_lr: float, base_wd: float | None) -> dict[str, Any]:
    group = {"lr": base_lr * options.get("lr_mult", 1.0)}
    if base_wd is not None:
        group["weight_decay"] = base_wd * options.get("decay_mult", 1.0)
    return {**group, **{k: v for k, v in options.items() if k not in ("lr_mult", "decay_mult")}}


def _by_kind(module: nn.Module, name: str, ndim: int, cfg: dict, base_lr: float | None,
             base_wd: float | None) -> dict[str, Any]:
    is_norm = isinstance(module, NORMS)
    is_dwconv = isinstance(module, nn.Conv2d) and module.in_channels == module.groups
    group = {}
    if name == "bias" and not is_norm and cfg.get("bias_lr_mult") is not None:
        group["lr"] = base_lr * cfg["bias_lr_mult"]
    if base_wd is None:
        return group
    for applies, key in ((is_norm, "norm_decay_mult"), (name == "bias", "bias_decay_mult"),
                         (is_dwconv, "dwconv_decay_mult"), (ndim == 1, "flat_decay_mult")):
        if applies and cfg.get(key) is not None:
            group["weight_decay"] = base_wd * cfg[key]
            break
    return group
