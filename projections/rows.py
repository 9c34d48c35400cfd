"""The index row: the summary of one issue kept in ``issues.yaml``.

``log_size`` and ``seq`` let start-up tell, without reading a log, whether the row
(and the issue file) still describe what the log says.
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
    pos: int
    log_size: int
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> IndexRow:
        return IndexRow(**raw)


def row_for(issue: Issue, pos: int, log_size: int) -> IndexRow:
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
        pos=pos,
        log_size=log_size,
        deleted=issue.deleted,
    )
