"""Durable file primitives: the only places that call fsync.

Every write the service acknowledges goes through ``append_durably``; every derived
file is replaced through ``replace_atomically``. Both fsync the directory when a
directory entry changes, because a file's data on disk is worthless if its name is not.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
except OSError:  # pragma: no cover - no C library to ask
    _libc = None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirSync:
    """Group commit for one folder's fsync.

    Every new event log needs its folder fsynced. Concurrent creators share one fsync:
    a caller waits for a sync that *started after* its file was created, running one
    itself when none is in flight. Correct because such a sync covers every entry
    made before it began.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._completed < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                covers = self._requested
                self._cond.release()
                try:
                    fsync_dir(self.path)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                self._completed = covers


def append_durably(
    path: str | Path,
    data: bytes,
    dir_sync: DirSync | None = None,
    *,
    new_entry: bool | None = None,
) -> int:
    """Append ``data`` to ``path`` and fsync it; return the file size afterwards.

    ``new_entry`` says whether the folder must be fsynced too: True when the caller
    cannot know the file's name is durable yet, False when it knows it is, None to
    decide by whether the file exists now.
    """
    created = (not os.path.exists(path)) if new_entry is None else new_entry
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        before = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError:
            # A half-written record (disk full) must not end up between later ones.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise
        size = before + len(data)
    finally:
        os.close(fd)
    if created:
        if dir_sync is not None:
            dir_sync.sync()
        else:
            fsync_dir(Path(path).parent)
    return size


def replace_atomically(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, rename over ``path``.

    ``sync_dir=False`` lets a caller replacing many files in one folder fsync the
    folder once at the end instead of once per file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; match the other data files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def _syncfs(fd: int) -> bool:
    """syncfs(2): flush one filesystem in one call (Linux); False where unavailable."""
    if _libc is None or not hasattr(_libc, "syncfs"):
        return False
    return bool(_libc.syncfs(fd) == 0)


def replace_many(files: Sequence[tuple[Path, bytes]]) -> None:
    """Replace many files atomically with one filesystem sync instead of one per file.

    All temp files are written first, made durable together (syncfs, or fsync each
    where syncfs is missing), then renamed; each touched folder is fsynced once.
    """
    if not files:
        return
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            # A fixed temp name: one writer per data dir (the lock), one flush at a time.
            temp = path.with_name(f".{path.name}.tmp")
            temps.append((temp, path))
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        folder_fd = os.open(files[0][0].parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            synced = _syncfs(folder_fd)
        finally:
            os.close(folder_fd)
        if not synced:
            for temp, _ in temps:
                fd = os.open(temp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        for temp, target in temps:
            os.replace(temp, target)
    except BaseException:
        for temp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        raise
    for folder in {path.parent for path, _ in files}:
        fsync_dir(folder)


def truncate_durably(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
