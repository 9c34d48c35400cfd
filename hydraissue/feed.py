"""The live events feed: one fan-out of committed events to every connected client.

The feed is a commit listener of the store, so it sees each batch once, in position
order, at the moment it commits; it hands the same batch to every client's bounded
buffer (no log read per client). A client whose buffer is full is cut off rather than
buffered without bound; it resumes from its last position (``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from events.model import Event

CLIENT_BUFFER = 10_000  # events a client may fall behind before it is cut off


class FeedClient:
    def __init__(self, feed: LiveFeed, limit: int) -> None:
        self._feed = feed
        self._limit = limit
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def push(self, events: Sequence[Event]) -> None:
        if self.overflowed:
            return
        if len(self._pending) + len(events) > self._limit:
            self.overflowed = True
            self._pending.clear()
        else:
            self._pending.extend(events)
        self._wake.set()

    async def next(self, timeout: float) -> list[Event] | None:
        """Everything pushed since the last call; [] on a timeout; None once cut off."""
        if not self._pending and not self.overflowed and not self.closed:
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):  # no extra task per wait
                    await self._wake.wait()
            except TimeoutError:
                return []
        if self.overflowed or self.closed:
            return None
        taken, self._pending = self._pending, []
        return taken

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        self._feed.disconnect(self)


class LiveFeed:
    def __init__(self, client_buffer: int = CLIENT_BUFFER) -> None:
        self.client_buffer = client_buffer
        self._clients: set[FeedClient] = set()

    def publish(self, events: Sequence[Event]) -> None:
        """The store's commit listener: one pass over the clients per committed batch."""
        for client in self._clients:
            client.push(events)

    def connect(self) -> FeedClient:
        client = FeedClient(self, self.client_buffer)
        self._clients.add(client)
        return client

    def disconnect(self, client: FeedClient) -> None:
        self._clients.discard(client)

    def close_all(self) -> None:
        for client in list(self._clients):
            client.close()

    @property
    def clients(self) -> int:
        return len(self._clients)
