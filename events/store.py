"""The event store's contract: the one owner of the write side.

Everything that makes a write durable and ordered lives behind this interface: id
allocation, the expected-sequence check per issue, global positions handed out in
commit order, the commit itself, and the stream of committed events. The file store
(``events.filestore``) is today's implementation; a PostgreSQL store would be another,
and must pass the same contract suite (``tests/test_store_contract.py``). Nothing here
mentions files.

Positions: when an event at position N is visible (returned by ``read_after``,
``wait_for`` or a commit listener), every event below N that will ever be committed is
visible too. Positions may have gaps (an append that failed), never fill-ins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from events.model import Actor, Event, NewEvent

# Called with each committed batch, in position order, before any append of that batch
# returns: the read model subscribes here, so a response can show its own write.
CommitListener = Callable[[Sequence[Event]], None]


class StoreError(Exception):
    """Base of what an append or a read can refuse."""


class SequenceConflict(StoreError):
    """The issue has moved on since the caller read it (or the issue already exists)."""

    def __init__(self, issue_id: int, expected: int, actual: int) -> None:
        super().__init__(f"issue {issue_id} is at seq {actual}, the append expected {expected}")
        self.issue_id = issue_id
        self.expected = expected
        self.actual = actual


class IssueUnavailable(StoreError):
    """The issue's log is damaged (not a torn tail): it is neither read nor written."""

    def __init__(self, issue_id: int, reason: str) -> None:
        super().__init__(reason)
        self.issue_id = issue_id
        self.reason = reason


class UnknownIssue(StoreError):
    """No issue has this id (it was never created)."""

    def __init__(self, issue_id: int) -> None:
        super().__init__(f"no issue {issue_id}")
        self.issue_id = issue_id


class StorageFailed(StoreError):
    """The storage refused the write (disk full, read-only, I/O error): nothing committed."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Append:
    """Events for one issue, committed together or not at all.

    ``issue_id`` None creates a new issue with a fresh id; an id from ``reserve_id``
    creates that issue (``expected_seq`` 0). ``meta`` is committed with the first event.
    """

    issue_id: int | None
    expected_seq: int
    events: Sequence[NewEvent]
    actor: Actor
    meta: Mapping[str, Any] | None = None


@dataclass(slots=True)
class OpenReport:
    """What opening the store found and repaired."""

    issues: int = 0
    events: int = 0
    head: int = 0
    repairs: list[str] = field(default_factory=list)
    damaged: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class EventStore(ABC):
    """The write side. One instance owns its storage (one process per data dir)."""

    @property
    @abstractmethod
    def head(self) -> int:
        """The highest committed position (0 for an empty store)."""

    @property
    @abstractmethod
    def damaged(self) -> Mapping[int, str]:
        """Issues whose log cannot be read, with the reason; every other issue works."""

    @property
    @abstractmethod
    def failure(self) -> str | None:
        """Why the store refuses every write until restarted, or None when it writes."""

    @abstractmethod
    async def open(self) -> OpenReport:
        """Recover (repair torn tails, find damage) and start accepting appends."""

    @abstractmethod
    async def close(self) -> None:
        """Finish the appends already queued, then refuse new ones."""

    @abstractmethod
    def reserve_id(self, issue_id: int | None = None) -> int:
        """A new issue id, never handed out before while this store is open.

        With ``issue_id``: that id, to create the issue with a given id (an import keeps
        the original's ids); ids handed out later skip it, and after a reopen they
        continue above the highest id with a log. SequenceConflict when an issue has it
        or it was handed out already; ValueError when it is below 1.
        """

    @abstractmethod
    async def append(self, append: Append) -> list[Event]:
        """Commit durably; the committed events (seq, pos, time stamped) in order.

        Raises SequenceConflict, IssueUnavailable, UnknownIssue or StorageFailed; after
        any of them nothing of this append was committed.
        """

    @abstractmethod
    async def read_issue(self, issue_id: int) -> list[Event]:
        """Every committed event of one issue, oldest first (UnknownIssue, IssueUnavailable)."""

    @abstractmethod
    async def read_after(self, position: int, limit: int) -> list[Event]:
        """Up to ``limit`` committed events with positions above ``position``, in order."""

    @abstractmethod
    async def changed_after(self, position: int, up_to: int | None = None) -> set[int]:
        """Ids of the issues with an event above ``position`` (and at most ``up_to``):
        start-up catch-up, and the issues a time window touched."""

    @abstractmethod
    def issue_ids(self) -> list[int]:
        """Every issue with a log, deleted ones included, ascending."""

    @abstractmethod
    async def wait_for(self, position: int, timeout: float | None = None) -> bool:
        """Wait until ``head`` is above ``position``; False if the timeout passed first."""

    @abstractmethod
    def listen(self, listener: CommitListener) -> None:
        """Call ``listener`` with every committed batch before its appends return."""


async def follow(store: EventStore, after: int, batch: int = 256) -> AsyncIterator[list[Event]]:
    """Committed events above ``after`` in position order, batch by batch, for ever."""
    position = after
    while True:
        events = await store.read_after(position, batch)
        if events:
            position = events[-1].pos
            yield events
        else:
            await store.wait_for(position)
