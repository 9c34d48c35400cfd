"""Pure decisions: given the current state and a command, which events happen.

Nothing here does I/O or reads the clock, so every lifecycle rule can be tested
by property tests without a server.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import orjson

from events.model import NewEvent
from hydraissue.commands import (
    CREATE_FIELDS,
    AddAttachment,
    AddComment,
    Command,
    CreateIssue,
    DeleteIssue,
    RecordNimAction,
    RejectPlan,
    StoredFile,
    UpdateIssue,
)
from hydraissue.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from hydraissue.model import TERMINAL_STATUSES, Issue, display_key

__all__ = ["HUMAN_STATUSES", "NewEvent", "decide", "etag_matches", "gate", "transition_allowed"]

ATTACHMENT_FIELDS = tuple(f.name for f in fields(AddAttachment) if f.name != "issue_id")


def transition_allowed(current: str, requested: str) -> bool:
    """Terminal states (done, closed) never go back; they may move to each other."""
    return current not in TERMINAL_STATUSES or requested in TERMINAL_STATUSES


# The seed's "Human via UI" moves: approving or rejecting a plan.
HUMAN_STATUSES = frozenset({"accepted", "rejected"})


def gate(current: str, requested: str) -> str | None:
    """Why an agent may not make this move (None: it may). The human-in-the-loop gate:
    a person accepts or rejects a plan and moves a rejected issue back; an agent starts
    implementing only what was accepted. ``done`` stays open to all, since release
    tooling resolves issues whatever their stage."""
    if requested == current:
        return None
    if requested in HUMAN_STATUSES:
        return f"moving an issue to {requested} is a human's decision: an admin makes it"
    if current == "rejected" and requested == "groomed":
        return "moving a rejected issue back to groomed is an admin's decision"
    if requested == "implementing" and current != "accepted":
        return (
            f"implementing starts only from accepted (this issue is {current}): "
            "an admin accepts the plan first"
        )
    return None


def etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """RFC 9110 comparison: If-Match is strong (a W/ tag never matches), If-None-Match weak."""
    for tag in (part.strip() for part in header.split(",")):
        if tag == "*" or tag == etag or (weak and tag.removeprefix("W/") == etag):
            return True
    return False


def decide(state: Issue | None, command: Command) -> list[NewEvent]:
    if isinstance(command, CreateIssue):
        data = {name: getattr(command, name) for name in CREATE_FIELDS}
        created = [NewEvent("issue.created", data)]
        return created + [_attachment(file) for file in command.attachments]
    issue = _existing(state, command.issue_id)
    match command:
        case UpdateIssue():
            return _update(issue, command)
        case RejectPlan():
            move = UpdateIssue(
                issue.id, {"status": "rejected"}, command.if_match, command.approving
            )
            text = f"Plan rejected: {command.reason}"
            data = {"id": len(issue.comments) + 1, "author": "admin", "text": text}
            return [*_update(issue, move), NewEvent("comment.added", data)]
        case DeleteIssue():
            _check_etag(command.if_match, issue)
            return [NewEvent("issue.deleted", {})]
        case AddComment():
            # The comment's id is decided here, so the event says which comment it made.
            data = {"id": len(issue.comments) + 1, "author": command.author, "text": command.text}
            return [NewEvent("comment.added", data)]
        case RecordNimAction():
            return [
                NewEvent("nim_action.recorded", {"name": command.name, "action": command.action})
            ]
        case AddAttachment():
            return [_attachment(command)]
    raise TypeError(f"unknown command {command!r}")  # pragma: no cover


def _attachment(file: AddAttachment | StoredFile) -> NewEvent:
    return NewEvent("attachment.added", {name: getattr(file, name) for name in ATTACHMENT_FIELDS})


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
    if requested is not None and not command.approving:
        reason = gate(issue.status, requested)
        if reason is not None:
            raise Forbidden(
                f"cannot move {display_key(issue.id)} from {issue.status} to {requested}: {reason}",
                {"current": issue.status, "requested": requested, "gate": "admin"},
            )
    changes = {k: v for k, v in command.changes.items() if _differs(getattr(issue, k), v)}
    if not changes:
        return []
    previous = {k: getattr(issue, k) for k in changes}
    return [NewEvent("issue.updated", {"changes": changes, "previous": previous})]
