"""Launchers: read the standard environment of torchrun, srun or mpirun and join the process group.

The trainer knows nothing of Kubernetes or Slurm beyond these variables (see DESIGN.md, environment contract).
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from torchyard.contract.launchers import LAUNCHERS
from torchyard.contract.ports import DEFAULT_MASTER_PORT, slurm_port
from torchyard.trainer.config import ConfigError
from torchyard.trainer.runtime import EnvCfg


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _require(env: Mapping[str, str], launcher: str, names: tuple[str, ...]) -> dict[str, str]:
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise ConfigError(
            f"--launcher {launcher}: environment variable(s) {', '.join(missing)} not set. "
            + {
                "pytorch": "Start the trainer with torchrun "
                           "(torchrun --nproc-per-node=N -m torchyard.trainer.train ...).",
                "slurm": "Start the trainer inside an allocation with srun (one task per process).",
                "mpi": "Start the trainer with mpirun, and export MASTER_ADDR for multi-node jobs.",
            }[launcher]
        )
    return {name: env[name] for name in names}


def _int(env: Mapping[str, str], name: str, launcher: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"--launcher {launcher}: {name}={env[name]!r} is not an integer") from None


def parse_launcher_env(launcher: str, env: Mapping[str, str]) -> DistEnv:
    """Pure: the launcher's variables in, this process's place in the job out."""
    if launcher == "none":
        return DistEnv()
    if launcher == "pytorch":
        _require(env, launcher, ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
        world_size = _int(env, "WORLD_SIZE", launcher)
        return DistEnv(
            rank=_int(env, "RANK", launcher),
            world_size=world_size,
            local_rank=_int(env, "LOCAL_RANK", launcher),
            local_world_size=(
                _int(env, "LOCAL_WORLD_SIZE", launcher) if env.get("LOCAL_WORLD_SIZE") else world_size
            ),
            master_addr=env["MASTER_ADDR"],
            master_port=_int(env, "MASTER_PORT", launcher),
        )
    if launcher == "slurm":
        # The job id is only needed to derive the port; without it every job would take the same one.
        _require(env, launcher, ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_JOB_NODELIST")
                 + (() if env.get("MASTER_PORT") else ("SLURM_JOB_ID",)))
        ntasks = _int(env, "SLURM_NTASKS", launcher)
        nnodes = _int(env, "SLURM_NNODES", launcher) if env.get("SLURM_NNODES") else 1
        return DistEnv(
            rank=_int(env, "SLURM_PROCID", launcher),
            world_size=ntasks,
            local_rank=_int(env, "SLURM_LOCALID", launcher),
            local_world_size=max(ntasks // max(nnodes, 1), 1),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(env["SLURM_JOB_NODELIST"]),
            master_port=(_int(env, "MASTER_PORT", launcher) if env.get("MASTER_PORT")
                         else slurm_port(_int(env, "SLURM_JOB_ID", launcher))),
        )
    if launcher == "mpi":
        _require(env, launcher,
                 ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"))
        world_size = _int(env, "OMPI_COMM_WORLD_SIZE", launcher)
        if world_size > 1 and not env.get("MASTER_ADDR"):
            # Every rank must agree on one rendezvous host; mpirun does not say which one that is.
            raise ConfigError("--launcher mpi: MASTER_ADDR is not set; export the first host's address "
                              "(mpirun -x MASTER_ADDR=host0 ...)")
        return DistEnv(
            rank=_int(env, "OMPI_COMM_WORLD_RANK", launcher),
            world_size=world_size,
            local_rank=_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", launcher),
            local_world_size=(_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", launcher)
                              if env.get("OMPI_COMM_WORLD_LOCAL_SIZE") else world_size),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT", launcher) if env.get("MASTER_PORT") else DEFAULT_MASTER_PORT,
        )
    raise ConfigError(f"--launcher {launcher!r} is unknown; choose one of {', '.join(LAUNCHERS)}")


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[003-005,007],cpu01``."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass  # no scontrol here (e.g. a test); the list syntax is simple enough to expand by hand
    # The first host expression (up to a comma outside brackets): "rack[1-2]-gpu[01-04]", "node[3-4]-ib".
    match = re.match(r"(?:[^\[\],]+|\[[^\]]+\])+", nodelist.strip())
    if not match:
        raise ConfigError(f"--launcher slurm: cannot read SLURM_JOB_NODELIST={nodelist!r}")
    return re.sub(r"\[([^\]]+)\]", lambda ranges: ranges.group(1).split(",")[0].split("-")[0], match.group(0))


def init_distributed(launcher: str, env: Mapping[str, str] | None = None, timeout_s: int = 1800,
                     backend: str | None = None) -> DistEnv:
    """Join the process group (``backend``, by default gloo on CPU and nccl on CUDA); a no-op for one process.

    nccl without CUDA falls back to gloo with a warning: OpenMMLab's runtime files ask for nccl, and the
    same config should also run on a laptop."""
    info = parse_launcher_env(launcher, os.environ if env is None else env)
    if not info.distributed:
        return info
    use_cuda = torch.cuda.is_available()
    if backend == "nccl" and not use_cuda:
        warnings.warn("env_cfg.dist_cfg.backend='nccl' needs CUDA, which this run does not have; using gloo",
                      stacklevel=2)
        backend = "gloo"
    if use_cuda:
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    # env:// lets workers under torchrun join the agent's own store instead of binding MASTER_PORT again.
    os.environ.update(MASTER_ADDR=info.master_addr, MASTER_PORT=str(info.master_port), RANK=str(info.rank),
                      WORLD_SIZE=str(info.world_size), LOCAL_RANK=str(info.local_rank))
    dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"), init_method="env://",
                            timeout=timedelta(seconds=timeout_s))
    return info


def device_for(info: DistEnv) -> torch.device:
    """CUDA when visible (``CUDA_VISIBLE_DEVICES=-1`` hides it), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def finish_distributed(info: DistEnv) -> None:
    """Wait until every rank is done communicating. A rank that tears its gloo connections down while a
    peer still uses them can abort that peer at exit ("terminate called without an active exception")."""
    if info.distributed and dist.is_initialized():
        dist.barrier()


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_max(value: int, info: DistEnv) -> int:
    """The largest value over all ranks (used so every rank agrees to stop at the same step)."""
    if not info.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def apply_env_cfg(env_cfg: EnvCfg, deterministic: bool) -> None:
    """``env_cfg``'s process settings: cuDNN autotuning (never with ``deterministic``) and the start method
    of DataLoader workers."""
    if env_cfg.cudnn_benchmark and not deterministic:
        torch.backends.cudnn.benchmark = True
    method = env_cfg.mp_start_method
    if method and torch.multiprocessing.get_start_method(allow_none=True) != method:
        torch.multiprocessing.set_start_method(method, force=True)


def first_to_report(what: str) -> bool:
    """Whether this process is the first of its job to report ``what`` (an error): every rank usually meets
    the same config error, and one line is enough. Asks the job's store (torchrun's agent store, else the
    process group's); without one, every process reports."""
    store = _job_store()
    if store is None:
        return True
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    try:
        return store.add(f"torchyard/reported/{what}/{attempt}", 1) == 1
    except (RuntimeError, OSError):  # the store is gone (its agent stopped): say it anyway
        return True


def _job_store() -> dist.Store | None:
    if dist.is_available() and dist.is_initialized():
        return dist.distributed_c10d._get_default_store()
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    try:
        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                             timeout=timedelta(seconds=5))
    except (KeyError, ValueError, RuntimeError, OSError):
        return None
