"""Writes dirty projection files in the background.

Projections are derived data, so they are written after the response: the event log
fsync is the commit point. Issue files follow within ``delay``; the index, which is
larger, at most once per ``index_interval`` while writes keep coming, and never more
than ``INDEX_BUDGET`` of the time: a big index written too often would take the disk
from the appends that clients are waiting for. Start-up replays whatever the index
has not caught up with, so a late index costs start-up time, never data.
"""

from __future__ import annotations

import asyncio
import logging
import time

from projections.store import IssueProjection

log = logging.getLogger("hydraissue.flusher")
INDEX_BUDGET = 0.05  # at most this share of wall time spent rewriting the index


class Flusher:
    def __init__(
        self, projection: IssueProjection, *, delay: float = 0.05, index_interval: float = 2.0
    ) -> None:
        self.projection = projection
        self.delay = delay
        self.index_interval = index_interval
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._last_index = 0.0
        self._index_seconds = 0.0  # how long the last index write took
        projection.on_dirty = self._wake.set

    @property
    def _index_gap(self) -> float:
        return max(self.index_interval, self._index_seconds / INDEX_BUDGET)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.delay)
            self._wake.clear()
            due = time.monotonic() - self._last_index >= self._index_gap
            await self.flush(index=due)
            if self.projection.index_dirty:
                wait = max(0.0, self._index_gap - (time.monotonic() - self._last_index))
                loop.call_later(wait, self._wake.set)

    async def flush(self, *, index: bool = True) -> None:
        async with self._lock:
            issues, removed = self.projection.take_issue_files()
            snapshot = self.projection.take_index() if index else None
            if not issues and not removed and snapshot is None:
                return
            write = asyncio.ensure_future(
                asyncio.to_thread(self.projection.write_files, issues, removed, snapshot)
            )
            try:
                # Shielded: a cancel (shutdown) must not let a later flush race this write.
                index_seconds = await asyncio.shield(write)
            except asyncio.CancelledError:
                await write
                raise
            except Exception:  # keep flushing whatever went wrong; projections are rebuildable
                log.exception("writing projection files failed; will retry")
                self.projection.dirty_issues.update(i.id for i in issues)
                self.projection.removed_issues.update(removed)
                if snapshot is not None:
                    self.projection.index_dirty = True
                await asyncio.sleep(1.0)
                self._wake.set()
                return
            if snapshot is not None:
                self._last_index = time.monotonic()
                self._index_seconds = index_seconds
