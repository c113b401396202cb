"""The runtime sections of an mmengine config, as OpenMMLab's ``default_runtime.py`` and schedule files write
them, read and checked in one place.

Each key is honoured with mmengine's meaning, refused by name with what to do instead, or, where mmengine
itself only uses it for something torchyard does not do, tolerated with a warning. Any other top-level name
is a config variable (``data_root``, ``crop_size``, ``train_pipeline``...), as in mmengine.

Pure standard library, like config.py: nothing here needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchyard.trainer.config import ConfigError

TRAIN_LOOPS = {"EpochBasedTrainLoop": True, "IterBasedTrainLoop": False}
TRAIN_CFG_KEYS = {"type", "by_epoch", "max_epochs", "max_iters", "val_interval", "val_begin"}
EVAL_LOOPS = {"val_cfg": "ValLoop", "test_cfg": "TestLoop"}
VIS_BACKENDS = {"LocalVisBackend": "local", "TensorboardVisBackend": "tensorboard",
                "TensorBoardVisBackend": "tensorboard", "MLflowVisBackend": "mlflow"}
VIS_BACKEND_KEYS = {
    "local": {"type", "save_dir"},
    "tensorboard": {"type", "save_dir"},
    "mlflow": {"type", "save_dir", "exp_name", "run_name", "tags", "params", "tracking_uri",
               "artifact_suffix", "tracked_config_keys", "artifact_location"},
}
LOG_PROCESSOR_KEYS = {"type", "window_size", "by_epoch", "num_digits", "custom_cfg", "log_with_hierarchy",
                      "mean_pattern"}

# mmengine keys whose feature torchyard does not have: refused, saying what to do instead.
REFUSED = {
    "compile": "torch.compile is not supported yet; remove compile",
    "strategy": "FlexibleRunner strategies (DeepSpeed, FSDP, ColossalAI) are not supported; for FSDP set "
                "model_wrapper_cfg=dict(type='FullyShard') and remove strategy",
    "cfg": "cfg is mmengine's Runner argument, not a config key; remove it",
}
# mmengine keys only used by something torchyard does not do: tolerated, with a warning saying so.
TOLERATED = {
    "tta_model": "used only by test-time augmentation (--tta), which torchyard-test does not do",
    "tta_pipeline": "used only by test-time augmentation (--tta), which torchyard-test does not do",
    "experiment_name": "names mmengine's timestamped log folder; torchyard logs to the work dir's train.log",
}


@dataclass(frozen=True)
class Randomness:
    seed: int | None  # None: draw one at start, the same on every rank, and log it
    deterministic: bool = False
    diff_rank_seed: bool = False  # seed + rank on each rank, else the same seed everywhere


@dataclass(frozen=True)
class EnvCfg:
    cudnn_benchmark: bool = False
    mp_start_method: str | None = None
    backend: str | None = None  # None: nccl on CUDA, gloo on the CPU


# mmengine's DDP wrappers; the arguments go to torch's DistributedDataParallel.
MODEL_WRAPPERS = {"MMDistributedDataParallel", "DistributedDataParallel"}
DDP_ARGS = {"find_unused_parameters", "broadcast_buffers", "bucket_cap_mb", "gradient_as_bucket_view",
            "static_graph", "detect_anomalous_params"}


def ddp_kwargs(cfg: dict) -> dict[str, Any]:
    """``model_wrapper_cfg``: DistributedDataParallel's arguments (``find_unused_parameters``...)."""
    wrapper = dict(cfg.get("model_wrapper_cfg") or {})
    kind = wrapper.pop("type", "MMDistributedDataParallel")
    if kind not in MODEL_WRAPPERS:
        raise ConfigError(f"model_wrapper_cfg.type: {kind!r} is not supported; use "
                          f"{' or '.join(sorted(MODEL_WRAPPERS))} (DDP), or FullyShard (FSDP2)")
    _known(wrapper, DDP_ARGS, "model_wrapper_cfg")
    if wrapper.pop("detect_anomalous_params", False):
        raise ConfigError("model_wrapper_cfg.detect_anomalous_params: not supported; "
                          "find_unused_parameters=True names unused parameters in its error")
    return wrapper


def check_top_level(cfg: dict) -> list[str]:
    """Refuse what torchyard cannot honour; return warnings for what it tolerates."""
    for key, why in REFUSED.items():
        if cfg.get(key) not in (None, {}, False):
            raise ConfigError(f"{key}: not supported: {why}")
    return [f"{key}: ignored: {why}" for key, why in TOLERATED.items() if cfg.get(key) is not None]


def train_loop_by_epoch(train_cfg: dict) -> bool:
    """Whether ``train_cfg`` counts epochs (EpochBasedTrainLoop) or iterations (IterBasedTrainLoop)."""
    _known(train_cfg, TRAIN_CFG_KEYS, "train_cfg")
    loop = train_cfg.get("type")
    by_epoch = train_cfg.get("by_epoch")
    if loop is None:
        return True if by_epoch is None else bool(by_epoch)
    if loop not in TRAIN_LOOPS:
        raise ConfigError(f"train_cfg.type: {loop!r} is not a training loop here; use one of "
                          f"{', '.join(TRAIN_LOOPS)} (or by_epoch=True/False)")
    if by_epoch is not None and bool(by_epoch) != TRAIN_LOOPS[loop]:
        raise ConfigError(f"train_cfg: type={loop!r} and by_epoch={by_epoch!r} disagree; give one of them")
    return TRAIN_LOOPS[loop]


def check_eval_loop(cfg: dict, key: str) -> None:
    """``val_cfg``/``test_cfg``: mmengine's ValLoop/TestLoop, which is how torchyard evaluates."""
    loop = cfg.get(key) or {}
    if not isinstance(loop, dict):
        raise ConfigError(f"{key}: expected a dict such as dict(type={EVAL_LOOPS[key]!r}), got {loop!r}")
    _known(loop, {"type", "fp16"}, key)
    if loop.get("type", EVAL_LOOPS[key]) != EVAL_LOOPS[key]:
        raise ConfigError(f"{key}.type: {loop['type']!r} is not supported; use {EVAL_LOOPS[key]!r}")
    if loop.get("fp16"):
        raise ConfigError(f"{key}.fp16: not supported; --amp (or optim_wrapper.type='AmpOptimWrapper') "
                          "also runs evaluation under autocast")


def randomness(cfg: dict) -> Randomness:
    section = cfg.get("randomness") or {}
    _known(section, {"seed", "deterministic", "diff_rank_seed"}, "randomness")
    seed = section.get("seed", 0)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ConfigError(f"randomness.seed: must be an integer or None (a random seed), got {seed!r}")
    return Randomness(seed, bool(section.get("deterministic", False)),
                      bool(section.get("diff_rank_seed", False)))


def env_cfg(cfg: dict) -> EnvCfg:
    section = cfg.get("env_cfg") or {}
    _known(section, {"cudnn_benchmark", "mp_cfg", "dist_cfg"}, "env_cfg")
    mp_cfg = section.get("mp_cfg") or {}
    _known(mp_cfg, {"mp_start_method", "opencv_num_threads"}, "env_cfg.mp_cfg")
    dist_cfg = section.get("dist_cfg") or {}
    _known(dist_cfg, {"backend"}, "env_cfg.dist_cfg")
    backend = dist_cfg.get("backend")
    if backend not in (None, "nccl", "gloo", "mpi"):
        raise ConfigError(f"env_cfg.dist_cfg.backend: {backend!r} is not a torch.distributed backend; "
                          "use nccl, gloo or mpi")
    return EnvCfg(bool(section.get("cudnn_benchmark", False)), mp_cfg.get("mp_start_method"), backend)


def vis_backends(cfg: dict) -> dict[str, dict]:
    """Where scalars go besides the log: "local" (the work dir's scalars.jsonl), "tensorboard" and "mlflow",
    each with its arguments (trainer/vis_backends.py); ``save_dir`` falls back to the visualizer's."""
    visualizer = cfg.get("visualizer")
    if not visualizer:
        return {"local": {}}
    if not isinstance(visualizer, dict):
        raise ConfigError("visualizer: expected dict(type='Visualizer', vis_backends=[...]), "
                          f"got {visualizer!r}")
    _known(visualizer, {"type", "vis_backends", "name", "save_dir"}, "visualizer")
    kinds: dict[str, dict] = {}
    for i, backend in enumerate(visualizer.get("vis_backends") or [{"type": "LocalVisBackend"}]):
        where = f"visualizer.vis_backends[{i}]"
        kind = VIS_BACKENDS.get(backend.get("type") if isinstance(backend, dict) else backend)
        if kind is None:
            raise ConfigError(f"{where}: {backend!r} is not supported; use "
                              f"{', '.join(sorted(set(VIS_BACKENDS) - {'TensorboardVisBackend'}))}")
        options = dict(backend) if isinstance(backend, dict) else {"type": backend}
        _known(options, VIS_BACKEND_KEYS[kind], where)
        if kind == "local":
            if options.get("save_dir"):
                raise ConfigError(f"{where}.save_dir: scalars.jsonl is always written to the work dir; "
                                  "remove it")
            kinds[kind] = {}
            continue
        options.pop("type")
        save_dir = options.get("save_dir") or visualizer.get("save_dir")
        kinds[kind] = {**options, **({"save_dir": save_dir} if save_dir else {})}
    return kinds


def check_log_processor(cfg: dict, logger_interval: int) -> list[str]:
    """mmengine's LogProcessor smooths over ``window_size`` iterations; torchyard over each log interval."""
    section = cfg.get("log_processor") or {}
    _known(section, LOG_PROCESSOR_KEYS, "log_processor")
    if section.get("type", "LogProcessor") != "LogProcessor":
        raise ConfigError(f"log_processor.type: {section['type']!r} is not supported; use 'LogProcessor'")
    for key in ("custom_cfg", "log_with_hierarchy", "mean_pattern"):
        if section.get(key):
            raise ConfigError(f"log_processor.{key}: not supported; remove it")
    window = section.get("window_size", 10)
    if window != logger_interval:
        return [f"log_processor.window_size={window!r}: logged values are means over each logging interval "
                f"({logger_interval} iterations), not over a window of {window}"]
    return []


def _known(section: Any, keys: set[str], where: str) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a dict, got {section!r}")
    unknown = sorted(set(section) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: "
                          f"{', '.join(sorted(keys))}")
