"""Events as stored: one frozen record per mutation of one issue.

The event is the unit of truth; everything else in the data dir is derived from
these records, so their shape is versioned (``v``). Old versions are upcast on read
rather than rewritten on disk; a version newer than this build is kept as it is (its
readers skip what they do not understand), never refused, so a downgrade cannot make
a log unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ActorKind = Literal["api", "admin", "public", "system"]
ACTOR_KINDS: tuple[ActorKind, ...] = ("api", "admin", "public", "system")

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
    "issue.imported",
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event: the channel (api/admin/public/system) and a name where known."""

    kind: ActorKind
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as decided, before the store gives it a sequence, a position and a time."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """One committed event.

    ``seq`` counts per issue from 1 without gaps; ``pos`` is the global position, handed
    out in commit order (it may have gaps, never fill-ins); ``meta`` is what the store
    committed with the event besides its data (an idempotency key), or None.
    """

    issue_id: int
    seq: int
    pos: int
    type: str
    at: str
    actor: Actor
    data: dict[str, Any] = field(default_factory=dict)
    v: int = CURRENT_VERSION
    meta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored (and audit) shape; ``meta`` only when there is some."""
        out: dict[str, Any] = {
            "issue_id": self.issue_id,
            "seq": self.seq,
            "pos": self.pos,
            "type": self.type,
            "at": self.at,
            "actor": {"kind": self.actor.kind, "name": self.actor.name},
            "data": self.data,
            "v": self.v,
        }
        if self.meta:
            out["meta"] = self.meta
        return out

    def public_dict(self) -> dict[str, Any]:
        """What clients see: no ``meta`` (it holds other clients' idempotency keys)."""
        return {
            "pos": self.pos,
            "issue_id": self.issue_id,
            "seq": self.seq,
            "type": self.type,
            "at": self.at,
            "actor": {"kind": self.actor.kind, "name": self.actor.name},
            "data": self.data,
            "v": self.v,
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> Event:
        """Raises ValueError, KeyError or TypeError on a record that is not an event.

        Replay reads a million of these: plain ``dict`` checks, no ABC isinstance.
        """
        raw = upcast(raw)
        actor = raw.get("actor") or {}
        data = raw.get("data") or {}
        meta = raw.get("meta") or None
        if type(actor) is not dict or type(data) is not dict:
            raise TypeError("actor and data must be mappings")
        if meta is not None and type(meta) is not dict:
            raise TypeError("meta must be a mapping")
        kind = actor.get("kind", "system")
        name = actor.get("name")
        issue_id, seq, pos, at = raw["issue_id"], raw["seq"], raw["pos"], raw["at"]
        if type(issue_id) is not int or type(seq) is not int or type(pos) is not int:
            issue_id, seq, pos = int(issue_id), int(seq), int(pos)
        return Event(
            issue_id,
            seq,
            pos,
            str(raw["type"]),
            at if type(at) is str else str(at),
            _actor(kind, name),
            data,
            int(raw.get("v", CURRENT_VERSION)),
            meta,
        )


_ACTORS: dict[tuple[object, object], Actor] = {}


def _actor(kind: object, name: object) -> Actor:
    """Actors repeat a lot (a few agents write most events): share one object each."""
    key = (kind, name)
    actor = _ACTORS.get(key)
    if actor is None:
        actor = Actor(
            kind=kind if kind in ACTOR_KINDS else "system",
            name=None if name is None else str(name),
        )
        if len(_ACTORS) < 10_000:
            _ACTORS[key] = actor
    return actor


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    """Bring an event written by an older version up to CURRENT_VERSION.

    Version 1 is the first, so there is nothing to lift yet; this is the one place
    later shape changes are handled, so the log never needs rewriting. A newer version
    passes through unchanged: ``evolve`` keeps its sequence and skips its meaning.
    """
    return raw
