"""Durable file primitives: the only places that call fsync.

Every derived file is replaced through ``replace_atomically`` or ``replace_many``
(temp file in the same folder, fsync, rename, fsync the folder), so a reader sees the
old file or the new one, never a torn one. A file's data on disk is worthless if its
name is not, hence the folder fsyncs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

TEMP_SUFFIX = ".tmp"

# How a batch of fsyncs is run: one after the other by default, or spread over a
# thread pool (``ThreadPoolExecutor.map``), which lets the file system commit them
# together instead of one journal commit each.
FsyncMap = Callable[[Callable[[int], None], Sequence[int]], Iterable[None]]
# A file's content: whole, or as chunks written one after the other, so a big snapshot
# is never held in memory at once (the index of 100,000 issues is about 25 MB).
Data = bytes | Iterable[bytes]


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A temp name beside ``path`` that no other writer picks (``.{name}.{random}.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def replace_atomically(path: Path, data: Data, *, sync_dir: bool = True, mode: int = 0o644) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, rename over ``path``.
    ``mode`` is the new file's from its creation (0o600 for secrets: never readable by
    others, not even for a moment)."""
    replace_many([(path, data)], sync_dirs=sync_dir, mode=mode)


def replace_many(
    files: Sequence[tuple[Path, Data]],
    *,
    fsyncs: FsyncMap | None = None,
    sync_dirs: bool = True,
    only_changed: bool = False,
    mode: int = 0o644,
) -> int:
    """Replace many files atomically: all temp files written and fsynced, then renamed,
    then each touched folder fsynced once. On failure every temp file is removed.

    ``only_changed`` leaves a file alone when it already holds exactly ``data`` (a
    rebuild of projections that are mostly right; a file given as chunks is always
    written). Returns how many were written.
    """
    if only_changed:
        files = [(path, data) for path, data in files if not _holds(path, data)]
    if not files:
        return 0
    temps: list[Path] = []
    fds: list[int] = []
    try:
        for path, data in files:
            temp = temp_path(path)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            temps.append(temp)
            fds.append(fd)
            _write_all(fd, data)
        for _ in (fsyncs or map)(os.fsync, fds):
            pass
        for fd in fds:
            os.close(fd)
        fds.clear()
        for temp, (path, _) in zip(temps, files, strict=True):
            os.replace(temp, path)
        temps.clear()
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for temp in temps:
            with contextlib.suppress(OSError):
                temp.unlink()
    if sync_dirs:
        for folder in {path.parent for path, _ in files}:
            fsync_dir(folder)
    return len(files)


SYNC_STEP = 1 << 20  # a big file is synced a megabyte at a time as it is written


def _write_all(fd: int, data: Data) -> None:
    """Write ``data``; a big file is made durable in steps as it goes, so each file
    system commit carries at most a step of it: an fsync of 16 MB at once would hold
    up every commit of the event store meanwhile (ordered data mode)."""
    unsynced = 0
    for part in _steps(data):
        if unsynced >= SYNC_STEP:
            os.fdatasync(fd)
            unsynced = 0
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]
        unsynced += len(part)


def _steps(data: Data) -> Iterable[bytes | memoryview]:
    """The parts to write: a whole file in steps of ``SYNC_STEP`` when it is big."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return data
    if len(data) <= 2 * SYNC_STEP:
        return (data,)
    view = memoryview(data)
    return (view[start : start + SYNC_STEP] for start in range(0, len(data), SYNC_STEP))


def _holds(path: Path, data: Data) -> bool:
    if not isinstance(data, bytes | bytearray | memoryview):
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.fstat(fd).st_size == len(data) and os.read(fd, len(data) + 1) == data
    except OSError:
        return False
    finally:
        os.close(fd)


def truncate_durably(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Temp files a crash left behind in ``folder`` (``.*.tmp``); only safe at start-up."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed
