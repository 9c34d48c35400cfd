"""Fold events into issue state. Total on every event that is in a log (invariant 6):
validation belongs in ``decide``; the only check here is the sequence number, which
catches a damaged or misordered log rather than bad input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from events.model import Event
from hydraissue.commands import UPDATE_FIELDS
from hydraissue.model import DEFAULT_CATEGORY, Attachment, Comment, Issue, NimAction

# A change to a field this build does not know (a newer build's) stays in the log but
# cannot apply to this build's state.
UPDATABLE = frozenset(UPDATE_FIELDS)


class SequenceGap(Exception):
    """An event whose seq does not follow the state it is applied to."""


def upload_url(issue_id: int, filename: str) -> str:
    return f"/uploads/{issue_id}/{filename}"


def evolve(state: Issue | None, event: Event) -> Issue:
    expected = (state.seq if state else 0) + 1
    if event.seq != expected:
        raise SequenceGap(
            f"issue {event.issue_id}: event seq {event.seq} where {expected} was expected"
        )
    data = event.data
    if event.type == "issue.created" or state is None:
        return Issue(
            id=event.issue_id,
            title=data.get("title", ""),
            description=data.get("description") or "",
            project=data.get("project"),
            category=data.get("category") or DEFAULT_CATEGORY,
            priority=data.get("priority"),
            status="open",
            reporter=data.get("reporter"),
            custom_fields=dict(data.get("custom_fields") or {}),
            plan=None,
            created_at=event.at,
            updated_at=event.at,
            seq=event.seq,
        )
    touched = replace(state, seq=event.seq, updated_at=event.at)
    match event.type:
        case "issue.updated":
            changes = {k: v for k, v in data.get("changes", {}).items() if k in UPDATABLE}
            return replace(touched, **changes)
        case "issue.deleted":
            return replace(touched, deleted=True)
        case "comment.added":
            comment = Comment(
                id=len(state.comments) + 1,
                author=data.get("author") or "anonymous",
                text=data.get("text", ""),
                created_at=event.at,
            )
            return replace(touched, comments=(*state.comments, comment))
        case "nim_action.recorded":
            action = NimAction(
                name=data.get("name", ""), action=data.get("action", ""), at=event.at
            )
            return replace(touched, nim_actions=(*state.nim_actions, action))
        case "attachment.added":
            attachment = Attachment(
                name=data.get("name", ""),
                filename=data["filename"],
                size=int(data.get("size", 0)),
                content_type=data.get("content_type", "application/octet-stream"),
                url=upload_url(event.issue_id, data["filename"]),
                at=event.at,
            )
            return replace(touched, attachments=(*state.attachments, attachment))
    return touched  # an event type from a newer build: keep the sequence, change nothing


def fold(events: Iterable[Event], state: Issue | None = None) -> Issue | None:
    for event in events:
        state = evolve(state, event)
    return state
