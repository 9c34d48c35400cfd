"""The per-issue event log: ``events/{id}.yaml``, append-only, one event per line.

An append is a single ``write`` followed by fsync: the fsync is the commit point of
every mutation. A crash can leave at most the last line torn (no newline, or bytes
that do not parse); ``repair`` cuts it away and says what it cut.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from events.codec import NotFlowLines, dump_item, load_items
from events.fsio import DirSync, append_durably, fsync_dir, truncate_durably
from events.model import Event


class LogCorrupt(Exception):
    """An event log that cannot be read back: not a torn tail but damage inside."""


@dataclass(frozen=True, slots=True)
class Repair:
    issue_id: int
    cut_bytes: int
    kept_size: int

    def describe(self) -> str:
        if self.kept_size == 0:
            return (
                f"events/{self.issue_id}.yaml: removed; it held only a torn first event "
                f"({self.cut_bytes} bytes) left by a crash"
            )
        return (
            f"events/{self.issue_id}.yaml: cut a torn last event "
            f"({self.cut_bytes} bytes) left by a crash; kept {self.kept_size} bytes"
        )


class EventLog:
    """All per-issue logs under ``{data_dir}/events``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "events"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._prefix = f"{self.dir}{os.sep}"  # str paths: pathlib costs show on the hot path
        self._dir_sync = DirSync(self.dir)
        self.ready_below = 0  # ids below this have a durable (maybe empty) log file

    def preallocate(self, start: int, count: int) -> None:
        """Create empty logs for ids start..start+count-1 and make their names durable.

        Callers keep the covered range contiguous: ``start`` is at most ``ready_below``.

        A folder fsync costs milliseconds; paying it once per batch here, off the
        request path, lets a create commit with the log file's fsync alone. Empty logs
        are not issues: every reader skips them (``sizes``).
        """
        if start > self.ready_below:
            raise ValueError(f"preallocating from {start} would leave a hole at {self.ready_below}")
        for issue_id in range(start, start + count):
            os.close(os.open(self.path(issue_id), os.O_WRONLY | os.O_CREAT, 0o644))
        fsync_dir(self.dir)
        self.ready_below = max(self.ready_below, start + count)

    def path(self, issue_id: int) -> Path:
        return self.dir / f"{issue_id}.yaml"

    def append(self, events: Iterable[Event]) -> int:
        """Durably append events of one issue; returns the log's new size in bytes."""
        batch = list(events)
        if not batch:
            raise ValueError("nothing to append")
        issue_id = batch[0].issue_id
        payload = b"".join(dump_item(event) for event in batch)  # orjson reads dataclasses
        # A later event's log, or a preallocated one, already has a durable name.
        new_entry = batch[0].seq == 1 and issue_id >= self.ready_below
        path = f"{self._prefix}{issue_id}.yaml"
        return append_durably(path, payload, self._dir_sync, new_entry=new_entry)

    def read(self, issue_id: int, size: int | None = None) -> list[Event]:
        """Events of one issue, oldest first. Raises FileNotFoundError or LogCorrupt.

        ``size``: read only that many bytes, the part known to be committed, so a
        reader never sees an append still in flight.
        """
        with open(self.path(issue_id), "rb") as handle:
            data = handle.read() if size is None else handle.read(size)
        try:
            items = load_items(data)
            return [Event.from_dict(item) for item in items]
        except (NotFlowLines, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LogCorrupt(f"events/{issue_id}.yaml: {exc}") from exc

    def sizes(self) -> dict[int, int]:
        """Log size of every issue that has events (one directory scan, no reads).

        Empty logs are left out: they are preallocated for ids not yet used.
        """
        found: dict[int, int] = {}
        with os.scandir(self.dir) as entries:
            for entry in entries:
                stem, dot, ext = entry.name.partition(".")
                if ext == "yaml" and dot and stem.isdigit():
                    size = entry.stat().st_size
                    if size:
                        found[int(stem)] = size
        return found

    def repair(self, issue_id: int) -> Repair | None:
        """Cut a torn tail (an unfinished or unparsable last line) left by a crash."""
        path = self.path(issue_id)
        data = path.read_bytes()
        keep = len(data)
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
        # A crash may also leave a complete-looking but garbage last line (zeros).
        while keep > 0:
            start = data.rfind(b"\n", 0, keep - 1) + 1
            line = data[start:keep].rstrip(b"\n")
            if line.startswith(b"- {") and _parses(line[2:]):
                break
            if not line.startswith(b"- ") and b"\x00" not in line:
                break  # a hand-written YAML item: not ours to judge here
            keep = start
        if keep == len(data) and keep > 0:
            return None
        if keep == 0:
            # Only a torn create: the issue was never acknowledged, so it never existed.
            path.unlink()
            fsync_dir(self.dir)
        else:
            truncate_durably(path, keep)
        return Repair(issue_id=issue_id, cut_bytes=len(data) - keep, kept_size=keep)


def _parses(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True
