"""Fault hooks for real runs, on top of tests/trainer/test_runner.py's FAULT_HOOKS (KillAt, DieWhileSaving).

`module_text()` is written as `fault_hooks.py` beside a config that lists it in `custom_imports`.
"""

from __future__ import annotations

import textwrap

from test_runner import FAULT_HOOKS

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
