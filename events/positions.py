"""The position index: for every position, which issue's log holds that event and where.

The file store keeps the order of the stream here so that reading "the events after
position N" costs what it returns, not a scan of every log. It is a *hint*, never the
truth: each event line carries its own position, records are written only after the
event is durable, and the store checks the index against the logs' sizes when it opens
(rebuilding what does not agree). So the file is written without fsync on the commit
path, and a lost or stale index costs start-up time, never an event.

Layout: fixed 24-byte records of three little-endian u64 (issue id, byte offset, byte
length of the event's line); record N describes position N; record 0 is the header.
A record of zeros is a position that holds no event.
"""

from __future__ import annotations

import contextlib
import os
import sys
from array import array
from collections import Counter
from collections.abc import Collection
from pathlib import Path

WORDS = 3
RECORD = WORDS * 8
MAGIC = int.from_bytes(b"HYPOSIX1", "little")
VERSION = 1


class PositionIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._words = array("Q", [MAGIC, VERSION, 0])
        self._fd: int | None = None

    # -- memory ----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Highest position a record exists for (maybe a zero record)."""
        return len(self._words) // WORDS - 1

    def get(self, pos: int) -> tuple[int, int, int]:
        if pos < 1 or pos > self.capacity:
            return (0, 0, 0)
        base = pos * WORDS
        words = self._words
        return (words[base], words[base + 1], words[base + 2])

    def set(self, pos: int, issue_id: int, offset: int, length: int) -> None:
        if pos > self.capacity:
            self._words.extend(array("Q", bytes(RECORD * (pos - self.capacity))))
        base = pos * WORDS
        self._words[base : base + WORDS] = array("Q", (issue_id, offset, length))

    def clear(self, pos: int) -> None:
        if 1 <= pos <= self.capacity:
            self.set(pos, 0, 0, 0)

    def head(self) -> int:
        """The highest position that holds an event."""
        pos = self.capacity
        words = self._words
        while pos > 0 and words[pos * WORDS] == 0:
            pos -= 1
        return pos

    def issue_column(self, first: int = 1, last: int | None = None) -> array[int]:
        """Issue ids of positions first..last (a copy; C speed)."""
        last = self.capacity if last is None else min(last, self.capacity)
        return self._words[first * WORDS : (last + 1) * WORDS : WORDS]

    def by_issue(self) -> dict[int, tuple[int, int]]:
        """For each issue: (the log size its records add up to, how many records)."""
        ids = self.issue_column()
        last = dict(zip(ids, range(1, len(ids) + 1), strict=True))  # last position wins
        last.pop(0, None)
        counts = Counter(ids)  # counted in C: a million positions in a few ms
        words = self._words
        return {
            issue_id: (words[pos * WORDS + 1] + words[pos * WORDS + 2], counts[issue_id])
            for issue_id, pos in last.items()
        }

    def positions_of(self, issue_ids: Collection[int]) -> list[int]:
        ids = self.issue_column()
        return [pos for pos, issue_id in enumerate(ids, start=1) if issue_id in issue_ids]

    # -- the file ----------------------------------------------------------------------

    def load(self) -> bool:
        """Read the file; False (and an empty index) when it is missing or not ours."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        usable = len(data) - len(data) % RECORD
        words = array("Q")
        words.frombytes(data[:usable])
        if sys.byteorder != "little":  # pragma: no cover - the file is little-endian
            words.byteswap()
        if len(words) < WORDS or words[0] != MAGIC or words[1] != VERSION:
            return False
        self._words = words
        return True

    def reset(self) -> None:
        self._words = array("Q", [MAGIC, VERSION, 0])

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def write_from(self, first: int) -> None:
        """Write the records of position ``first`` and every one after it (no fsync)."""
        fd = self._open()
        if first > 0 and os.fstat(fd).st_size < RECORD:
            first = 0  # a new file: its header first
        first = max(0, first)
        view = self._words[first * WORDS :]
        data = view.tobytes() if sys.byteorder == "little" else _swapped(view)
        os.pwrite(fd, data, first * RECORD)
        size = len(self._words) * 8
        if first == 0 and os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


def _swapped(view: array[int]) -> bytes:  # pragma: no cover - big-endian hosts only
    copy = array("Q", view)
    copy.byteswap()
    return copy.tobytes()
