"""Per-issue event logs: ``events/{id}.yaml``, append-only, one event per line.

Each line is a YAML block-sequence item holding the event as a JSON flow mapping
(``- {"issue_id": 1, "seq": 1, ...}``), so any YAML parser reads the file and we read
it with orjson (see ``events.codec``). A crash can leave at most the last line torn
(no newline, or bytes that do not parse); ``repair_tail`` cuts it away. A bad line
with good lines after it is damage, not a torn tail: the log is reported, never cut.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from events.codec import dump_item
from events.fsio import fsync_dir, truncate_durably
from events.model import Event

SUFFIX = ".yaml"


class LogDamaged(Exception):
    """A log that cannot be read back: damage inside it, not a torn tail."""


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


@dataclass(frozen=True, slots=True)
class ParsedLog:
    """A log's events and where each one's line lies in the file (offset, length)."""

    events: list[Event]
    spans: list[tuple[int, int]]
    size: int


def encode(event: Event) -> bytes:
    """One event as its log line (newline included)."""
    return dump_item(event.to_dict())


def scan(folder: Path) -> dict[int, int]:
    """Size of every log in ``folder`` (one directory listing and a stat per log)."""
    found: dict[int, int] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, _, ext = entry.name.partition(".")
            # canonical ids only: ASCII digits, no leading zero ("01.yaml" is not issue 1)
            if ext == "yaml" and stem.isdigit() and stem.isascii() and stem[0] != "0":
                found[int(stem)] = entry.stat().st_size
    return found


def parse_event_line(line: bytes) -> Event:
    """One line (``- {...}``, newline optional) as an Event; ValueError when it is not one."""
    if not line.startswith(b"- {"):
        raise ValueError("not an event line (expected `- {...}`)")
    try:
        raw = orjson.loads(line[2:])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError("not a mapping")
    try:
        return Event.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an event ({type(exc).__name__}: {exc})") from None


def parse_log(issue_id: int, data: bytes) -> ParsedLog:
    """Every event of one log, checked: this issue's, seq 1, 2, … and positions rising.

    Raises LogDamaged naming the first line at fault. The usual log (nothing but event
    lines) is parsed in one orjson call; anything else line by line.
    """
    fast = _parse_fast(issue_id, data)
    if fast is not None:
        return fast
    name = f"events/{issue_id}.yaml"
    events: list[Event] = []
    spans: list[tuple[int, int]] = []
    offset = 0
    last_pos = 0
    number = 0
    for raw_line in data.splitlines(keepends=True):
        number += 1
        start, offset = offset, offset + len(raw_line)
        line = raw_line.rstrip(b"\r\n")
        if not line or line.startswith(b"#"):
            continue
        try:
            event = parse_event_line(line)
        except ValueError as exc:
            raise LogDamaged(f"{name}: line {number} is {exc}") from None
        if event.issue_id != issue_id:
            raise LogDamaged(f"{name}: line {number} belongs to issue {event.issue_id}")
        if event.seq != len(events) + 1:
            raise LogDamaged(
                f"{name}: line {number} has seq {event.seq} where {len(events) + 1} was expected"
            )
        if event.pos <= last_pos:
            raise LogDamaged(
                f"{name}: line {number} has position {event.pos}, not above {last_pos}"
            )
        last_pos = event.pos
        events.append(event)
        spans.append((start, len(raw_line)))
    if not events:
        raise LogDamaged(f"{name}: holds no events")
    return ParsedLog(events, spans, len(data))


def _parse_fast(issue_id: int, data: bytes) -> ParsedLog | None:
    """All lines are ``- {...}`` and all is well, or None (then the careful path says why)."""
    lines = data.split(b"\n")
    if lines[-1]:
        return None  # no final newline: torn, let the careful path name it
    lines.pop()
    if not lines or any(line[:3] != b"- {" for line in lines):
        return None
    try:
        raws = orjson.loads(b"[" + b",".join([line[2:] for line in lines]) + b"]")
        events = [Event.from_dict(raw) for raw in raws]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    spans: list[tuple[int, int]] = []
    offset = 0
    for number, (line, event) in enumerate(zip(lines, events, strict=True), start=1):
        if event.issue_id != issue_id or event.seq != number:
            return None
        if number > 1 and event.pos <= events[number - 2].pos:
            return None
        spans.append((offset, len(line) + 1))
        offset += len(line) + 1
    return ParsedLog(events, spans, len(data))


def _parses(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def torn_tail(data: bytes) -> int:
    """How many bytes at the end are a torn write (0 when the log ends cleanly)."""
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
            break  # not a line of ours at all: damage for parse_log to name, not a tear
        keep = start
    return len(data) - keep


def repair_tail(folder: Path, issue_id: int) -> Repair | None:
    """Cut a torn tail left by a crash; a log that held only a torn event is removed."""
    path = folder / f"{issue_id}{SUFFIX}"
    data = path.read_bytes()
    cut = torn_tail(data)
    if not cut and data:
        return None
    keep = len(data) - cut
    if keep == 0:
        # Only a torn create: the issue was never acknowledged, so it never existed.
        path.unlink()
        fsync_dir(folder)
    else:
        truncate_durably(path, keep)
    return Repair(issue_id=issue_id, cut_bytes=cut, kept_size=keep)
