"""Idempotency records, derived from events: a key is committed in its event's ``meta``.

Because the key travels with the event it produced, a retry after a crash still finds
it: the record is rebuilt from the log like every other projection. What is kept per
key is the result's identity (issue, seq, and which comment, nim action or file), not
the response body; the response is rendered again from that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.model import Event
from hydraissue.model import Issue

WINDOW_SECONDS = 24 * 3600
META = "idempotency"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key: str  # scoped: "api:<key>" or "public:<key>"
    fingerprint: str
    issue_id: int
    seq: int  # of the first event the request committed
    type: str  # that event's type
    ref: int | str | None  # comment id, nim action index or file name; None for a create
    expires: float  # Unix time

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fingerprint": self.fingerprint,
            "issue_id": self.issue_id,
            "seq": self.seq,
            "type": self.type,
            "ref": self.ref,
            "expires": self.expires,
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> KeyRecord:
        ref = raw.get("ref")
        return KeyRecord(
            key=str(raw["key"]),
            fingerprint=str(raw["fingerprint"]),
            issue_id=int(raw["issue_id"]),
            seq=int(raw["seq"]),
            type=str(raw["type"]),
            ref=ref if isinstance(ref, int | str) else None,
            expires=float(raw["expires"]),
        )


def key_meta(key: str, fingerprint: str) -> dict[str, Any]:
    """The ``meta`` an append carries for an idempotent request."""
    return {META: {"key": key, "fingerprint": fingerprint}}


def epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def record_for(event: Event, state: Issue) -> KeyRecord | None:
    """The record an event's meta asks for, given the issue state right after it."""
    meta = (event.meta or {}).get(META)
    if not isinstance(meta, dict):
        return None
    key, fingerprint = meta.get("key"), meta.get("fingerprint")
    if not isinstance(key, str) or not isinstance(fingerprint, str):
        return None
    ref: int | str | None = None
    if event.type == "comment.added" and state.comments:
        ref = state.comments[-1].id
    elif event.type == "nim_action.recorded" and state.nim_actions:
        ref = len(state.nim_actions) - 1
    elif event.type == "attachment.added" and state.attachments:
        ref = state.attachments[-1].filename
    return KeyRecord(
        key=key,
        fingerprint=fingerprint,
        issue_id=event.issue_id,
        seq=event.seq,
        type=event.type,
        ref=ref,
        expires=epoch(event.at) + WINDOW_SECONDS,
    )
