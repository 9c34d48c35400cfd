"""Pure decisions: given the current state and a command, which events happen.

Nothing here does I/O or reads the clock, so every lifecycle rule can be tested
by property tests without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import orjson

from events.model import Actor, Event
from hydraissue.commands import (
    CREATE_FIELDS,
    AddAttachment,
    AddComment,
    Command,
    CreateIssue,
    DeleteIssue,
    RecordNimAction,
    UpdateIssue,
)
from hydraissue.errors import Conflict, NotFound, PreconditionFailed
from hydraissue.model import TERMINAL_STATUSES, Issue, display_key

ATTACHMENT_FIELDS = tuple(f.name for f in fields(AddAttachment) if f.name != "issue_id")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event before the service stamps it with seq, position, time and actor."""

    type: str
    data: dict[str, Any]


def stamp(
    state: Issue | None,
    issue_id: int,
    decided: list[NewEvent],
    first_pos: int,
    at: str,
    actor: Actor,
) -> list[Event]:
    """Turn decided events into stored ones: seq after the state's, positions from first_pos."""
    seq = state.seq if state else 0
    return [
        Event(
            issue_id=issue_id,
            seq=seq + offset,
            pos=first_pos + offset - 1,
            type=new.type,
            at=at,
            actor=actor,
            data=new.data,
        )
        for offset, new in enumerate(decided, start=1)
    ]


def transition_allowed(current: str, requested: str) -> bool:
    """Terminal states (done, closed) never go back; they may move to each other."""
    return current not in TERMINAL_STATUSES or requested in TERMINAL_STATUSES


def etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """RFC 9110 comparison: If-Match is strong (a W/ tag never matches), If-None-Match weak."""
    for tag in (part.strip() for part in header.split(",")):
        if tag == "*" or tag == etag or (weak and tag.removeprefix("W/") == etag):
            return True
    return False


def decide(state: Issue | None, command: Command) -> list[NewEvent]:
    if isinstance(command, CreateIssue):
        data = {name: getattr(command, name) for name in CREATE_FIELDS}
        return [NewEvent("issue.created", data)]
    issue = _existing(state, command.issue_id)
    match command:
        case UpdateIssue():
            return _update(issue, command)
        case DeleteIssue():
            _check_etag(command.if_match, issue)
            return [NewEvent("issue.deleted", {})]
        case AddComment():
            return [NewEvent("comment.added", {"author": command.author, "text": command.text})]
        case RecordNimAction():
            return [
                NewEvent("nim_action.recorded", {"name": command.name, "action": command.action})
            ]
        case AddAttachment():
            data = {name: getattr(command, name) for name in ATTACHMENT_FIELDS}
            return [NewEvent("attachment.added", data)]
    raise TypeError(f"unknown command {command!r}")  # pragma: no cover


def _existing(state: Issue | None, issue_id: int) -> Issue:
    if state is None or state.deleted:
        raise NotFound(f"{display_key(issue_id)} does not exist", {"id": issue_id})
    return state


def _check_etag(if_match: str | None, issue: Issue) -> None:
    if if_match is not None and not etag_matches(if_match, issue.etag, weak=False):
        raise PreconditionFailed(
            "If-Match does not match the issue's current ETag; fetch it again and retry",
            {"etag": issue.etag, "if_match": if_match},
        )


def _differs(old: Any, new: Any) -> bool:
    """JSON-level difference: 1, 1.0 and true differ to a client; key order does not."""
    if old is new:
        return False
    return orjson.dumps(old, option=orjson.OPT_SORT_KEYS) != orjson.dumps(
        new, option=orjson.OPT_SORT_KEYS
    )


def _update(issue: Issue, command: UpdateIssue) -> list[NewEvent]:
    _check_etag(command.if_match, issue)
    requested = command.changes.get("status")
    if requested is not None and not transition_allowed(issue.status, requested):
        raise Conflict(
            f"cannot move {display_key(issue.id)} from {issue.status} to {requested}: "
            "done and closed never go back to an earlier state",
            {"current": issue.status, "requested": requested},
        )
    changes = {k: v for k, v in command.changes.items() if _differs(getattr(issue, k), v)}
    if not changes:
        return []
    previous = {k: getattr(issue, k) for k in changes}
    return [NewEvent("issue.updated", {"changes": changes, "previous": previous})]
