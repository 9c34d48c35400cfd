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


def _values(state: Issue) -> dict[str, Any]:
    return {
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
        "updated_at": state.updated_at,
        "seq": state.seq,
        "comments": state.comments,
        "nim_actions": state.nim_actions,
        "attachments": state.attachments,
        "deleted": state.deleted,
        "status_at": state.status_at,
    }


def _created(event: Event) -> dict[str, Any]:
    data = event.data
    custom = data.get("custom_fields")
    return {
        "id": event.issue_id,
        "title": _text(data.get("title")),
        "description": _text(data.get("description")),
        "project": _optional(data.get("project")),
        "category": _text(data.get("category")) or DEFAULT_CATEGORY,
        "priority": _optional(data.get("priority")),
        "status": "open",
        "reporter": _optional(data.get("reporter")),
        "custom_fields": dict(custom) if isinstance(custom, dict) else {},
        "plan": None,
        "created_at": event.at,
        "updated_at": event.at,
        "seq": event.seq,
        "comments": (),
        "nim_actions": (),
        "attachments": (),
        "deleted": False,
        "status_at": event.at,
    }


def _items(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _imported(event: Event) -> dict[str, Any]:
    """The whole issue an import carried (``issue.imported``): the original's fields,
    times and history as ``hydraissue import`` normalised them; each missing one gets
    the default a new issue would have."""
    data = event.data
    values = _created(event)
    values["status"] = _text(data.get("status")) or "open"
    values["plan"] = _optional(data.get("plan"))
    created = _text(data.get("created_at")) or event.at
    values["created_at"] = created
    values["updated_at"] = _text(data.get("updated_at")) or created
    values["status_at"] = _text(data.get("status_at")) or values["updated_at"]
    values["comments"] = tuple(
        Comment(
            id=_int(c.get("id")) or number,
            author=_text(c.get("author")) or "anonymous",
            text=_text(c.get("text")),
            created_at=_text(c.get("created_at")) or created,
        )
        for number, c in enumerate(_items(data.get("comments")), start=1)
    )
    values["nim_actions"] = tuple(
        NimAction(
            name=_text(a.get("name")),
            action=_text(a.get("action")),
            at=_text(a.get("at")) or created,
        )
        for a in _items(data.get("nim_actions"))
    )
    values["attachments"] = tuple(
        Attachment(
            name=_text(a.get("name")) or _text(a.get("filename")),
            filename=_text(a.get("filename")),
            size=_int(a.get("size")),
            content_type=_text(a.get("content_type")) or "application/octet-stream",
            at=_text(a.get("at")) or created,
        )
        for a in _items(data.get("attachments"))
    )
    return values


def _apply(values: dict[str, Any] | None, event: Event) -> dict[str, Any]:
    """What an event does to an issue's fields: the one definition, on a dict (changed
    in place and returned; a new one for a create). ``evolve`` and ``fold`` wrap it."""
    if event.v > CURRENT_VERSION:
        _skip(event, f"written by a newer build (this one reads up to v{CURRENT_VERSION})")
        if values is None:
            return _created(Event(event.issue_id, event.seq, event.pos, "", event.at, event.actor))
        values["seq"] = event.seq
        values["updated_at"] = event.at
        return values
    kind = event.type
    if kind == "issue.imported":
        return _imported(event)
    if kind == "issue.created" or values is None:
        return _created(event)
    values["seq"] = event.seq
    values["updated_at"] = event.at
    data = event.data
    if kind == "issue.updated":
        raw = data.get("changes")
        if isinstance(raw, dict):
            if "status" in raw and raw["status"] != values["status"]:
                values["status_at"] = event.at
            values.update({k: v for k, v in raw.items() if k in UPDATABLE})
    elif kind == "comment.added":
        comments = values["comments"]
        comment = Comment(
            id=_int(data.get("id")) or len(comments) + 1,
            author=_text(data.get("author")) or "anonymous",
            text=_text(data.get("text")),
            created_at=event.at,
        )
        values["comments"] = (*comments, comment)
    elif kind == "nim_action.recorded":
        action = NimAction(
            name=_text(data.get("name")), action=_text(data.get("action")), at=event.at
        )
        values["nim_actions"] = (*values["nim_actions"], action)
    elif kind == "attachment.added":
        attachment = Attachment(
            name=_text(data.get("name")),
            filename=_text(data.get("filename")),
            size=_int(data.get("size")),
            content_type=_text(data.get("content_type")) or "application/octet-stream",
            at=event.at,
        )
        values["attachments"] = (*values["attachments"], attachment)
    elif kind == "issue.deleted":
        values["deleted"] = True
    else:
        _skip(event, "an event type this build does not know")
    return values


def evolve(state: Issue | None, event: Event) -> Issue:
    """The issue after one event (a new Issue; ``state`` is not changed)."""
    return Issue(**_apply(_values(state) if state is not None else None, event))


def fold(events: Iterable[Event], state: Issue | None = None) -> Issue | None:
    """The issue after all ``events``: like evolve applied in turn, in one pass."""
    values = _values(state) if state is not None else None
    for event in events:
        values = _apply(values, event)
    return Issue(**values) if values is not None else None
