"""Writes the projection files: a background subscriber of the committed-event stream.

For each batch of events it rewrites the files of the issues they touched (their state
taken from the read model, which is at or past the batch) and removes the files of
deleted issues; its checkpoint (``subscribers/issue-files.yaml``) then moves past the
batch. Now and then it also writes the snapshots (``issues.yaml`` and
``idempotency.yaml``) with *its* position as their checkpoint: every issue file is
durable up to there, so start-up can trust the snapshot for every issue not changed
after it, and folds the logs of the few that were.

The snapshots cost O(issues) to write, so they are spaced by time (``interval``) and
by cost (at most ``budget`` of the time), never per write: the cost per write does not
grow with the number of issues, and start-up after a crash redoes at most an
interval's worth of issues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from events.model import Event
from hydraissue.model import Issue
from projections.files import ProjectionFiles
from projections.readmodel import IssueReadModel

log = logging.getLogger("hydraissue.projections")
NAME = "issue-files"
FSYNC_THREADS = 16


class ProjectionWriter:
    def __init__(
        self,
        files: ProjectionFiles,
        read_model: IssueReadModel,
        *,
        position: int,
        interval: float = 5.0,
        budget: float = 0.03,
    ) -> None:
        self.files = files
        self.read_model = read_model
        self.position = position  # every issue file is durable up to here
        self.snapshot_position = position  # the checkpoint of the snapshots on disk
        self.interval = interval
        self.budget = budget
        self._snapshot_seconds = 0.0
        self._snapshot_at = time.monotonic()
        self._lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="files-fsync")
        # Files are rendered and written in one thread of their own (the lock lets one
        # write run at a time anyway): the C allocator gives each thread that allocates
        # an arena of its own, and rendering in whichever of asyncio's default threads
        # was free left memory behind in each of them (about 300 bytes per issue of the
        # server's RSS in tools/bench.py's memory phase).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="files")
        self._timer: asyncio.Task[None] | None = None

    async def handle(self, events: Sequence[Event]) -> None:
        """Dispatcher handler: files of the touched issues, then maybe the snapshots."""
        touched = sorted({e.issue_id for e in events})
        issues: list[Issue] = []
        removed: list[int] = []
        for issue_id in touched:
            row = self.read_model.rows.get(issue_id)
            if row is None:
                continue  # not known (yet): a damaged log, or an issue never created
            if row.deleted:
                removed.append(issue_id)
                continue
            issue = self.read_model.issue(issue_id)
            if issue is not None:
                issues.append(issue)
        async with self._lock:
            await self._in_thread(self.files.write_issues, issues, removed, self._pool.map)
            self.position = events[-1].pos
        if self._due():
            await self.write_snapshot()

    async def rewrite(self, issue_ids: Sequence[int]) -> None:
        """Write these issues' files again (found not to match their logs)."""
        issues = [i for i in map(self.read_model.issue, issue_ids) if i is not None]
        async with self._lock:
            await self._in_thread(self.files.write_issues, issues, (), self._pool.map)

    def _due(self) -> bool:
        if self.snapshot_position < 0:
            return True  # there is no snapshot on disk at all: write one now
        gap = max(self.interval, self._snapshot_seconds / self.budget)
        return (
            self.position > self.snapshot_position and time.monotonic() - self._snapshot_at >= gap
        )

    async def write_snapshot(self) -> None:
        """The index and the keys, with the position every issue file is durable to."""
        async with self._lock:
            position = self.position
            snapshot = self.read_model.snapshot()
            started = time.monotonic()
            await self._in_thread(self.files.write_snapshot, snapshot.rows, snapshot.keys, position)
            self._snapshot_seconds = time.monotonic() - started
            self._snapshot_at = time.monotonic()
            self.snapshot_position = position

    async def _in_thread(self, func: Callable[..., object], *args: object) -> None:
        """Run a file write in a thread; a cancel (shutdown) waits for it to finish."""
        loop = asyncio.get_running_loop()
        write = asyncio.ensure_future(loop.run_in_executor(self._thread, func, *args))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await write
            raise

    def start_timer(self) -> None:
        """Write a due snapshot when writes stop, not only when the next one comes."""
        self._timer = asyncio.create_task(self._tick(), name="snapshot-timer")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._due():
                try:
                    await self.write_snapshot()
                except OSError as exc:
                    log.warning("writing the index snapshot failed (%s); will retry", exc)

    async def close(self) -> None:
        """Stop the timer and write a final snapshot (after the dispatcher stopped)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self.position > self.snapshot_position:
            try:
                await self.write_snapshot()
            except OSError as exc:
                log.warning("writing the index snapshot at shutdown failed: %s", exc)
        self._thread.shutdown(wait=True)
        self._pool.shutdown(wait=True)
