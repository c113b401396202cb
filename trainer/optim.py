"""``optim_wrapper`` configs: the optimizer, AMP, gradient clipping and accumulation.

    optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9), clip_grad=dict(max_norm=1.0),
                         accumulative_counts=2)

Every ``torch.optim`` optimizer is registered. ``param_scheduler`` is in schedulers.py.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.distributed as dist
from torch import nn

from torchyard.trainer.config import ConfigError
from torchyard.trainer.registry import OPTIMIZERS

OPTIMIZERS.register_all(
    cls for cls in vars(torch.optim).values()
    if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
)


class OptimWrapper:
    """One place for backward, AMP loss scaling, gradient accumulation, clipping and the optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, accumulative_counts: int = 1,
                 clip_grad: dict | None = None, amp_dtype: torch.dtype | None = None,
                 device: torch.device = torch.device("cpu")) -> None:  # noqa: B008 # torch.device is immutable
        if accumulative_counts < 1:
            raise ConfigError(f"optim_wrapper.accumulative_counts must be >= 1, got {accumulative_counts}")
        self.optimizer = optimizer
        self.accumulative_counts = accumulative_counts
        self.clip_grad = clip_grad
        self.amp_dtype = amp_dtype
        self.device = device
        # fp16 underflows without loss scaling; bf16 keeps fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
        self._pending = 0
        self._unsynced = False  # some gradient of the open window skipped DDP's all-reduce (no_sync)
        self.last_grad_norm: float | None = None

    @contextlib.contextmanager
    def autocast(self):
        if self.amp_dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                yield

    def sync_context(self, model: nn.Module):
        """Skip DDP's gradient all-reduce on the micro-steps of an accumulation window."""
        will_step = self._pending + 1 >= self.accumulative_counts
        if will_step or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
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
        if self.clip_grad:
            params = [p for group in self.optimizer.param_groups for p in group["params"]
                      if p.grad is not None]
            self.last_grad_norm = float(nn.utils.clip_grad_norm_(params, **self.clip_grad))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
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
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def build_optim_wrapper(cfg: dict, model: nn.Module, amp: bool, device: torch.device) -> OptimWrapper:
    if "optimizer" not in cfg:
        raise ConfigError("optim_wrapper: needs an 'optimizer', "
                          "e.g. dict(optimizer=dict(type='SGD', lr=0.1))")
    extra = set(cfg) - {"type", "optimizer", "clip_grad", "accumulative_counts", "dtype"}
    if extra:
        raise ConfigError(f"optim_wrapper: unknown key(s) {', '.join(sorted(extra))}; "
                          "known: optimizer, clip_grad, accumulative_counts, dtype")
    amp = amp or cfg.get("type") == "AmpOptimWrapper"
    amp_dtype = None
    if amp:
        default = "float16" if device.type == "cuda" else "bfloat16"
        name = cfg.get("dtype") or default
        if name not in ("float16", "bfloat16"):
            raise ConfigError(f"optim_wrapper.dtype: {name!r} is not an autocast type; "
                              "use float16 or bfloat16")
        amp_dtype = getattr(torch, name)
    optimizer = OPTIMIZERS.build(cfg["optimizer"], where="optim_wrapper.optimizer",
                                 params=[p for p in model.parameters() if p.requires_grad])
    return OptimWrapper(optimizer, cfg.get("accumulative_counts", 1), cfg.get("clip_grad"), amp_dtype, device)
