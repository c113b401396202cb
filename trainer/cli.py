"""What torchyard-train and torchyard-test share: common flags, config loading, and turning errors into
one clear line and a documented exit code (a trace-back only with --debug or TORCHYARD_DEBUG=1)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import shtab

from torchyard.contract import exitcodes, termination
from torchyard.contract.launchers import LAUNCHERS
from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.termination import write_termination_message


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file (.py, .yaml or .json; _base_ inheritance works)")
    parser.add_argument("--work-dir", help="where logs, checkpoints and the merged config go "
                        "(default: the config's work_dir, else work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys: a.b=1 c=[1,2] d=(1,2) e=True f=None g=text")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none",
                        help="how the processes were started: none (one process), pytorch (torchrun), "
                        "slurm (srun), mpi (mpirun)")
    # --local-rank / --local_rank: passed by torch.distributed.launch
    parser.add_argument("--local-rank", "--local_rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--print-config", action="store_true",
                        help="print the config this run would use (after _base_, --cfg-options and the other "
                        "flags) and exit")
    parser.add_argument("--debug", action="store_true", help="show full trace-backs on errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('torchyard')}")
    shtab.add_argument_to(parser, ["--print-completion"],
                          help="print a completion script for this shell and exit "
                          '(eval "$(%(prog)s --print-completion bash)")')


def load_config(args: argparse.Namespace) -> Config:
    cfg = Config.fromfile(args.config, cfg_options=args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif not cfg.get("work_dir"):
        cfg.work_dir = str(Path("work_dirs") / Path(args.config).stem)
    cfg.launcher = args.launcher
    return cfg


def print_config(cfg: Config) -> dict:
    """--print-config: the merged config on stdout; nothing is built or run."""
    print(cfg.pretty_text, end="" if cfg.pretty_text.endswith("\n") else "\n")
    return {}


def exit_process(code: int) -> NoReturn:
    """End a trainer process that has finished its work, skipping the interpreter's shutdown.

    DistributedDataParallel keeps the process group, and with it gloo's worker threads, alive after
    destroy_process_group (a PyTorch leak). When such a thread drops its last reference to a finished
    collective during interpreter shutdown, it needs the GIL, cannot have it, and the whole process aborts
    ("terminate called without an active exception", SIGABRT) after a run that succeeded. Everything
    worth keeping is written and flushed by now: checkpoints are synced, logs closed below.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_main(main: Callable[[argparse.Namespace], dict], args: argparse.Namespace) -> int:
    """Run ``main`` (which returns a summary: metrics, checkpoints), then leave a termination message."""
    from torchyard.trainer.checkpoint import CheckpointError
    from torchyard.trainer.dist import first_to_report
    from torchyard.trainer.loops import TrainingInterrupted

    debug = args.debug or os.environ.get("TORCHYARD_DEBUG") == "1"
    try:
        summary = main(args)
    except (ConfigError, CheckpointError) as err:
        if debug:
            traceback.print_exc()
        if debug or first_to_report("error"):  # the other ranks met the same error: one line says it
            print(f"error: {err}", file=sys.stderr)
        if getattr(err, "retryable", False):  # a full disk: space can come back, the same config can succeed
            return _finish(exitcodes.FAILURE, "failed", type(err).__name__, str(err), retryable=True)
        return _finish(exitcodes.CONFIG_ERROR, "failed", type(err).__name__, str(err), retryable=False)
    except TrainingInterrupted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return _finish(exitcodes.INTERRUPTED_BASE + stop.signum, "interrupted", "Signal", str(stop),
                       retryable=True, lastCheckpoint=stop.checkpoint)
    except Exception as err:
        _finish(exitcodes.FAILURE, "failed", type(err).__name__, str(err), retryable=True)
        raise
    return _finish(exitcodes.SUCCESS, "succeeded", "Completed", "", retryable=False, **summary)


def _finish(code: int, status: str, reason: str, message: str, retryable: bool, **details) -> int:
    write_termination_message(termination.make_summary(status, code, reason, message, retryable, **details))
    return code


def entry_points(
    command: Callable[[argparse.Namespace], dict],
    parse_args: Callable[[list[str] | None], argparse.Namespace],
) -> tuple[Callable[[list[str] | None], int], Callable[[], NoReturn]]:
    """`main(argv) -> exit code` (for tests and callers) and `cli()` (the console script and `python -m`:
    main, then exit_process) of one trainer command."""

    def main(argv: list[str] | None = None) -> int:
        return run_main(command, parse_args(argv))

    def cli() -> NoReturn:
        exit_process(main())

    return main, cli
