"""Audit trails of agents ("nims"): per agent, every nim action it recorded and every
API write it made saying who it is (an ``X-Nim-Name`` header, committed in the event's
meta), across all issues, in commit order.

A background subscriber (``nim-audit``) keeps them in memory and in
``audit/nims/{agent}.yaml`` (appended per batch; rebuilt by replay). Start-up loads
the files and the subscriber resumes from its checkpoint; an entry is recognised by its
position, so one already in a file is not added twice.
"""

from __future__ import annotations

import hashlib
import os
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from events.codec import dump_flow, dump_item, load_flow_items, load_items
from events.fsio import fsync_dir, remove_stale_temps, replace_atomically
from events.model import Event
from hydraissue.model import display_key
from projections.rows import shared

NAME = "nim-audit"
NIM_META = "nim"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Issue ids below this are counted in a bitmap (at most 2 MB an agent); above it, in a
# set: an imported issue can carry any number as its id.
_BITMAP_IDS = 1 << 24


@dataclass(frozen=True, slots=True)
class TrailEntry:
    pos: int
    at: str
    issue_id: int
    kind: str  # "nim_action", or the event type of an API write
    action: str  # the nim action, or what the write did ("status: groomed", ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pos": self.pos,
            "at": self.at,
            "issue_id": self.issue_id,
            "kind": self.kind,
            "action": self.action,
        }

    def public_dict(self) -> dict[str, Any]:
        return {**self.to_dict(), "key": display_key(self.issue_id)}


class Trail:
    """One agent's entries in commit order, kept as columns.

    An entry as an object (a slotted dataclass and its two ints) cost about 250 bytes;
    225,000 entries at 100,000 issues were about 56 MB. As columns an entry costs its
    time string and about 40 bytes, and ``TrailEntry`` objects are built only for what
    a request shows.

    The summary's figures (``counts``) are kept as entries are appended, so
    ``GET /api/v1/nims`` costs the number of agents and action names, not every entry
    ever recorded: the issues an agent touched are a bitmap by id (12.5 KB at 100,000
    issues) instead of a set of ints (about 60 bytes each).
    """

    __slots__ = (
        "_action",
        "_actions",
        "_at",
        "_far",
        "_issue",
        "_issues",
        "_kind",
        "_pos",
        "_seen",
    )

    def __init__(self, entries: Iterable[TrailEntry] = ()) -> None:
        self._pos = array("q")
        self._issue = array("q")
        self._at: list[str] = []
        self._kind: list[str] = []
        self._action: list[str] = []
        self._actions: Counter[str] = Counter()  # nim actions by name
        self._seen = bytearray()  # bit i: issue i is in the trail
        self._far: set[int] = set()  # issues with ids past the bitmap's range
        self._issues = 0  # distinct issues
        for entry in entries:
            self.append(entry)

    def __len__(self) -> int:
        return len(self._pos)

    def __iter__(self) -> Iterator[TrailEntry]:
        return (self[i] for i in range(len(self._pos)))

    def __getitem__(self, index: int) -> TrailEntry:
        return TrailEntry(
            self._pos[index],
            self._at[index],
            self._issue[index],
            self._kind[index],
            self._action[index],
        )

    def newest_first(self) -> Iterator[TrailEntry]:
        return (self[i] for i in range(len(self._pos) - 1, -1, -1))

    @property
    def last_pos(self) -> int:
        return self._pos[-1] if self._pos else 0

    @property
    def last_at(self) -> str | None:
        return self._at[-1] if self._at else None

    def append(self, entry: TrailEntry) -> None:
        self._pos.append(entry.pos)
        self._issue.append(entry.issue_id)
        self._at.append(entry.at)
        self._kind.append(shared(entry.kind))  # kinds and actions repeat across thousands
        self._action.append(shared(entry.action))
        if entry.kind == "nim_action":
            self._actions[entry.action] += 1
        self._count_issue(entry.issue_id)

    def _count_issue(self, issue_id: int) -> None:
        if issue_id >= _BITMAP_IDS:
            if issue_id not in self._far:
                self._far.add(issue_id)
                self._issues += 1
            return
        byte, bit = issue_id >> 3, 1 << (issue_id & 7)
        if byte >= len(self._seen):
            self._seen.extend(bytes(max(byte + 1, 2 * len(self._seen)) - len(self._seen)))
        if not self._seen[byte] & bit:
            self._seen[byte] |= bit
            self._issues += 1

    def counts(self) -> tuple[Counter[str], int, int]:
        """Nim actions by name, other writes, distinct issues (kept as entries came)."""
        writes = len(self._kind) - self._actions.total()
        return self._actions.copy(), writes, self._issues


def nim_of(event: Event) -> str | None:
    """The agent an event belongs to, if any."""
    if event.type == "nim_action.recorded":
        name = event.data.get("name")
        return name if isinstance(name, str) and name else None
    meta = event.meta or {}
    name = meta.get(NIM_META)
    return name if isinstance(name, str) and name else None


def entry_for(event: Event) -> TrailEntry:
    if event.type == "nim_action.recorded":
        return TrailEntry(
            event.pos, event.at, event.issue_id, "nim_action", str(event.data.get("action", ""))
        )
    what = event.type
    if event.type == "issue.updated":
        changes = event.data.get("changes")
        if isinstance(changes, dict) and changes:
            what = ", ".join(
                f"{k}: {v}" if k in ("status", "priority", "category") else k
                for k, v in changes.items()
            )
    return TrailEntry(event.pos, event.at, event.issue_id, event.type, what)


def trail_entries(event: Event) -> list[tuple[str, TrailEntry]]:
    """Each (agent, entry) an event adds to the trails. An imported issue brings its
    nim actions along: one entry each, at the event's position and the action's time."""
    if event.type == "issue.imported":
        actions = event.data.get("nim_actions")
        return [
            (
                action["name"],
                TrailEntry(
                    event.pos,
                    str(action.get("at") or event.at),
                    event.issue_id,
                    "nim_action",
                    str(action.get("action", "")),
                ),
            )
            for action in (actions if isinstance(actions, list) else ())
            if isinstance(action, dict) and isinstance(action.get("name"), str) and action["name"]
        ]
    agent = nim_of(event)
    return [] if agent is None else [(agent, entry_for(event))]


def file_name(agent: str) -> str:
    """A file name for an agent: the name itself when it is plain, else a digest."""
    if _SAFE.match(agent):
        return f"{agent}.yaml"
    return f"nim-{hashlib.sha256(agent.encode()).hexdigest()[:16]}.yaml"


def _entries(body: bytes) -> list[Any]:
    """A trail file's entries: all lines in one go (``load_flow_items``), or line by
    line when one does not parse (its last line torn by a crash)."""
    try:
        return load_flow_items(body)
    except ValueError:
        pass
    items: list[Any] = []
    for line in body.splitlines():
        try:
            items.extend(load_items(line))
        except ValueError:
            continue  # a line torn by a crash
    return items


class NimTrails:
    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "audit" / "nims"
        self.trails: dict[str, Trail] = {}

    # -- memory ------------------------------------------------------------------------

    def _trail(self, agent: str) -> Trail:
        return _trail_in(self.trails, agent)

    def add(self, agent: str, entry: TrailEntry) -> bool:
        trail = self._trail(agent)
        if trail and trail.last_pos >= entry.pos:
            return False  # already there (a batch handled again after a restart)
        trail.append(entry)
        return True

    def apply(self, events: Iterable[Event]) -> dict[str, list[TrailEntry]]:
        """Add the events' entries; returns the new ones per agent."""
        added: dict[str, list[TrailEntry]] = {}
        for event in events:
            entries = trail_entries(event)
            if len(entries) > 1:  # an import: several entries share the event's position
                self._add_imported(entries, added)
                continue
            for agent, entry in entries:
                if self.add(agent, entry):
                    added.setdefault(agent, []).append(entry)
        return added

    def _add_imported(
        self, entries: list[tuple[str, TrailEntry]], added: dict[str, list[TrailEntry]]
    ) -> None:
        """An agent's entries of one event go in together, unless the event is in its
        trail already (a batch handled again after a restart)."""
        fresh: dict[str, bool] = {}
        for agent, entry in entries:
            if agent not in fresh:
                trail = self.trails.get(agent)
                fresh[agent] = not trail or trail.last_pos < entry.pos
            if fresh[agent]:
                self._trail(agent).append(entry)
                added.setdefault(agent, []).append(entry)

    def summary(self) -> list[dict[str, Any]]:
        return [self._summary(agent, self.trails[agent]) for agent in sorted(self.trails)]

    def agent_summary(self, agent: str) -> dict[str, Any] | None:
        """One agent's line of ``summary`` (None: unknown), without counting the others."""
        trail = self.trails.get(agent)
        return None if trail is None else self._summary(agent, trail)

    @staticmethod
    def _summary(agent: str, trail: Trail) -> dict[str, Any]:
        actions, writes, issues = trail.counts()
        return {
            "name": agent,
            "actions": sum(actions.values()),
            "writes": writes,
            "by_action": dict(sorted(actions.items())),
            "issues": issues,
            "last_activity": trail.last_at,
        }

    def entries(
        self,
        agent: str,
        *,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[TrailEntry] | None:
        """An agent's entries, newest first, filtered; None when the agent is unknown."""
        trail = self.trails.get(agent)
        if trail is None:
            return None
        return [
            e
            for e in trail.newest_first()
            if (action is None or e.action == action)
            and (since is None or e.at >= since)
            and (until is None or e.at <= until)
        ]

    # -- files -------------------------------------------------------------------------

    def path(self, agent: str) -> Path:
        return self.folder / file_name(agent)

    def load(self) -> None:
        """The trails from their files, replacing what memory held (so a second load
        gives the same, not twice the entries). Entries that are not ours (a hand
        edit) are skipped."""
        trails: dict[str, Trail] = {}
        if self.folder.is_dir():
            remove_stale_temps(self.folder)
            for agent, entry in self._file_entries():
                trail = _trail_in(trails, agent)
                if not trail or trail.last_pos <= entry.pos:  # an import's share one
                    trail.append(entry)
        self.trails = trails

    def _file_entries(self) -> Iterator[tuple[str, TrailEntry]]:
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            if not entry.name.endswith(".yaml") or entry.name.startswith("."):
                continue
            data = Path(entry.path).read_bytes()
            match = re.search(rb"^name: (.+)$", data, re.MULTILINE)
            body_at = data.find(b"\nentries:\n")
            if match is None or body_at < 0:
                continue
            try:
                agent = orjson.loads(match.group(1))
            except orjson.JSONDecodeError:
                continue
            if not isinstance(agent, str):
                continue
            for item in _entries(data[body_at + 10 :]):
                try:
                    loaded = TrailEntry(**item)
                except TypeError:
                    continue  # not one of our entries (a hand edit)
                if _well_typed(loaded):
                    yield agent, loaded

    def header(self, agent: str) -> bytes:
        return (
            (
                b"# HydraIssue audit trail of one agent: its nim actions, and the API writes it\n"
                b"# made saying who it is (X-Nim-Name). Derived from events/.\n"
            )
            + b"name: "
            + dump_flow(agent)
            + b"\nentries:\n"
        )

    def append_files(self, added: dict[str, list[TrailEntry]]) -> None:
        """Worker thread: the new entries at the end of each agent's file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        created = False
        for agent, entries in added.items():
            path = self.path(agent)
            data = b"".join(dump_item(e.to_dict()) for e in entries)
            if not path.exists():
                data = self.header(agent) + data
                created = True
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        if created:
            fsync_dir(self.folder)

    def write_all(self) -> None:
        """Replay: every trail rewritten from memory, files of no agent removed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        keep = set()
        for agent, trail in self.trails.items():
            path = self.path(agent)
            keep.add(path.name)
            replace_atomically(
                path, self.header(agent) + b"".join(dump_item(e.to_dict()) for e in trail)
            )
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".yaml") and entry.name not in keep:
                os.unlink(entry.path)
        fsync_dir(self.folder)


def _well_typed(entry: TrailEntry) -> bool:
    """What the trail's columns can hold (positions and ids in signed 64-bit arrays)."""
    return (
        type(entry.pos) is int
        and type(entry.issue_id) is int
        and 0 <= entry.pos < 2**63
        and 0 <= entry.issue_id < 2**63
        and isinstance(entry.at, str)
        and isinstance(entry.kind, str)
        and isinstance(entry.action, str)
    )


def _trail_in(trails: dict[str, Trail], agent: str) -> Trail:
    trail = trails.get(agent)
    if trail is None:
        trail = trails[agent] = Trail()
    return trail
