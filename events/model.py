"""Events as stored: one frozen record per mutation of one issue.

The event is the unit of truth; everything else in the data dir is derived from
these records, so their shape is versioned (``v``) and old versions are upcast on
read rather than rewritten on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ActorKind = Literal["api", "admin", "public", "system"]

CURRENT_VERSION = 1

# Every event type the service writes. Documented in docs/architecture.md; a test
# fails when one is added here without being documented there.
EVENT_TYPES = (
    "issue.created",
    "issue.updated",
    "issue.deleted",
    "comment.added",
    "nim_action.recorded",
    "attachment.added",
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event: the channel (api/admin/public) and a name where known."""

    kind: ActorKind
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event. ``seq`` counts per issue from 1; ``pos`` is global and increasing."""

    issue_id: int
    seq: int
    pos: int
    type: str
    at: str
    actor: Actor
    data: dict[str, Any] = field(default_factory=dict)
    v: int = CURRENT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "issue_id": self.issue_id,
            "seq": self.seq,
            "pos": self.pos,
            "type": self.type,
            "at": self.at,
            "actor": self.actor.to_dict(),
            "data": self.data,
            "v": self.v,
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> Event:
        raw = upcast(raw)
        actor = raw.get("actor") or {}
        return Event(
            issue_id=int(raw["issue_id"]),
            seq=int(raw["seq"]),
            pos=int(raw["pos"]),
            type=str(raw["type"]),
            at=str(raw["at"]),
            actor=Actor(kind=actor.get("kind", "system"), name=actor.get("name")),
            data=dict(raw.get("data") or {}),
            v=int(raw.get("v", CURRENT_VERSION)),
        )


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    """Bring an event written by an older version up to CURRENT_VERSION.

    Version 1 is the first; this is the one place later shape changes are handled,
    so the log never needs rewriting.
    """
    version = int(raw.get("v", CURRENT_VERSION))
    if version > CURRENT_VERSION:
        raise ValueError(f"event version {version} is newer than this build understands")
    return raw
