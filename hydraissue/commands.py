"""Commands: what a caller asks the service to do, already parsed and typed.

``Actor`` (who asks) is part of the domain's vocabulary; it is defined with the event
record it ends up in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from events.model import Actor

__all__ = [
    "CREATE_FIELDS",
    "UPDATE_FIELDS",
    "Actor",
    "AddAttachment",
    "AddComment",
    "Command",
    "CreateIssue",
    "DeleteIssue",
    "RecordNimAction",
    "RejectPlan",
    "StoredFile",
    "UpdateIssue",
]


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file already in the issue's upload folder, to be recorded with the issue."""

    name: str
    filename: str
    size: int
    content_type: str


@dataclass(frozen=True, slots=True)
class CreateIssue:
    """A new issue; a report's files come with it, so issue and files are one commit."""

    title: str
    description: str = ""
    project: str | None = None
    category: str = "unclassified"
    priority: str | None = None
    reporter: str | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)
    attachments: tuple[StoredFile, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateIssue:
    """Set some fields. ``changes`` holds only validated, normalised values."""

    issue_id: int
    changes: dict[str, Any]
    if_match: str | None = None
    # The caller may make the human's moves (accept, reject, un-reject): an admin, or
    # any caller where the deployment lets agents approve. Set by the service.
    approving: bool = False


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


@dataclass(frozen=True, slots=True)
class RejectPlan:
    """A person rejects the proposed plan: the move to rejected and the reason, kept as
    the admin's comment, are one decision (one commit, never one without the other)."""

    issue_id: int
    reason: str
    if_match: str | None = None
    approving: bool = False  # as UpdateIssue's: set by the service


Command = (
    CreateIssue
    | UpdateIssue
    | RejectPlan
    | DeleteIssue
    | AddComment
    | RecordNimAction
    | AddAttachment
)

# The fields a create carries (the API body and the issue.created data alike).
CREATE_FIELDS = tuple(f.name for f in fields(CreateIssue) if f.name != "attachments")
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
