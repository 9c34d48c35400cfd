"""The issue as the domain sees it: enums of the runbook and immutable state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The domain speaks of an issue's events too; the record itself is defined with the store.
from events.model import EVENT_TYPES, Event

__all__ = [
    "CATEGORIES",
    "DEFAULT_CATEGORY",
    "EVENT_TYPES",
    "PRIORITIES",
    "STAGES",
    "STATUSES",
    "STATUS_ALIASES",
    "TERMINAL_STATUSES",
    "Attachment",
    "Comment",
    "Event",
    "Issue",
    "NimAction",
    "display_key",
    "etag_of",
    "issue_from_dict",
]

STATUSES = (
    "open",
    "groomed",
    "planning",
    "proposed",
    "accepted",
    "rejected",
    "implementing",
    "done",
    "closed",
)
TERMINAL_STATUSES = frozenset({"done", "closed"})
# Release tooling says "resolved"; the lifecycle calls it "done".
STATUS_ALIASES = {"resolved": "done"}

STAGES: dict[str, tuple[str, ...]] = {
    "groomable": ("open",),
    "plannable": ("groomed",),
    "implementable": ("accepted",),
    "active": tuple(s for s in STATUSES if s not in TERMINAL_STATUSES),
}

PRIORITIES = ("low", "medium", "high", "critical")
CATEGORIES = ("bug", "feature", "improvement", "question", "unclassified")
DEFAULT_CATEGORY = "unclassified"


def display_key(issue_id: int) -> str:
    return f"HYDRA-{issue_id}"


def etag_of(issue_id: int, seq: int) -> str:
    """An issue state's strong ETag: it changes with every event of the issue."""
    return f'"{issue_id}.{seq}"'


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    author: str
    text: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author": self.author,
            "text": self.text,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class NimAction:
    name: str
    action: str
    at: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "at": self.at}


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file of the issue; where it is served from is the web layer's business."""

    name: str
    filename: str
    size: int
    content_type: str
    at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "filename": self.filename,
            "size": self.size,
            "content_type": self.content_type,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class Issue:
    """Current state of one issue; ``seq`` is the number of events folded into it."""

    id: int
    title: str
    description: str
    project: str | None
    category: str
    priority: str | None
    status: str
    reporter: str | None
    custom_fields: dict[str, Any]
    plan: str | None
    created_at: str
    updated_at: str
    seq: int
    comments: tuple[Comment, ...] = ()
    nim_actions: tuple[NimAction, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    deleted: bool = False
    status_at: str = ""  # when the issue entered its status (stats, stuck issues)

    @property
    def etag(self) -> str:
        return etag_of(self.id, self.seq)

    def to_dict(self) -> dict[str, Any]:
        """The issue as the API and the issue file show it."""
        return {
            "id": self.id,
            "key": display_key(self.id),
            "title": self.title,
            "description": self.description,
            "project": self.project,
            "category": self.category,
            "priority": self.priority,
            "status": self.status,
            "reporter": self.reporter,
            "custom_fields": self.custom_fields,
            "plan": self.plan,
            "comments": [c.to_dict() for c in self.comments],
            "nim_actions": [a.to_dict() for a in self.nim_actions],
            "attachments": [a.to_dict() for a in self.attachments],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def issue_from_dict(raw: dict[str, Any]) -> Issue:
    """Inverse of ``Issue.to_dict`` plus the bookkeeping fields of an issue file.

    Keys it does not know (an attachment ``url`` written by an older build) are ignored.
    """
    return Issue(
        id=int(raw["id"]),
        title=raw["title"],
        description=raw.get("description") or "",
        project=raw.get("project"),
        category=raw.get("category") or DEFAULT_CATEGORY,
        priority=raw.get("priority"),
        status=raw["status"],
        reporter=raw.get("reporter"),
        custom_fields=dict(raw.get("custom_fields") or {}),
        plan=raw.get("plan"),
        created_at=raw["created_at"],
        updated_at=raw["updated_at"],
        seq=int(raw["seq"]),
        comments=tuple(
            Comment(id=c["id"], author=c["author"], text=c["text"], created_at=c["created_at"])
            for c in raw.get("comments") or ()
        ),
        nim_actions=tuple(
            NimAction(name=a["name"], action=a["action"], at=a["at"])
            for a in raw.get("nim_actions") or ()
        ),
        attachments=tuple(
            Attachment(
                name=a["name"],
                filename=a["filename"],
                size=int(a["size"]),
                content_type=a["content_type"],
                at=a["at"],
            )
            for a in raw.get("attachments") or ()
        ),
        deleted=bool(raw.get("deleted", False)),
        status_at=str(raw.get("status_at") or raw["created_at"]),
    )
