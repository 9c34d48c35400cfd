"""The one write path: lock the issue, decide, append + fsync, project, respond.

``decide`` runs on the event loop (pure and fast); the append and its fsync run in
one worker-thread call, so the loop keeps serving reads while the disk syncs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from events.dispatcher import Dispatcher
from events.log import EventLog
from events.model import Actor, Event
from hydraissue.clock import utc_now
from hydraissue.commands import AddAttachment, Command, CreateIssue
from hydraissue.decide import decide
from hydraissue.errors import NotFound
from hydraissue.evolve import fold
from hydraissue.model import Issue, display_key
from hydraissue.uploads import Received, UploadStore
from projections.store import IssueProjection, StartupReport

log = logging.getLogger("hydraissue.service")


@dataclass(frozen=True, slots=True)
class Outcome:
    issue: Issue
    events: list[Event]


class IssueService:
    def __init__(self, data_dir: Path, *, clock: Callable[[], str] = utc_now) -> None:
        self.data_dir = data_dir
        self.log = EventLog(data_dir)
        self.projection = IssueProjection(data_dir, self.log)
        self.clock = clock
        self.uploads = UploadStore(data_dir)
        self.dispatcher = Dispatcher()
        self.dispatcher.subscribe("uploads-cleanup", self._remove_uploads_of_deleted)
        self._locks: dict[int, asyncio.Lock] = {}
        self._next_pos = 1

    def load(self) -> StartupReport:
        report = self.projection.load()
        self._next_pos = self.projection.checkpoint + 1
        return report

    async def handle(self, command: Command, actor: Actor) -> Outcome:
        if isinstance(command, CreateIssue):
            issue_id = self.projection.next_id
            self.projection.next_id += 1  # reserved now: ids are never reused
        else:
            issue_id = command.issue_id
        lock = self._locks.setdefault(issue_id, asyncio.Lock())
        async with lock:
            state = None if isinstance(command, CreateIssue) else self.projection.issue(issue_id)
            decided = decide(state, command)
            if not decided:
                assert state is not None  # only updates that change nothing decide nothing
                return Outcome(state, [])
            at = self.clock()
            seq = state.seq if state else 0
            events = []
            for offset, new in enumerate(decided, start=1):
                events.append(
                    Event(
                        issue_id=issue_id,
                        seq=seq + offset,
                        pos=self._next_pos,
                        type=new.type,
                        at=at,
                        actor=actor,
                        data=new.data,
                    )
                )
                self._next_pos += 1
            size = await asyncio.to_thread(self.log.append, events)  # the commit point
            issue = fold(events, state)
            assert issue is not None
            self.projection.apply(events, issue, size)
        await self.dispatcher.publish(events)
        return Outcome(issue, events)

    async def attach(self, issue_id: int, received: Received, actor: Actor) -> Outcome:
        """Move a received file into place, then record it with an event."""
        if self.projection.issue(issue_id) is None:
            self.uploads.discard([received])
            raise NotFound(f"{display_key(issue_id)} does not exist", {"id": issue_id})
        filename = await asyncio.to_thread(self.uploads.commit, issue_id, received)
        command = AddAttachment(
            issue_id=issue_id,
            name=received.name,
            filename=filename,
            size=received.size,
            content_type=received.content_type,
        )
        return await self.handle(command, actor)

    async def _remove_uploads_of_deleted(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.type == "issue.deleted":
                await asyncio.to_thread(self.uploads.remove_issue, event.issue_id)

    def history(self, issue_id: int) -> list[Event] | None:
        """The audit query: every event of a live issue, oldest first."""
        if self.projection.issue(issue_id) is None:
            return None
        return self.log.read(issue_id)
