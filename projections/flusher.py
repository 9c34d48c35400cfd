"""Writes dirty projection files in the background.

Projections are derived data, so they are written after the response: the event log
fsync is the commit point. Issue files follow within ``delay``; the index, which is
larger, at most once per ``index_interval`` while writes keep coming.
"""

from __future__ import annotations

import asyncio
import logging
import time

from projections.store import IssueProjection

log = logging.getLogger("hydraissue.flusher")


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
        projection.on_dirty = self._wake.set

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.delay)
            self._wake.clear()
            due = time.monotonic() - self._last_index >= self.index_interval
            await self.flush(index=due)
            if self.projection.index_dirty:
                wait = max(0.0, self.index_interval - (time.monotonic() - self._last_index))
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
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await write
                raise
            except OSError:
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
