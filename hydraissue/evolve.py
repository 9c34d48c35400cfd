"""Fold events into issue state.

Total on every event that is in a log (invariant 7): validation belongs in ``decide``.
Missing or mistyped fields get defaults, an event type or version from a newer build
keeps its sequence number and changes nothing else, and the order of events is the
store's business (it hands out seq 1, 2, … per issue and refuses anything else).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from events.model import CURRENT_VERSION, Event
from hydraissue.commands import UPDATE_FIELDS
from hydraissue.model import DEFAULT_CATEGORY, Attachment, Comment, Issue, NimAction

log = logging.getLogger("hydraissue.evolve")

# A change to a field this build does not know (a newer build's) stays in the log but
# cannot apply to this build's state.
UPDATABLE = frozenset(UPDATE_FIELDS)
_warned: set[tuple[str, int]] = set()


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _optional(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _skip(event: Event, why: str) -> None:
    marker = (event.type, event.v)
    if marker not in _warned:
        _warned.add(marker)
        log.warning("events of type %s (v%d) are kept but skipped: %s", event.type, event.v, why)


def _touch(state: Issue, event: Event, **changes: Any) -> Issue:
    """A copy with some fields changed (faster than dataclasses.replace on the hot path)."""
    values: dict[str, Any] = {
        "id": state.id,
        "title": state.title,
        "description": state.description,
        "project": state.project,
        "category": state.category,
        "priority": state.priority,
        "status": state.status,
        "reporter": state.reporter,
        "custom_fields": state.custom_fields,
        "plan": state.plan,
        "created_at": state.created_at,
        "updated_at": event.at,
        "seq": event.seq,
        "comments": state.comments,
        "nim_actions": state.nim_actions,
        "attachments": state.attachments,
        "deleted": state.deleted,
    }
    values.update(changes)
    return Issue(**values)


def _created(event: Event) -> Issue:
    data = event.data
    custom = data.get("custom_fields")
    return Issue(
        id=event.issue_id,
        title=_text(data.get("title")),
        description=_text(data.get("description")),
        project=_optional(data.get("project")),
        category=_text(data.get("category")) or DEFAULT_CATEGORY,
        priority=_optional(data.get("priority")),
        status="open",
        reporter=_optional(data.get("reporter")),
        custom_fields=dict(custom) if isinstance(custom, dict) else {},
        plan=None,
        created_at=event.at,
        updated_at=event.at,
        seq=event.seq,
    )


def evolve(state: Issue | None, event: Event) -> Issue:
    if event.v > CURRENT_VERSION:
        _skip(event, f"written by a newer build (this one reads up to v{CURRENT_VERSION})")
        if state is None:
            return _created(Event(event.issue_id, event.seq, event.pos, "", event.at, event.actor))
        return _touch(state, event)
    if event.type == "issue.created" or state is None:
        return _created(event)
    data = event.data
    match event.type:
        case "issue.updated":
            raw = data.get("changes")
            changes = (
                {k: v for k, v in raw.items() if k in UPDATABLE} if isinstance(raw, dict) else {}
            )
            return _touch(state, event, **changes)
        case "issue.deleted":
            return _touch(state, event, deleted=True)
        case "comment.added":
            number = _int(data.get("id")) or len(state.comments) + 1
            comment = Comment(
                id=number,
                author=_text(data.get("author")) or "anonymous",
                text=_text(data.get("text")),
                created_at=event.at,
            )
            return _touch(state, event, comments=(*state.comments, comment))
        case "nim_action.recorded":
            action = NimAction(
                name=_text(data.get("name")), action=_text(data.get("action")), at=event.at
            )
            return _touch(state, event, nim_actions=(*state.nim_actions, action))
        case "attachment.added":
            attachment = Attachment(
                name=_text(data.get("name")),
                filename=_text(data.get("filename")),
                size=_int(data.get("size")),
                content_type=_text(data.get("content_type")) or "application/octet-stream",
                at=event.at,
            )
            return _touch(state, event, attachments=(*state.attachments, attachment))
    _skip(event, "an event type this build does not know")
    return _touch(state, event)


def fold(events: Iterable[Event], state: Issue | None = None) -> Issue | None:
    for event in events:
        state = evolve(state, event)
    return state
