"""``--show-dir``: VisualizationHook saves PNG pictures of predictions, drawn by the model's ``visualize``
(a picture per sample; the drawing helpers are torchyard.trainer.visualization's).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks import Hook
from torchyard.trainer.registry import HOOKS

if TYPE_CHECKING:
    import torch

    from torchyard.trainer.runner import Runner


@HOOKS.register()
class VisualizationHook(Hook):
    """Saves ``show_dir/<index>.png`` for the first ``max_samples`` test (or validation) samples."""

    def __init__(self, show_dir: str | None = None, max_samples: int = 64, on_val: bool = False,
                 enable: bool = True) -> None:
        if enable and show_dir is None:
            raise ConfigError("VisualizationHook: needs show_dir (or torchyard-test --show-dir DIR); "
                              "enable=False switches it off")
        self.enabled = enable
        self.show_dir = Path(show_dir) if show_dir else None
        self.max_samples = max_samples
        self.on_val = on_val
        self.saved = 0

    def before_run(self, runner: Runner) -> None:
        if not self.enabled:  # as OpenMMLab's runtime files build it: present, drawing nothing
            return
        if not hasattr(runner.unwrapped_model, "visualize"):
            raise ConfigError(f"--show-dir: {type(runner.unwrapped_model).__name__} has no visualize(batch, "
                              "outputs) method, so its predictions cannot be drawn")
        if runner.env.is_main:
            self.show_dir.mkdir(parents=True, exist_ok=True)

    def after_test_iter(self, runner: Runner, batch: dict, outputs: torch.Tensor) -> None:
        if not self.enabled or not runner.env.is_main or self.saved >= self.max_samples:
            return
        pictures = runner.unwrapped_model.visualize(batch, outputs)
        for index, picture in pictures[: self.max_samples - self.saved]:
            Image.fromarray(picture).save(self.show_dir / f"{index:05d}.png")
            self.saved += 1

    def after_val_iter(self, runner: Runner, batch: dict, outputs: torch.Tensor) -> None:
        if self.on_val:
            self.after_test_iter(runner, batch, outputs)


@HOOKS.register()
class SegVisualizationHook(VisualizationHook):
    """MMSegmentation's name, as its schedule files write it: ``draw=False`` (their default) draws nothing;
    pictures come from torchyard-test --show-dir."""

    def __init__(self, draw: bool = False, interval: int = 50, show: bool = False, wait_time: float = 0.0,
                 backend_args: dict | None = None) -> None:
        if draw or show:
            raise ConfigError("SegVisualizationHook: draw=True/show=True is not supported; "
                              "torchyard-test --show-dir DIR saves the pictures")
        super().__init__(enable=False)
