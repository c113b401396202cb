"""Checkpoints under real faults, through the `torchyard-train` command:

- the newest checkpoint truncated on disk: `--resume` says so, falls back to the previous one, finishes,
  and the result is bit-identical to an uninterrupted run;
- the disk fills up during a checkpoint write (a real 48 MiB tmpfs as the work dir; where mounting is not
  permitted, ENOSPC simulated at the write call): exit code 1 and a termination message saying retryable
  (space can come back), one line naming the file, "No space left" and the space the save needs, no
  trace-back, the previous checkpoint and last_checkpoint intact, and a resume from them once there is space.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from torchyard.contract import exitcodes, termination

from ..trainer.runner_helpers import (
    assert_same_training_state,
    final_state,
    make_cfg,
    run_trainer,
    write_config,
)
from .faults_helpers import module_text


def _cfg(work_dir: Path, max_iters: int = 30, hooks: list | None = None) -> dict:
    return make_cfg(
        work_dir,
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=10),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=10)),
        custom_hooks=hooks or [],
    )


@pytest.mark.e2e
def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    (tmp_path / "fault_hooks.py").write_text(module_text())
    straight = run_trainer(tmp_path, write_config(tmp_path / "straight.py", _cfg(tmp_path / "straight")))
    assert straight.returncode == 0, straight.stderr[-3000:]

    work_dir = tmp_path / "wd"
    killed_cfg = _cfg(work_dir, hooks=[dict(type="KillAt", at=25, rank=0)])
    killed = run_trainer(tmp_path, write_config(tmp_path / "killed.py", killed_cfg, "fault_hooks"))
    assert killed.returncode != 0
    newest = work_dir / "iter_20.pth"
    assert (work_dir / "last_checkpoint").read_text() == str(newest)
    with newest.open("r+b") as f:  # as a crash or a full disk on another writer would leave it
        f.truncate(newest.stat().st_size // 3)

    resumed = run_trainer(tmp_path, write_config(tmp_path / "resumed.py", _cfg(work_dir)), "--resume")
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"checkpoint {newest} is corrupt" in output
    assert f"falling back to {work_dir / 'iter_10.pth'}" in output
    assert f"resumed from {work_dir / 'iter_10.pth'}" in output
    assert "Traceback" not in output
    assert_same_training_state(final_state(tmp_path / "straight"), final_state(work_dir))


SIMULATED_ENOSPC = textwrap.dedent('''
    import errno, os
    import torch
    from torchyard.trainer.hooks import Hook
    from torchyard.trainer.registry import HOOKS

    @HOOKS.register()
    class NoSpaceAt(Hook):
        """At iteration `at`, the checkpoint write fails with ENOSPC (no file system to fill here)."""
        def __init__(self, at):
            self.at = at
        def before_save_checkpoint(self, runner, state):
            if runner.iter != self.at:
                return
            def full(obj, f):
                f.write(b"x" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            torch.save = full
''')


@contextlib.contextmanager
def small_file_system(tmp_path: Path, size: str = "48m"):
    """A tmpfs of `size` mounted on a fresh folder, or None where mounting is not permitted."""
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mount_point if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.mark.e2e
def test_full_disk_during_a_checkpoint_write_is_one_clear_error_and_keeps_the_previous(tmp_path, capsys):
    (tmp_path / "fault_hooks.py").write_text(module_text())
    (tmp_path / "enospc_hooks.py").write_text(SIMULATED_ENOSPC)
    with small_file_system(tmp_path) as mount_point:
        if mount_point is not None:
            work_dir, module = mount_point / "wd", "fault_hooks"
            hooks = [dict(type="FillDiskBeforeSave", at=20)]
        else:
            work_dir, hooks, module = tmp_path / "wd", [dict(type="NoSpaceAt", at=20)], "enospc_hooks"
        with capsys.disabled():
            how = f"a real tmpfs at {mount_point}" if mount_point else "simulated ENOSPC"
            print(f"\n[disk full] {how}")
        config = write_config(tmp_path / "cfg.py", _cfg(work_dir, hooks=hooks), module)
        message_file = tmp_path / "termination-log"
        result = run_trainer(tmp_path, config, env={termination.PATH_VARIABLE: str(message_file)})

        assert result.returncode == exitcodes.FAILURE, result.stdout[-2000:] + result.stderr[-3000:]
        told = termination.Termination.parse(message_file.read_text())
        assert told.retryable and told.reason == "OutOfSpaceError", message_file.read_text()
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "Logging error" not in result.stderr, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr[-3000:]
        assert str(work_dir / "iter_20.pth") in errors[0]
        assert os.strerror(errno.ENOSPC) in errors[0] and "No space left" in errors[0]
        assert "(the save needs about " in errors[0] and " MiB is free in " in errors[0]
        assert f"the previous checkpoint {work_dir / 'iter_10.pth'} is intact" in errors[0]

        (work_dir / "filler.bin").unlink(missing_ok=True)
        assert not (work_dir / "iter_20.pth").exists()
        assert not [p for p in work_dir.iterdir() if p.name.endswith(".tmp")], "a torn temp file was left"
        assert (work_dir / "last_checkpoint").read_text() == str(work_dir / "iter_10.pth")
        state = torch.load(work_dir / "iter_10.pth", weights_only=True)
        assert state["meta"]["iter"] == 10
        # and the run resumes from it once there is space again
        resumed = run_trainer(tmp_path, write_config(tmp_path / "resume.py", _cfg(work_dir)), "--resume")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"resumed from {work_dir / 'iter_10.pth'}" in resumed.stdout
