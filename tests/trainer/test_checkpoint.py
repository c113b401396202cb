import datetime
import errno
import io
import logging
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from torchyard.trainer import checkpoint
from torchyard.trainer.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)

NO_SPACE = os.strerror(errno.ENOSPC)


def test_round_trip_keeps_plain_data_under_weights_only(tmp_path: Path) -> None:
    rng = torch.get_rng_state()
    state = {
        "model": {"fc.weight": torch.randn(3, 4), "fc.bias": torch.arange(3)},
        "meta": {"epoch": 3, "lr": 0.1, "name": "mlp", "resumed_from": None, "milestones": [8, 11]},
        "rng": rng,
        "rng_bytes": bytes(rng.tolist()),
    }
    path = save_checkpoint(state, tmp_path / "epoch_3.pth")

    loaded = load_checkpoint(path)

    torch.testing.assert_close(loaded["model"], state["model"])
    assert loaded["meta"] == state["meta"]
    assert torch.equal(loaded["rng"], rng)
    assert loaded["rng_bytes"] == state["rng_bytes"]
    torch.set_rng_state(loaded["rng"])  # still a usable generator state after the trip


def test_pointer_holds_the_absolute_path_without_newline(tmp_path: Path) -> None:
    path = CheckpointManager(tmp_path).save({"epoch": 1}, "epoch_1.pth")

    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "epoch_1.pth")
    assert CheckpointManager(tmp_path).last() == path


def test_pointer_follows_a_work_dir_mounted_elsewhere(tmp_path: Path) -> None:
    CheckpointManager(tmp_path / "old").save({"epoch": 1}, "epoch_1.pth")
    (tmp_path / "old").rename(tmp_path / "new")

    assert CheckpointManager(tmp_path / "new").last() == tmp_path / "new" / "epoch_1.pth"


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"no checkpoint at {re.escape(str(tmp_path / 'nope.pth'))}"):
        load_checkpoint(tmp_path / "nope.pth")


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.5, 0.999])
def test_truncated_checkpoint_is_named_and_resume_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, keep: float
) -> None:
    manager = CheckpointManager(tmp_path)
    first = manager.save({"epoch": 1}, "epoch_1.pth")
    second = manager.save({"epoch": 2, "w": torch.zeros(1000)}, "epoch_2.pth")
    data = second.read_bytes()
    second.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(CheckpointError, match=f"checkpoint {re.escape(str(second))} is truncated or corrupt"):
        load_checkpoint(second)
    with caplog.at_level(logging.WARNING):
        assert manager.load_resumable() == (first, {"epoch": 1})
    assert f"checkpoint {second} is corrupt (" in caplog.text
    assert f"falling back to {first}" in caplog.text


def test_resume_raises_listing_every_corrupt_checkpoint(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    paths = [manager.save({"epoch": n}, f"epoch_{n}.pth") for n in (1, 2)]
    for path in paths:
        path.write_bytes(b"torn")

    with pytest.raises(CheckpointError, match="every checkpoint in") as err:
        manager.load_resumable()
    assert all(str(path) in str(err.value) for path in paths)


def test_resume_from_an_empty_work_dir_is_none(tmp_path: Path) -> None:
    assert CheckpointManager(tmp_path / "fresh").load_resumable() is None


def test_a_refused_type_is_reported_not_loaded_unsafely(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pth"
    torch.save({"meta": {"date": datetime.date(2024, 1, 1)}}, path)

    with pytest.raises(CheckpointError, match="weights_only") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert "datetime.date" in str(err.value)
    assert "another tool" in str(err.value)


def _at(epoch: int, iteration: int, **extra) -> dict:
    """A state holding its position as the Runner (and mmengine) store it."""
    return {"meta": {"epoch": epoch, "iter": iteration}, **extra}


def test_rotation_orders_by_position_and_keeps_the_best(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, max_keep_ckpts=2)
    # 500 sorts after 2000 as text, so this catches ordering by name instead of position.
    for it in (500, 1000, 1500, 2000):
        manager.save(_at(0, it), f"iter_{it}.pth")
        if it == 500:
            manager.save_best(_at(0, it), "best_acc_iter_500.pth")

    names = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert names == ["best_acc_iter_500.pth", "iter_1500.pth", "iter_2000.pth"]


def test_rotation_orders_by_the_stored_position_not_the_number_in_the_name(tmp_path: Path) -> None:
    """20 iterations per epoch; a graceful stop at iteration 50 saved iter_50.pth, then the run resumed.
    By name number, iter_50 would look newest forever and epoch_3 would be deleted in its place."""
    manager = CheckpointManager(tmp_path, max_keep_ckpts=2)
    for epoch in (1, 2):
        manager.save(_at(epoch, epoch * 20), f"epoch_{epoch}.pth")
    manager.save(_at(2, 50), "iter_50.pth")
    for epoch in (3, 4):
        manager.save(_at(epoch, epoch * 20), f"epoch_{epoch}.pth")

    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_3.pth", "epoch_4.pth"]
    assert sorted(p.name for p in tmp_path.glob("*.sha256")) == ["epoch_3.pth.sha256", "epoch_4.pth.sha256"]


def test_resume_falls_back_to_the_newest_by_stored_position(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for epoch in (1, 2):
        CheckpointManager(tmp_path).save(_at(epoch, epoch * 20), f"epoch_{epoch}.pth")
    CheckpointManager(tmp_path).save(_at(1, 30), "iter_30.pth")  # stopped early in a run restarted from 1
    CheckpointManager(tmp_path).save(_at(3, 60), "epoch_3.pth")
    (tmp_path / "epoch_3.pth").write_bytes(b"torn")

    with caplog.at_level(logging.WARNING):
        path, state = CheckpointManager(tmp_path).load_resumable()

    assert path == tmp_path / "epoch_2.pth" and state == _at(2, 40)
    assert f"falling back to {tmp_path / 'epoch_2.pth'}" in caplog.text


def _flip_a_byte_of(path: Path, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    offset = data.find(tensor.numpy().tobytes())
    assert offset >= 0, "the tensor's bytes are stored as they are in memory"
    data[offset + 5] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("numel", [1000, 3_000_000], ids=["hashed-before-load", "hashed-beside-load"])
def test_a_flipped_byte_in_tensor_data_is_caught_by_the_digest(tmp_path: Path, numel: int) -> None:
    weights = torch.arange(numel, dtype=torch.float32)
    assert (numel * 4 >= checkpoint.HASH_BESIDE_LOAD_BYTES) == (numel > 1000)
    path = save_checkpoint({"w": weights}, tmp_path / "epoch_1.pth")
    assert (tmp_path / "epoch_1.pth.sha256").read_text().endswith("  epoch_1.pth\n")
    check = subprocess.run(["sha256sum", "--check", "--quiet", "epoch_1.pth.sha256"], cwd=tmp_path)
    assert check.returncode == 0
    _flip_a_byte_of(path, weights)

    with pytest.raises(CheckpointError, match=r"SHA-256 does not match epoch_1\.pth\.sha256"):
        load_checkpoint(path)


def test_resume_falls_back_past_a_checkpoint_whose_digest_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path)
    weights = torch.arange(1000, dtype=torch.float32)
    first = manager.save(_at(1, 10, w=weights), "epoch_1.pth")
    second = manager.save(_at(2, 20, w=weights + 1), "epoch_2.pth")
    _flip_a_byte_of(second, weights + 1)

    with caplog.at_level(logging.WARNING):
        path, state = manager.load_resumable()

    assert path == first and torch.equal(state["w"], weights)
    assert f"checkpoint {second} is corrupt (its SHA-256 does not match" in caplog.text
    assert f"falling back to {first}" in caplog.text


def test_an_overwritten_checkpoint_gets_the_new_digest(tmp_path: Path) -> None:
    path = save_checkpoint({"w": torch.zeros(3)}, tmp_path / "epoch_1.pth")
    save_checkpoint({"w": torch.ones(3)}, path)  # a fresh run in an old work dir

    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))


def test_an_unreadable_digest_file_says_how_to_load_unverified(tmp_path: Path) -> None:
    path = save_checkpoint({"w": torch.zeros(3)}, tmp_path / "epoch_1.pth")
    (tmp_path / "epoch_1.pth.sha256").write_text("")

    with pytest.raises(CheckpointError, match=r"digest file epoch_1\.pth\.sha256 is unreadable; delete that"):
        load_checkpoint(path)


def test_rotation_never_deletes_what_best_points_to(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, max_keep_ckpts=2)
    manager.save_best(_at(1, 10), "epoch_1.pth")
    for epoch in range(2, 6):
        manager.save(_at(epoch, epoch * 10), f"epoch_{epoch}.pth")

    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_1.pth", "epoch_4.pth", "epoch_5.pth"]
    assert manager.best() == tmp_path / "epoch_1.pth"


def test_rotation_keeps_the_checkpoint_just_saved_even_if_older_numbers_exist(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, max_keep_ckpts=1)
    for epoch in (7, 8):
        manager.save(_at(epoch, epoch * 10), f"epoch_{epoch}.pth")
    manager.save(_at(1, 10), "epoch_1.pth")  # a fresh run in the old work dir

    assert manager.load_resumable() == (tmp_path / "epoch_1.pth", _at(1, 10))


def test_save_best_replaces_the_previous_best(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    old = manager.save_best({"epoch": 1}, "best_acc_epoch_1.pth")
    new = manager.save_best({"epoch": 3}, "best_acc_epoch_3.pth")

    assert not old.exists()
    assert manager.best() == new
    assert (tmp_path / "best_checkpoint").read_text() == str(new)


def _torch_save_fills_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def save(state: dict, f: io.BufferedWriter) -> None:
        f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(checkpoint.torch, "save", save)


class _FillingFile(io.FileIO):
    """A file on a disk with 64 KiB free, written through the real torch.save."""

    def write(self, data: bytes) -> int:
        room = 64 * 1024 - self.tell()
        if len(data) > room:
            super().write(bytes(data[:room]))
            raise OSError(errno.ENOSPC, NO_SPACE)
        return super().write(data)


def _file_fills_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shadows the builtin open() inside the module only.
    monkeypatch.setattr(checkpoint, "open", lambda fd, mode: _FillingFile(fd, mode), raising=False)


FILL_DISK = [
    pytest.param(_torch_save_fills_disk, id="torch.save-raises"),
    pytest.param(_file_fills_up, id="file-write-raises"),
]


@pytest.mark.parametrize("fill_disk", FILL_DISK)
def test_full_disk_keeps_the_previous_checkpoint_and_pointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fill_disk: Callable[[pytest.MonkeyPatch], None]
) -> None:
    manager = CheckpointManager(tmp_path)
    first = manager.save({"epoch": 1}, "epoch_1.pth")
    fill_disk(monkeypatch)

    with pytest.raises(CheckpointError) as err:
        manager.save({"epoch": 2, "w": torch.zeros(100_000)}, "epoch_2.pth")
    monkeypatch.undo()

    message = str(err.value)
    assert f"could not write checkpoint {tmp_path / 'epoch_2.pth'}: {NO_SPACE}" in message
    assert "(the save needs about 0.4 MiB, " in message and f"MiB is free in {tmp_path})" in message
    assert f"the previous checkpoint {first} is intact" in message
    assert "free space or set a different work_dir" in message
    assert err.value.retryable, "space can come back: the job must be retried"
    assert manager.last() == first
    assert load_checkpoint(first) == {"epoch": 1}
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["epoch_1.pth", "epoch_1.pth.sha256", "last_checkpoint"]


@pytest.mark.parametrize("fill_disk", FILL_DISK)
def test_full_disk_leaves_an_overwritten_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fill_disk: Callable[[pytest.MonkeyPatch], None]
) -> None:
    path = save_checkpoint({"epoch": 1}, tmp_path / "latest.pth")
    fill_disk(monkeypatch)

    with pytest.raises(CheckpointError, match=f"the previous checkpoint {re.escape(str(path))} is intact"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(100_000)}, path)
    monkeypatch.undo()

    assert load_checkpoint(path) == {"epoch": 1}  # its digest still matches
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pth", "latest.pth.sha256"]


def test_background_sync_publishes_a_checkpoint_once_it_is_on_disk(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, max_keep_ckpts=1, sync_in_background=True)
    first = manager.save({"iter": 1}, "iter_1.pth")
    assert load_checkpoint(first) == {"iter": 1}  # readable at its name as soon as save returns
    second = manager.save({"iter": 2}, "iter_2.pth")  # waits for the first to be published

    assert manager.last() == second
    assert (tmp_path / "last_checkpoint").read_text() == str(second)
    assert not first.exists()  # rotated, after the pointer moved
    best = manager.save_best({"iter": 2}, "best_acc_iter_2.pth")
    assert manager.best() == best and manager.load_resumable()[0] == second


def test_background_sync_failure_is_raised_by_the_next_call_and_keeps_the_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = CheckpointManager(tmp_path, sync_in_background=True)
    first = manager.save({"iter": 1}, "iter_1.pth")
    manager.wait()
    real_fsync = checkpoint._fsync

    def fsync(path: Path) -> None:
        if path.name == "iter_2.pth":
            raise OSError(errno.ENOSPC, NO_SPACE)  # delayed allocation: a full disk shows at fsync
        real_fsync(path)

    monkeypatch.setattr(checkpoint, "_fsync", fsync)
    second = manager.save({"iter": 2}, "iter_2.pth")
    with pytest.raises(CheckpointError) as err:
        manager.wait()

    message = str(err.value)
    assert f"could not write checkpoint {second} to disk: {NO_SPACE}" in message
    assert f"the previous checkpoint {first} is intact" in message and "free space" in message
    assert not second.exists()
    assert manager.last() == first  # the error was raised once; the manager goes on
    assert manager.load_resumable()[1] == {"iter": 1}


# Saves ~50 MB checkpoints forever, resuming from what an earlier (killed) run left behind.
_SAVER = """
import sys, torch
from torchyard.trainer.checkpoint import CheckpointManager
manager = CheckpointManager(sys.argv[1], max_keep_ckpts=2, sync_in_background=sys.argv[2] == "1")
resumed = manager.load_resumable()
first = resumed[1]["iter"] + 1 if resumed else 1
for n in range(first, first + 100):
    print("saving", n, flush=True)
    manager.save({"iter": n, "weights": torch.full((12_500_000,), float(n))}, f"iter_{n}.pth")
"""


def _wait_until_saving(saver: subprocess.Popen, n: int | None = None) -> int:
    """Block until the saver announces checkpoint `n` (any, if None); return its number."""
    for line in saver.stdout:
        if n is None or int(line.split()[1]) == n:
            return int(line.split()[1])
    pytest.fail(f"the saver exited with code {saver.wait()} before saving {n}")


def _kill_while_saving(work_dir: Path, rng: random.Random, sync_in_background: bool) -> int:
    """Run the saver, SIGKILL it a random moment after it starts a save; return the number of that save."""
    saver = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(work_dir), str(int(sync_in_background))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        target = _wait_until_saving(saver) + rng.randint(1, 2)
        _wait_until_saving(saver, target)
        time.sleep(rng.uniform(0, 0.2))
    finally:
        saver.kill()
        saver.wait()
        saver.stdout.close()
    return target


@pytest.mark.e2e
@pytest.mark.parametrize("sync_in_background", [False, True])
def test_sigkill_mid_save_leaves_a_loadable_checkpoint(tmp_path: Path, sync_in_background: bool) -> None:
    # In the background, save n-1 may still be syncing while save n writes: a kill then loses both.
    lag = 2 if sync_in_background else 1
    # One work dir throughout: each run resumes from the wreckage the previous kill left behind.
    for seed in range(5):
        killed_during = _kill_while_saving(tmp_path, random.Random(seed), sync_in_background)

        manager = CheckpointManager(tmp_path)
        last = manager.last()
        assert last is not None, f"seed {seed}"
        state = load_checkpoint(last)
        assert last.name == f"iter_{state['iter']}.pth"
        assert state["iter"] >= killed_during - lag, f"seed {seed}: a finished save was lost"
        assert state["weights"][-1].item() == state["iter"]
        path, resumed = manager.load_resumable()
        assert path == last
        assert resumed["iter"] == state["iter"]
        for finished in tmp_path.glob("iter_*.pth"):  # a torn file never appears under a real name
            load_checkpoint(finished)
        # The next run sweeps what a kill left behind, so at most the latest kill's temp file remains.
        assert len(list(tmp_path.glob(".*.tmp"))) <= 1, f"seed {seed}"


def test_resolve_a_file_is_the_file(tmp_path: Path) -> None:
    path = save_checkpoint({"epoch": 1}, tmp_path / "model.pth")

    assert resolve_checkpoint(path) == path


def test_resolve_a_work_dir_follows_the_requested_pointer(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    best = manager.save_best({"epoch": 1}, "best_acc_epoch_1.pth")
    last = manager.save({"epoch": 2}, "epoch_2.pth")

    assert resolve_checkpoint(tmp_path) == best
    assert resolve_checkpoint(tmp_path, which="latest") == last


def test_resolve_a_work_dir_falls_back_to_the_other_pointer(tmp_path: Path) -> None:
    last = CheckpointManager(tmp_path).save({"epoch": 1}, "epoch_1.pth")

    assert resolve_checkpoint(tmp_path, which="best") == last


@pytest.mark.parametrize("name", ["empty_dir", "missing"])
def test_resolve_without_a_checkpoint_says_so(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty_dir").mkdir()

    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / name))):
        resolve_checkpoint(tmp_path / name)


def test_a_missing_best_pointer_file_falls_back_to_the_latest_checkpoint(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    latest = manager.save({"x": torch.zeros(1)}, "epoch_1.pth")

    assert resolve_checkpoint(tmp_path / "best_checkpoint") == latest
    assert resolve_checkpoint(tmp_path / "last_checkpoint") == latest
