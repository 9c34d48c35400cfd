"""One process owns a data dir (invariant 4): an exclusive ``flock`` on ``.lock``."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

REFUSED = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})  # the pid is left unwritten


class DataDirBusy(Exception):
    def __init__(self, data_dir: Path, pid: str) -> None:
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"data dir {data_dir} is in use by {holder}; stop it first or use --data-dir"
        )


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in REFUSED:
                raise
            # A read-only or full disk: lock what exists (every process does the same,
            # as none can create .lock there); the service then starts read-only.
            target = self.path if self.path.exists() else self.path.parent
            fd = os.open(target, os.O_RDONLY)
            writable = False
        else:
            writable = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            except OSError:  # the folder itself was locked (a read-only disk)
                pid = ""
            os.close(fd)
            raise DataDirBusy(self.path.parent, pid) from None
        try:
            if writable:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            if exc.errno not in REFUSED:
                os.close(fd)
                raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
