"""Crash-safe checkpoints: atomic saves, safe loads, rotation, and the mmengine-style pointer files.

A work dir looks like mmengine's: `epoch_3.pth` / `iter_3000.pth`, `best_<metric>_epoch_2.pth`, and the
pointer files `last_checkpoint` and `best_checkpoint`, each holding the absolute path of a checkpoint.
Every file is written to a hidden temp file and renamed into place, so a crash or a full disk leaves
either the old file or the new one, never a torn one.

Each checkpoint has a digest beside it, ``epoch_3.pth.sha256`` (``sha256sum -c`` reads it), written before
a pointer names the checkpoint (by the syncing thread, in the background). Every load verifies it: torch
reads a flipped byte inside tensor data without complaint, and a resume must not continue from silently
damaged weights. Rotation and resume order
checkpoints by the position stored in them (``meta.epoch``, ``meta.iter``, as mmengine writes it), never by
the number in the file name: ``iter_60.pth`` from a graceful stop is older than ``epoch_4.pth``.

With ``sync_in_background=True`` (the Runner's choice) `save` returns once the bytes are written and renamed
into place: training goes on while a thread fsyncs the file and its directory, and only then moves the
pointer file and rotates. A pointer therefore always names a durable checkpoint; a power loss in that window
can tear only the newest file, which the pointer does not name yet and `load_resumable` skips. `wait()`
(also called by every read and by the next save) joins that thread and raises what it failed with.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pickle
import re
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import torch

from torchyard.contract.workdir import BEST_POINTER, LAST_POINTER

_ROTATED = re.compile(r"(epoch|iter)_(\d+)\.pth")
# Temp files left by a writer that was killed; `_atomic_write` names them `.<name>.<uuid hex>.tmp`.
_STALE_TEMP = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, found or read; the message says which file and what to do."""

    retryable = False  # the same run would fail the same way: a wrong path, a refused type


class OutOfSpaceError(CheckpointError):
    """The work dir's file system is full. Space can come back (a cleanup, a quota raised), so a restarted
    run that resumes from the previous checkpoint may well succeed."""

    retryable = True


class CorruptCheckpointError(CheckpointError):
    """The file exists but cannot be read back: truncated by a crash, cut short by a full disk, or damaged."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"checkpoint {path} is truncated or corrupt ({reason}); it was probably cut short by a crash "
            "or a full disk. Delete it to resume from an earlier checkpoint, or pass another one."
        )


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically; on failure the previous file at `path` is left as it was."""
    path = Path(path)
    _save(state, path, lambda: path if path.is_file() else None)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with `weights_only=True`; never falls back to unrestricted pickle loading."""
    path = Path(path)
    try:
        return _load_verified(path, map_location)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}; check the path or the work_dir") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    except Exception as exc:  # torch reports a torn file as RuntimeError, EOFError or OSError, among others
        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} cannot be loaded with weights_only=True: "
                f"{_weights_only_detail(str(exc))} It was probably written by another tool (a full-pickle "
                "checkpoint), or its state holds objects other than tensors, numbers, strings and "
                "containers. Re-save it as plain data, or allowlist the type with "
                "torch.serialization.add_safe_globals if you trust the file."
            ) from None
        raise CorruptCheckpointError(path, _reason(exc)) from exc


class CheckpointManager:
    """Saves, rotates and finds the checkpoints of one work dir. Only one process (rank 0) should save."""

    def __init__(
        self,
        work_dir: str | os.PathLike,
        max_keep_ckpts: int = -1,
        logger: logging.Logger | None = None,
        sync_in_background: bool = False,
    ):
        self.work_dir = Path(work_dir).absolute()
        # CheckpointHook's out_dir puts checkpoints elsewhere; the pointer files stay in the work dir
        self.checkpoint_dir = self.work_dir
        self.max_keep_ckpts = max_keep_ckpts  # < 1 keeps all, as in mmengine's CheckpointHook
        self.rotated_names = [_ROTATED]  # CheckpointHook's filename_tmpl adds its own
        self.logger = logger or logging.getLogger(__name__)
        self.sync_in_background = sync_in_background
        self._syncer: ThreadPoolExecutor | None = None  # one thread, reused: starting one per save costs more
        self._pending: Future | None = None
        self._swept = False
        self._positions: dict[str, tuple[int, int] | None] = {}  # file name -> (epoch, iter) stored in it

    def save(self, state: dict, filename: str) -> Path:
        def publish() -> None:
            self._point(LAST_POINTER, path)
            self._rotate()

        path = self._prepare(filename)
        self._positions[filename] = _position(state)
        self._write(state, path, LAST_POINTER, publish)
        return path

    def save_best(self, state: dict, filename: str, replaces: Path | None = None, point: bool = True) -> Path:
        """Save a best checkpoint and delete the one it `replaces` (by default the one `best_checkpoint`
        names). Only the best by the first of several metrics moves that pointer (`point`)."""

        def publish() -> None:
            previous = self._locate(replaces) if replaces is not None else self._follow(BEST_POINTER)
            if point:
                # Move the pointer before deleting the old best, so that it never names a missing file.
                self._point(BEST_POINTER, path)
            last = self._follow(LAST_POINTER)
            if previous is not None and not _same(previous, path) and not _same(previous, last):
                self._remove(previous)
                self.logger.info("removed previous best checkpoint %s", previous)

        path = self._prepare(filename)
        self._write(state, path, BEST_POINTER, publish)
        return path

    def wait(self) -> None:
        """Block until the last save is durable and published; raise CheckpointError if that failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def last(self) -> Path | None:
        self.wait()
        return self._follow(LAST_POINTER)

    def best(self) -> Path | None:
        self.wait()
        return self._follow(BEST_POINTER)

    def _prepare(self, filename: str) -> Path:
        self.wait()
        if not self._swept:
            for folder in {self.work_dir, self.checkpoint_dir}:
                folder.mkdir(parents=True, exist_ok=True)
                # A writer killed mid-save leaves its temp file behind; reclaim that space first.
                for leftover in folder.iterdir():
                    if _STALE_TEMP.fullmatch(leftover.name):
                        leftover.unlink(missing_ok=True)
            self._swept = True
        return self.checkpoint_dir / filename

    def _write(self, state: dict, path: Path, pointer: str, publish: Callable[[], None]) -> None:
        def previous() -> Path | None:  # for error messages only: the pointer has not moved yet
            return self._follow(pointer)

        _save(state, path, previous, durable=not self.sync_in_background)
        if not self.sync_in_background:
            publish()
            return
        if self._syncer is None:
            self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-sync")
        self._pending = self._syncer.submit(self._make_durable, path, previous, publish)

    def _make_durable(
        self, path: Path, previous: Callable[[], Path | None], publish: Callable[[], None]
    ) -> None:
        try:
            _fsync(path)
            _write_digest(path, durable=False)
            _fsync(digest_path(path))
            _fsync(path.parent)
        except OSError as exc:
            size = path.stat().st_size if path.is_file() else 0
            self._remove(path)  # not durable, maybe torn: never where a resume would pick it up
            what = f"could not write checkpoint {path} to disk"
            raise _write_error(what, path, exc, size, _intact(previous())) from exc
        try:
            publish()
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"saved {path} but could not update the pointer files or rotate: {_reason(exc)}"
            ) from exc

    def load_resumable(self, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
        """The newest readable checkpoint and its state, skipping corrupt ones; None if there is none."""
        last = self.last()
        newest_first = [p for p in reversed(self._rotated()) if not _same(p, last)]
        candidates = [last, *newest_first] if last else newest_first
        corrupt: list[str] = []
        for i, path in enumerate(candidates):
            try:
                return path, load_checkpoint(path, map_location)
            except CorruptCheckpointError as exc:
                corrupt.append(f"{path} ({exc.reason})")
                if i + 1 < len(candidates):
                    self.logger.warning(
                        "checkpoint %s is corrupt (%s); falling back to %s",
                        path,
                        exc.reason,
                        candidates[i + 1],
                    )
        if not corrupt:
            return None
        raise CheckpointError(
            f"every checkpoint in {self.checkpoint_dir} is corrupt: {'; '.join(corrupt)}. "
            "Delete them to train from scratch, or resume from a checkpoint elsewhere."
        )

    def _follow(self, pointer: str) -> Path | None:
        try:
            target = Path((self.work_dir / pointer).read_text().strip())
        except FileNotFoundError:
            return None
        return self._locate(target) if target.name else None

    def _locate(self, target: Path) -> Path | None:
        # A work dir mounted at another path (another pod, a Slurm node) still resolves by file name.
        candidates = (target, self.checkpoint_dir / target.name, self.work_dir / target.name)
        return next((p for p in candidates if p.is_file()), None)

    def _point(self, pointer: str, path: Path) -> None:
        try:
            _atomic_write(self.work_dir / pointer, lambda f: f.write(str(path).encode()))
        except OSError as exc:
            target = self.work_dir / pointer
            raise _write_error(f"saved {path} but could not update {target}", target, exc, 0, None) from exc

    def _rotated(self) -> list[Path]:
        """epoch_*.pth / iter_*.pth (or the hook's filename_tmpl) in the checkpoint dir, oldest first by the
        position stored in each. One whose position cannot be read (torn, or not a training checkpoint)
        counts as the oldest."""
        paths = [path for path in self.checkpoint_dir.glob("*")
                 if any(name.fullmatch(path.name) for name in self.rotated_names)]
        return sorted(paths, key=lambda path: (self._position_of(path) or (-1, -1), path.name))

    def _position_of(self, path: Path) -> tuple[int, int] | None:
        if path.name not in self._positions:
            self._positions[path.name] = _read_position(path)
        return self._positions[path.name]

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        digest_path(path).unlink(missing_ok=True)
        self._positions.pop(path.name, None)

    def _rotate(self) -> None:
        if self.max_keep_ckpts < 1:
            return
        # Numbers can go down (a run restarted without resume), so the checkpoint just saved is not
        # always among the newest: never delete what a pointer names.
        protected = [self._follow(LAST_POINTER), self._follow(BEST_POINTER)]
        for old in self._rotated()[: -self.max_keep_ckpts]:
            if not any(_same(old, p) for p in protected):
                self._remove(old)
                self.logger.info("removed old checkpoint %s (max_keep_ckpts=%d)", old, self.max_keep_ckpts)


def resolve_checkpoint(path_or_dir: str | os.PathLike, which: str = "best") -> Path:
    """A checkpoint file as is, a work dir's best (or latest) checkpoint falling back to the other, or the
    checkpoint a work dir's ``best_checkpoint`` / ``last_checkpoint`` pointer file names."""
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', not {which!r}")
    path = Path(path_or_dir)
    if path.name in (BEST_POINTER, LAST_POINTER) and path.parent.is_dir() and not path.is_dir():
        # A pointer file picks best or latest by name, and like a work dir falls back to the other: a run
        # that never validated has no best_checkpoint.
        return resolve_checkpoint(path.parent, "best" if path.name == BEST_POINTER else "latest")
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}; pass a checkpoint file or a work dir")
    manager = CheckpointManager(path)
    found = (manager.best(), manager.last()) if which == "best" else (manager.last(), manager.best())
    for target in found:
        if target is not None:
            return target
    raise CheckpointError(
        f"work dir {path} has no {BEST_POINTER} or {LAST_POINTER} naming an existing checkpoint; "
        "pass a checkpoint file instead, or train into this work dir first"
    )


def digest_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.sha256")


def _save(state: dict, path: Path, previous: Callable[[], Path | None], durable: bool = True) -> None:
    """Write the checkpoint, and its digest when `durable` (else the syncing thread writes the digest).
    `previous()` names the checkpoint a failure leaves in place, for the error message."""

    def forget_old_digest() -> None:
        # Until the new digest is written, a crash leaves the new file unverified, never flagged corrupt
        # by the digest of the file it replaced.
        digest_path(path).unlink(missing_ok=True)

    try:
        _atomic_write(path, lambda f: torch.save(state, f), durable, before_replace=forget_old_digest)
        if durable:
            _write_digest(path, durable=True)
    except Exception as exc:
        what = f"could not write checkpoint {path}"
        raise _write_error(what, path, exc, _tensor_bytes(state), _intact(previous())) from exc


def _write_digest(path: Path, durable: bool) -> None:
    """Hash the file as written (from the page cache, just after the write) into ``<name>.sha256``."""
    line = f"{sha256_of(path)}  {path.name}\n".encode()
    _atomic_write(digest_path(path), lambda f: f.write(line), durable)


def sha256_of(path: Path) -> str:
    """The file's SHA-256, hex, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(16 << 20):
            digest.update(chunk)  # hashlib releases the GIL on large buffers: training goes on meanwhile
    return digest.hexdigest()


def _expected_digest(path: Path) -> str | None:
    sidecar = digest_path(path)
    try:
        return sidecar.read_text().split()[0].lower()
    except FileNotFoundError:
        return None  # saved by another tool or an older torchyard: nothing to check against
    except (OSError, UnicodeDecodeError, IndexError):
        raise CorruptCheckpointError(
            path, f"its digest file {sidecar.name} is unreadable; delete that file to load it unverified"
        ) from None


# Below this size a checkpoint is hashed before it is loaded: a thread would first wait for the GIL that
# torch.load holds (up to the 5 ms switch interval), longer than hashing a few MiB takes.
HASH_BESIDE_LOAD_BYTES = 8 << 20
_verifier: ThreadPoolExecutor | None = None  # one thread, reused


def _load_verified(path: Path, map_location: str | torch.device) -> dict:
    global _verifier
    expected = _expected_digest(path)
    if expected is None:
        return torch.load(path, map_location=map_location, weights_only=True)
    if path.stat().st_size < HASH_BESIDE_LOAD_BYTES:
        digest = sha256_of(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
    else:
        if _verifier is None:
            _verifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-verify")
        # Hash while torch reads: both from the page cache, so the hash no longer doubles the load time.
        actual = _verifier.submit(sha256_of, path)
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        finally:
            digest = actual.result()
    if digest != expected:
        raise CorruptCheckpointError(
            path, f"its SHA-256 does not match {digest_path(path).name}: the file changed after it was saved"
        )
    return state


def _position(state: dict) -> tuple[int, int] | None:
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict):
        return None
    epoch, iteration = meta.get("epoch"), meta.get("iter")
    if not isinstance(epoch, int) or not isinstance(iteration, int):
        return None
    return epoch, iteration


def _read_position(path: Path) -> tuple[int, int] | None:
    """The position a checkpoint holds, reading only its pickle: mmap leaves the tensor data on disk."""
    try:
        return _position(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception:  # torn, foreign or unreadable: the caller ranks it oldest
        return None


def _tensor_bytes(value: object) -> int:
    """What a state's tensors occupy: close to the size of its checkpoint, which has no size before it is
    written. Shared storages count once, as torch.save writes them once."""
    seen: dict[tuple, int] = {}

    def walk(item: object) -> None:
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            seen[(storage.device.type, storage.data_ptr())] = storage.nbytes()
        elif isinstance(item, dict):
            for child in item.values():
                walk(child)
        elif isinstance(item, (list, tuple)):
            for child in item:
                walk(child)

    walk(value)
    return sum(seen.values())


def _write_error(
    what: str, target: Path, exc: BaseException, needed: int, intact: str | None
) -> CheckpointError:
    # torch.save turns the OSError of a failed write (e.g. ENOSPC) into a vague RuntimeError.
    cause = _os_error_in(exc) or exc
    kept = f"; {intact}" if intact else ""
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        need = f"the save needs about {_mib(needed)}, " if needed else ""
        return OutOfSpaceError(
            f"{what}: {_reason(cause)} ({need}{_free_space(target.parent)}){kept}; free space or set a "
            "different work_dir. The run exits as retryable: a restarted job resumes from the previous "
            "checkpoint"
        )
    return CheckpointError(f"{what}: {_reason(cause)}{kept}; {_advice(cause)}")


def _free_space(directory: Path) -> str:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return "the free space is unknown"
    return f"{_mib(stats.f_bavail * stats.f_frsize)} is free in {directory}"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _intact(previous: Path | None) -> str:
    return f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"


def _atomic_write(
    path: Path,
    write: Callable[[BinaryIO], object],
    durable: bool = True,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Write via a temp file beside `path`, then rename it over `path`: readers see old or new, never torn.
    `durable`: fsync the file before the rename and the directory after it (else the caller does)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # Not mkstemp: its mode 0600 would hide checkpoints from other users, such as evaluation pods.
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent)  # the rename lives in the directory; without this a power loss can undo it


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error_in(exc: BaseException | None) -> OSError | None:
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _same(a: Path, b: Path | None) -> bool:
    return b is not None and a.resolve() == b.resolve()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _advice(exc: BaseException) -> str:
    if not isinstance(exc, OSError):
        return "keep the state to tensors, numbers, strings, None and containers of them"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space or set a different work_dir"
    return "check that the work_dir is writable, or set a different work_dir"


def _weights_only_detail(message: str) -> str:
    """The one useful line of torch's long weights_only error (it names the type that was refused)."""
    for line in message.splitlines():
        _, found, detail = line.partition("WeightsUnpickler error: ")
        if found:
            return detail.strip()
    return message.strip().splitlines()[0]
