"""Fault hooks for real runs, on top of runner_helpers.FAULT_HOOKS (tests/trainer: KillAt, DieWhileSaving).

`module_text()` is written as `fault_hooks.py` beside a config that lists it in `custom_imports`;
`job_folder()` lays out a folder to run the examples' TrainJob from, with or without a rank killed once.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from ..trainer.runner_helpers import FAULT_HOOKS

EXTRA_HOOKS = textwrap.dedent('''
    import os, signal
    from pathlib import Path

    @HOOKS.register()
    class KillInValidation(Hook):
        """SIGKILL rank `rank` during the validation run at iteration `at`, after `batches` val batches."""
        def __init__(self, at, rank=1, batches=1):
            self.at, self.rank, self.batches, self.seen = at, rank, batches, 0
        def after_val_iter(self, runner, batch, outputs):
            if runner.iter == self.at and runner.env.rank == self.rank:
                self.seen += 1
                if self.seen >= self.batches:
                    os.kill(os.getpid(), signal.SIGKILL)

    @HOOKS.register()
    class KillOnceAt(Hook):
        """SIGKILL rank `rank` after iteration `at`, once per work dir (a marker file remembers it): the
        restarted gang passes the same iteration again and must not die there a second time."""
        def __init__(self, at, rank=1):
            self.at, self.rank = at, rank
        def after_train_iter(self, runner, losses):
            marker = Path(runner.work_dir) / f".killed_at_{self.at}"
            if runner.iter == self.at and runner.env.rank == self.rank and not marker.exists():
                marker.write_text("")
                os.kill(os.getpid(), signal.SIGKILL)

    @HOOKS.register()
    class KillInValidationOnce(KillInValidation):
        """KillInValidation, once per work dir (the restarted gang validates at `at` again)."""
        def after_val_iter(self, runner, batch, outputs):
            marker = Path(runner.work_dir) / f".killed_in_val_{self.at}"
            if runner.iter == self.at and runner.env.rank == self.rank and not marker.exists():
                self.seen += 1
                if self.seen >= self.batches:
                    marker.write_text("")
                    os.kill(os.getpid(), signal.SIGKILL)

    @HOOKS.register()
    class DieWhileSavingOnce(Hook):
        """Rank 0 writes half of the checkpoint of iteration `at`, then dies; once per work dir."""
        def __init__(self, at):
            self.at = at
        def before_save_checkpoint(self, runner, state):
            marker = Path(runner.work_dir) / f".died_saving_{self.at}"
            if runner.iter != self.at or marker.exists():
                return
            marker.write_text("")
            real_save = torch.save
            def half_then_die(obj, f):
                real_save(obj, f)
                f.truncate(f.tell() // 2)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            torch.save = half_then_die

    @HOOKS.register()
    class Pace(Hook):
        """Sleep after each training iteration: a slower job, so that two jobs surely run at once."""
        def __init__(self, seconds):
            self.seconds = seconds
        def after_train_iter(self, runner, losses):
            import time
            time.sleep(self.seconds)

    @HOOKS.register()
    class FillDiskBeforeSave(Hook):
        """Before the checkpoint of iteration `at`, fill the work dir's file system to the last byte."""
        def __init__(self, at):
            self.at = at
        def before_save_checkpoint(self, runner, state):
            if runner.iter != self.at:
                return
            chunk = b"\\0" * (1 << 16)
            with open(Path(runner.work_dir) / "filler.bin", "wb", buffering=0) as f:
                while True:
                    try:
                        f.write(chunk)
                    except OSError:
                        break
                while True:  # the last partial chunk
                    try:
                        f.write(b"\\0" * 512)
                    except OSError:
                        break
''')


def module_text() -> str:
    return FAULT_HOOKS + EXTRA_HOOKS


REPO = Path(__file__).resolve().parents[2]


def job_folder(folder: Path, cfg_options: list[str], kill_at: int | None = None, **spec: object) -> Path:
    """`folder`/job.yaml: the examples' TrainJob (2 nodes x 1 process, digits_mlp) with `cfg_options` and
    the other `spec` fields given; with `kill_at`, rank 1 is SIGKILLed once after that iteration
    (KillOnceAt). Returns the job file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configs").symlink_to(REPO / "configs")
    config = "configs/digits_mlp.py"
    if kill_at is not None:
        (folder / "fault_hooks.py").write_text(module_text())
        (folder / "faulty.py").write_text(
            f"_base_ = ['{config}']\n"
            "custom_imports = dict(imports=['fault_hooks'])\n"
            f"custom_hooks = [dict(type='KillOnceAt', at={kill_at}, rank=1)]\n"
        )
        config = "faulty.py"
    job = yaml.safe_load((REPO / "examples/trainjob.yaml").read_text())
    job["spec"].update(config=config, cfgOptions=cfg_options, **spec)
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    return folder / "job.yaml"
