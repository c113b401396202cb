"""``optim_wrapper`` configs: the optimizer, AMP, gradient clipping and accumulation.

    optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9), clip_grad=dict(max_norm=1.0),
                         accumulative_counts=2)

Every ``torch.optim`` optimizer is registered. ``param_scheduler`` is in schedulers.py.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from torchyard.trainer.config import ConfigError
from torchyard.trainer.paramwise import param_groups
from torchyard.trainer.registry import OPTIMIZERS

# Entered every step; a nullcontext holds no state, so one serves every `with` (a new context manager per
# step costs about 2 us, a tenth of the whole loop's own cost on a tiny model).
NO_CONTEXT = contextlib.nullcontext()

OPTIMIZERS.register_all(
    cls for cls in vars(torch.optim).values()
    if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
)


class OptimWrapper:
    """One place for backward, AMP loss scaling, gradient accumulation, clipping and the optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, accumulative_counts: int = 1,
                 clip_grad: dict | None = None, amp_dtype: torch.dtype | None = None,
                 device: torch.device = torch.device("cpu"),  # noqa: B008 # torch.device is immutable
                 loss_scale: str | float | dict = "dynamic") -> None:
        if accumulative_counts < 1:
            raise ConfigError(f"optim_wrapper.accumulative_counts must be >= 1, got {accumulative_counts}")
        self.optimizer = optimizer
        self.accumulative_counts = accumulative_counts
        self.clip_grad, self.clip = _clipper(clip_grad)
        self.amp_dtype = amp_dtype
        self.device = device
        # fp16 underflows without loss scaling; bf16 keeps fp32's range and needs none.
        self.scaler, self._static_scale = (_scaler(loss_scale, device) if amp_dtype == torch.float16
                                           else (None, None))
        self._pending = 0
        self._unsynced = False  # some gradient of the open window skipped DDP's all-reduce (no_sync)
        self.last_grad_norm: float | None = None

    def autocast(self):
        if self.amp_dtype is None:
            return NO_CONTEXT
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def sync_context(self, model: nn.Module):
        """Skip DDP's gradient all-reduce on the micro-steps of an accumulation window."""
        will_step = self._pending + 1 >= self.accumulative_counts
        if will_step or not hasattr(model, "no_sync"):
            return NO_CONTEXT
        self._unsynced = True
        return model.no_sync()

    def update(self, loss: torch.Tensor) -> bool:
        """Backward ``loss``; step when the accumulation window is full. Returns whether it stepped."""
        if self.accumulative_counts > 1:  # dividing by 1 would only add an op and an autograd node per step
            loss = loss / self.accumulative_counts
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        self._pending += 1
        if self._pending < self.accumulative_counts:
            return False
        self.step()
        return True

    def step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.clip is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]
                      if p.grad is not None]
            norm = self.clip(params)
            if hasattr(norm, "full_tensor"):  # a sharded model's gradients give a DTensor norm
                norm = norm.full_tensor()
            self.last_grad_norm = None if norm is None else float(norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update(self._static_scale)
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._pending = 0
        self._unsynced = False

    def flush(self) -> None:
        """Apply a partly filled accumulation window (at the end of an epoch), so no gradient is dropped.

        Its losses were divided by ``accumulative_counts``; rescale to the mean over the micro-batches seen
        (as mmengine does), and all-reduce what DDP's ``no_sync`` left unsynchronised.
        """
        if not self._pending:
            return
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self._unsynced and dist.is_available() and dist.is_initialized():
            for grad in grads:
                dist.all_reduce(grad)
                grad.div_(dist.get_world_size())
        for grad in grads:
            grad.mul_(self.accumulative_counts / self._pending)
        self.step()

    @property
    def at_boundary(self) -> bool:
        return self._pending == 0

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def scale_lr(self, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.scaler:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """``state["optimizer"]`` None: the optimizer's state is loaded elsewhere (a sharded model's)."""
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


OPTIM_WRAPPER_KEYS = {"type", "optimizer", "clip_grad", "accumulative_counts", "dtype", "loss_scale",
                      "paramwise_cfg", "constructor"}


def build_optim_wrapper(cfg: dict, model: nn.Module, amp: bool, device: torch.device) -> OptimWrapper:
    if "optimizer" not in cfg:
        raise ConfigError("optim_wrapper: needs an 'optimizer', "
                          "e.g. dict(optimizer=dict(type='SGD', lr=0.1))")
    extra = set(cfg) - OPTIM_WRAPPER_KEYS
    if extra:
        raise ConfigError(f"optim_wrapper: unknown key(s) {', '.join(sorted(extra))}; "
                          f"known: {', '.join(sorted(OPTIM_WRAPPER_KEYS))}")
    if cfg.get("type", "OptimWrapper") not in ("OptimWrapper", "AmpOptimWrapper"):
        raise ConfigError(f"optim_wrapper.type: {cfg['type']!r} is not supported; use 'OptimWrapper' or "
                          "'AmpOptimWrapper'")
    if cfg.get("constructor", "DefaultOptimWrapperConstructor") != "DefaultOptimWrapperConstructor":
        raise ConfigError(f"optim_wrapper.constructor: {cfg['constructor']!r} is not supported; "
                          "paramwise_cfg covers DefaultOptimWrapperConstructor's options")
    amp = amp or cfg.get("type") == "AmpOptimWrapper"
    amp_dtype = None
    if amp:
        default = "float16" if device.type == "cuda" else "bfloat16"
        name = cfg.get("dtype") or default
        if name not in ("float16", "bfloat16"):
            raise ConfigError(f"optim_wrapper.dtype: {name!r} is not an autocast type; "
                              "use float16 or bfloat16")
        amp_dtype = getattr(torch, name)
    optimizer_cfg = cfg["optimizer"]
    params = (param_groups(model, optimizer_cfg, cfg["paramwise_cfg"]) if cfg.get("paramwise_cfg")
              else [p for p in model.parameters() if p.requires_grad])
    optimizer = OPTIMIZERS.build(optimizer_cfg, where="optim_wrapper.optimizer", params=params)
    return OptimWrapper(optimizer, cfg.get("accumulative_counts", 1), cfg.get("clip_grad"), amp_dtype, device,
                        cfg.get("loss_scale", "dynamic"))


def _clipper(clip_grad: dict | None) -> tuple[dict | None, Callable | None]:
    """mmengine's clip_grad: dict(max_norm=..., norm_type=2) (type='norm'), or dict(type='value',
    clip_value=...). The clipper returns the gradients' total norm before clipping, or None by value."""
    if not clip_grad:
        return None, None
    options = dict(clip_grad)
    kind = options.pop("type", "norm")
    function = {"norm": nn.utils.clip_grad_norm_, "value": nn.utils.clip_grad_value_}.get(kind)
    if function is None:
        raise ConfigError(f"optim_wrapper.clip_grad.type: {kind!r} is not 'norm' or 'value'")
    try:
        inspect.signature(function).bind([], **options)
    except TypeError as err:
        raise ConfigError(f"optim_wrapper.clip_grad: {err} (by {kind}: "
                          f"{'max_norm, norm_type' if kind == 'norm' else 'clip_value'})") from None
    return clip_grad, lambda params: function(params, **options)


def _scaler(loss_scale: str | float | dict,
            device: torch.device) -> tuple[torch.amp.GradScaler, float | None]:
    """mmengine's AmpOptimWrapper loss_scale: 'dynamic', a fixed scale, or GradScaler's arguments."""
    if loss_scale == "dynamic":
        return torch.amp.GradScaler(device.type), None
    if isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool) and loss_scale > 0:
        return torch.amp.GradScaler(device.type, init_scale=float(loss_scale)), float(loss_scale)
    if isinstance(loss_scale, dict):
        try:
            return torch.amp.GradScaler(device.type, **loss_scale), None
        except TypeError as err:
            raise ConfigError(f"optim_wrapper.loss_scale: {err}") from None
    raise ConfigError(f"optim_wrapper.loss_scale: expected 'dynamic', a positive number or GradScaler's "
                      f"arguments as a dict, got {loss_scale!r}")
