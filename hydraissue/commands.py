"""Commands: what a caller asks the service to do, already parsed and typed."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class CreateIssue:
    title: str
    description: str = ""
    project: str | None = None
    category: str = "unclassified"
    priority: str | None = None
    reporter: str | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpdateIssue:
    """Set some fields. ``changes`` holds only validated, normalised values."""

    issue_id: int
    changes: dict[str, Any]
    if_match: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteIssue:
    issue_id: int
    if_match: str | None = None


@dataclass(frozen=True, slots=True)
class AddComment:
    issue_id: int
    author: str
    text: str


@dataclass(frozen=True, slots=True)
class RecordNimAction:
    issue_id: int
    name: str
    action: str


@dataclass(frozen=True, slots=True)
class AddAttachment:
    issue_id: int
    name: str
    filename: str
    size: int
    content_type: str


Command = CreateIssue | UpdateIssue | DeleteIssue | AddComment | RecordNimAction | AddAttachment

# The fields a create carries (the API body and the issue.created data alike).
CREATE_FIELDS = tuple(f.name for f in fields(CreateIssue))
# The fields an update may set: the PATCH body, and all that evolve applies.
UPDATE_FIELDS = (
    "status",
    "priority",
    "category",
    "plan",
    "custom_fields",
    "title",
    "description",
    "project",
)
