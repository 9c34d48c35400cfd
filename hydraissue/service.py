"""The one write path: lock the issue, decide, append + fsync, project, respond.

``decide`` runs on the event loop (pure and fast); the append and its fsync run in
one worker-thread call, so the loop keeps serving reads while the disk syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from events.dispatcher import Dispatcher
from events.log import EventLog
from events.model import Actor, Event
from hydraissue.clock import utc_now
from hydraissue.commands import AddAttachment, Command, CreateIssue
from hydraissue.decide import decide, stamp
from hydraissue.errors import NotFound, StorageUnavailable
from hydraissue.evolve import fold
from hydraissue.model import Issue, display_key
from hydraissue.uploads import Received, UploadStore
from projections.flusher import Flusher
from projections.store import IssueProjection, StartupReport

log = logging.getLogger("hydraissue.service")
APPEND_THREADS = 16
PREALLOCATE = 256  # empty event logs kept ready ahead of the next id
WARM_CHUNK = 256  # issues loaded per slice of the background warm-up


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
        # Weak: a lock lives while some request holds or awaits it, not forever.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._next_pos = 1
        self._preallocating = False
        self._flusher: Flusher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Appends wait on fsync, not CPU: enough threads that concurrent writers each
        # have one, apart from the default pool the flusher and file reads use.
        self._appender = ThreadPoolExecutor(max_workers=APPEND_THREADS, thread_name_prefix="append")

    async def start(self) -> StartupReport:
        """Load the projections, then keep their files written and their issues warm."""
        self.uploads.clear_incoming()  # halves of uploads cut off by a crash
        started = time.monotonic()
        report = await asyncio.to_thread(self.load)
        log.info(
            "loaded %d issues from %s in %.2fs (%d replayed from their logs%s)",
            report.rows,
            self.data_dir,
            time.monotonic() - started,
            len(report.replayed),
            ", index was missing" if report.index_missing else "",
        )
        for repair in report.repairs:
            log.warning("repaired on start-up: %s", repair)
        if report.dropped:
            log.warning(
                "dropped index rows of issues without an event log (the log is the truth): %s",
                ", ".join(map(str, report.dropped)),
            )
        self._flusher = Flusher(self.projection)
        self._tasks = [asyncio.create_task(self._flusher.run()), asyncio.create_task(self._warm())]
        if self.projection.index_dirty or self.projection.dirty_issues:
            self.projection.on_dirty()
        return report

    async def stop(self) -> None:
        """Finish background work, write every dirty projection file, release threads."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._flusher is not None:
            await self._flusher.flush(index=True)
        self.close()

    def close(self) -> None:
        """Release the append threads (for callers that never started the service)."""
        self._appender.shutdown(wait=True)

    async def _warm(self) -> None:
        """Load every full issue in small slices, yielding to requests between them."""
        pending = self.projection.unloaded()
        started = time.monotonic()
        for start in range(0, len(pending), WARM_CHUNK):
            self.projection.warm(pending[start : start + WARM_CHUNK])
            await asyncio.sleep(0)
        if pending:
            log.info("warmed %d issues in %.2fs", len(pending), time.monotonic() - started)

    def load(self) -> StartupReport:
        report = self.projection.load()
        self._next_pos = self.projection.checkpoint + 1
        # Ids below next_id are issues already (durable logs) or were never acknowledged.
        self.log.ready_below = self.projection.next_id
        self.log.preallocate(self.projection.next_id, PREALLOCATE)
        return report

    def _keep_logs_ahead(self) -> None:
        """Preallocate the next batch of logs in the background before creates need them.

        Always from ``ready_below``, so the covered range has no holes even when creates
        outran the last batch: an id below ``ready_below`` must have a durable name.
        """
        target = self.projection.next_id + PREALLOCATE
        if self._preallocating or target - PREALLOCATE // 2 < self.log.ready_below:
            return
        self._preallocating = True
        start = self.log.ready_below
        future = asyncio.get_running_loop().run_in_executor(
            None, self.log.preallocate, start, target - start
        )

        def done(finished: asyncio.Future[None]) -> None:
            self._preallocating = False
            if finished.cancelled():
                return
            if finished.exception() is not None:
                log.error("preallocating event logs failed: %s", finished.exception())
                return
            with contextlib.suppress(RuntimeError):  # the loop may be shutting down
                self._keep_logs_ahead()  # creates may have outrun this batch: catch up now

        future.add_done_callback(done)

    async def handle(self, command: Command, actor: Actor) -> Outcome:
        if isinstance(command, CreateIssue):
            issue_id = self.projection.next_id
            self.projection.next_id += 1  # reserved now: ids are never reused
            self._keep_logs_ahead()
        else:
            issue_id = command.issue_id
        lock = self._locks.get(issue_id)
        if lock is None:
            lock = self._locks[issue_id] = asyncio.Lock()
        async with lock:
            state = None if isinstance(command, CreateIssue) else self.projection.issue(issue_id)
            decided = decide(state, command)
            if not decided:
                assert state is not None  # only updates that change nothing decide nothing
                return Outcome(state, [])
            events = stamp(state, issue_id, decided, self._next_pos, self.clock(), actor)
            self._next_pos += len(events)
            loop = asyncio.get_running_loop()
            try:
                size = await loop.run_in_executor(self._appender, self.log.append, events)
            except OSError as exc:  # nothing was committed; the log is as it was
                log.error("appending to events/%s.yaml failed: %s", issue_id, exc)
                raise StorageUnavailable(
                    "the event log could not be written; nothing was saved, retry later",
                    {"reason": exc.strerror},
                ) from exc
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
        try:
            return await self.handle(command, actor)
        except BaseException:
            # Not recorded, so not the issue's: a file no event names must not linger.
            await asyncio.to_thread(self.uploads.remove_file, issue_id, filename)
            raise

    async def create_with_attachments(
        self, command: CreateIssue, files: Sequence[Received], actor: Actor
    ) -> Issue:
        """A report: the issue, then each file; whatever fails, no temp file is left."""
        try:
            issue = (await self.handle(command, actor)).issue
            for received in files:
                issue = (await self.attach(issue.id, received, actor)).issue
            return issue
        finally:
            self.uploads.discard(files)  # only those not moved into place still exist

    async def _remove_uploads_of_deleted(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.type == "issue.deleted":
                await asyncio.to_thread(self.uploads.remove_issue, event.issue_id)

    async def history(self, issue_id: int) -> list[Event] | None:
        """The audit query: every committed event of a live issue, oldest first."""
        if self.projection.issue(issue_id) is None:
            return None
        committed = self.projection.rows[issue_id].log_size
        return await asyncio.to_thread(self.log.read, issue_id, committed)
