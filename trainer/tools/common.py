"""What several tools share: building a config's model, and loading a checkpoint's weights into it."""

from __future__ import annotations

from pathlib import Path

from torchyard.trainer.config import Config, ConfigError


def load_config(path: str | Path, cfg_options: list[str] | None = None) -> Config:
    """The config with its custom_imports imported and every built-in model, dataset and metric registered."""
    import torchyard.trainer.runner  # noqa: F401 - importing registers the built-in models, datasets, metrics
    from torchyard.trainer.registry import import_custom_modules

    cfg = Config.fromfile(path, cfg_options=cfg_options)
    import_custom_modules(cfg.get("custom_imports"))
    if "model" not in cfg:
        raise ConfigError(f"{path}: has no model = dict(type=...)")
    return cfg


def build_model(cfg: Config):
    from torchyard.trainer.registry import MODELS

    return MODELS.build(cfg.model, where="model")


def load_weights(model, checkpoint: str | Path) -> Path:
    """Load a checkpoint (a file or a work dir: its best, else last) strictly; returns the file used."""
    from torchyard.trainer.checkpoint import load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    weights = state.get("state_dict", state)
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f"checkpoint {path} does not fit {type(model).__name__}: "
                          f"{len(result.missing_keys)} weights missing (e.g. {result.missing_keys[:3]}), "
                          f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}); "
                          "is it a checkpoint of another config?")
    return path
