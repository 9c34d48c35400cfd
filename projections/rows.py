"""The index row: the summary of one issue kept in ``issues.yaml`` and in memory.

Rows carry what lists filter and sort on; ``seq`` says which state of the issue the
row describes, so a stale issue file can be told from a current one. A row is a named
tuple: the index stores it as an array, and 100,000 of them load in a few hundredths
of a second (a frozen dataclass took half a second, most of the start-up budget).
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple, TypeVar, overload

from hydraissue.model import Issue


class IndexRow(NamedTuple):
    id: int
    title: str
    status: str
    category: str
    priority: str | None
    project: str | None
    reporter: str | None
    created_at: str
    updated_at: str
    seq: int
    deleted: bool = False
    attachments: int = 0  # how many files (the API adds their URLs; lists show a badge)
    status_at: str = ""  # when it entered its status (stats)
    nims: tuple[tuple[str, str], ...] = ()  # distinct (agent, action) pairs, for filters

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    def values(self) -> tuple[Any, ...]:
        """The row as the index stores it: its values in ``ROW_COLUMNS`` order."""
        return tuple(self)

    @staticmethod
    def load(item: list[Any]) -> IndexRow:
        """A row as the index stores it (nims as lists): TypeError if it is not one.

        Built in one step (100,000 rows at start-up), its repeating strings shared.
        """
        if len(item) != _WIDTH:
            raise TypeError(f"an index row has {_WIDTH} columns, not {len(item)}")
        (issue_id, title, status, category, priority, project, reporter) = item[:7]
        created, updated, seq, deleted, attachments, status_at, nims = item[7:]
        return tuple.__new__(
            IndexRow,
            (
                issue_id,
                title,
                shared(status),
                shared(category),
                shared(priority),
                shared(project),
                shared(reporter),
                created,
                _same(updated, created),
                seq,
                deleted,
                attachments,
                _same(status_at, created, updated),
                shared_nims(tuple(shared_pair(n, a) for n, a in nims)) if nims else (),
            ),
        )

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> IndexRow:
        return IndexRow(
            id=int(raw["id"]),
            title=str(raw["title"]),
            status=str(raw["status"]),
            category=str(raw["category"]),
            priority=raw.get("priority"),
            project=raw.get("project"),
            reporter=raw.get("reporter"),
            created_at=str(raw["created_at"]),
            updated_at=str(raw["updated_at"]),
            seq=int(raw["seq"]),
            deleted=bool(raw.get("deleted", False)),
            attachments=int(raw.get("attachments", 0)),
            status_at=str(raw.get("status_at") or raw["created_at"]),
            nims=tuple((str(n), str(a)) for n, a in raw.get("nims") or ()),
        )


ROW_COLUMNS = IndexRow._fields
_WIDTH = len(ROW_COLUMNS)


def _same(value: str, *candidates: str) -> str:
    """One string object for equal time stamps (each costs about 70 bytes per row)."""
    for candidate in candidates:
        if value == candidate:
            return candidate
    return value


@overload
def shared(value: str) -> str: ...
@overload
def shared(value: str | None) -> str | None: ...
def shared(value: str | None) -> str | None:
    """One object per distinct value: statuses, categories, projects and reporters
    repeat across thousands of rows."""
    return sys.intern(value) if value is not None and len(value) <= 64 else value


def row_for(issue: Issue) -> IndexRow:
    return IndexRow(
        id=issue.id,
        title=issue.title,
        status=shared(issue.status),
        category=shared(issue.category),
        priority=shared(issue.priority),
        project=shared(issue.project),
        reporter=shared(issue.reporter),
        created_at=issue.created_at,
        updated_at=_same(issue.updated_at, issue.created_at),
        seq=issue.seq,
        deleted=issue.deleted,
        attachments=len(issue.attachments),
        status_at=_same(issue.status_at, issue.created_at, issue.updated_at),
        nims=nim_pairs(issue),
    )


def nim_pairs(issue: Issue) -> tuple[tuple[str, str], ...]:
    """The distinct (agent, action) pairs of an issue's nim actions, in a fixed order."""
    if not issue.nim_actions:
        return ()
    pairs = {shared_pair(a.name, a.action) for a in issue.nim_actions}
    return shared_nims(tuple(sorted(pairs)))


T = TypeVar("T")
Pair = tuple[str, str]
Pairs = tuple[Pair, ...]
_PAIRS: dict[Pair, Pair] = {}
_NIMS: dict[Pairs, Pairs] = {}
SHARED_AT_MOST = 4096  # distinct pairs, and sets of them, kept for sharing (agents'
# names are free text: what is not kept is simply not shared)


def shared_pair(agent: str, action: str) -> Pair:
    """One object per (agent, action): a few agents doing a few actions, repeated by
    thousands of issues (a 2-tuple per pair per row was 10 MB of a 100,000-issue
    history)."""
    return _shared(_PAIRS, (shared(agent), shared(action)))


def shared_nims(pairs: Pairs) -> Pairs:
    """One object per distinct set of pairs (as many issues have the same ones); a long
    one is seldom shared and is not kept."""
    return _shared(_NIMS, pairs) if len(pairs) <= 16 else pairs


def _shared(kept: dict[T, T], value: T) -> T:
    found = kept.get(value)
    if found is not None:
        return found
    if len(kept) < SHARED_AT_MOST:
        kept[value] = value
    return value
