"""The index row: the summary of one issue kept in ``issues.yaml`` and in memory.

Rows carry what lists filter and sort on; ``seq`` says which state of the issue the
row describes, so a stale issue file can be told from a current one. A row is a named
tuple: the index stores it as an array, and 100,000 of them load in a few hundredths
of a second (a frozen dataclass took half a second, most of the start-up budget).
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple, overload

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
        """A row as the index stores it (nims as lists): TypeError if it is not one."""
        row = IndexRow._make(item)
        if row.nims:
            row = row._replace(nims=tuple((n, a) for n, a in row.nims))
        return compact(row)

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


@overload
def _shared(value: str) -> str: ...
@overload
def _shared(value: str | None) -> str | None: ...
def _shared(value: str | None) -> str | None:
    """One object per distinct value: statuses, categories, projects and reporters
    repeat across thousands of rows."""
    return sys.intern(value) if value is not None and len(value) <= 64 else value


def compact(row: IndexRow) -> IndexRow:
    """A row loaded from the index, its repeating strings shared."""
    return row._replace(
        status=_shared(row.status),
        category=_shared(row.category),
        priority=_shared(row.priority),
        project=_shared(row.project),
        reporter=_shared(row.reporter),
        nims=tuple((_shared(n), _shared(a)) for n, a in row.nims),
    )


def row_for(issue: Issue) -> IndexRow:
    return IndexRow(
        id=issue.id,
        title=issue.title,
        status=_shared(issue.status),
        category=_shared(issue.category),
        priority=_shared(issue.priority),
        project=_shared(issue.project),
        reporter=_shared(issue.reporter),
        created_at=issue.created_at,
        updated_at=issue.updated_at,
        seq=issue.seq,
        deleted=issue.deleted,
        attachments=len(issue.attachments),
        status_at=issue.status_at,
        nims=nim_pairs(issue),
    )


def nim_pairs(issue: Issue) -> tuple[tuple[str, str], ...]:
    """The distinct (agent, action) pairs of an issue's nim actions, in a fixed order."""
    if not issue.nim_actions:
        return ()
    return tuple(sorted({(sys.intern(a.name), sys.intern(a.action)) for a in issue.nim_actions}))
