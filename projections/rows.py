"""The index row: the summary of one issue kept in ``issues.yaml`` and in memory.

Rows carry what lists filter and sort on; ``seq`` says which state of the issue the
row describes, so a stale issue file can be told from a current one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hydraissue.model import Issue


@dataclass(frozen=True, slots=True)
class IndexRow:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
        )


def row_for(issue: Issue) -> IndexRow:
    return IndexRow(
        id=issue.id,
        title=issue.title,
        status=issue.status,
        category=issue.category,
        priority=issue.priority,
        project=issue.project,
        reporter=issue.reporter,
        created_at=issue.created_at,
        updated_at=issue.updated_at,
        seq=issue.seq,
        deleted=issue.deleted,
    )
