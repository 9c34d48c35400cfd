"""Fans committed events out to in-process subscribers.

Subscribers run after the commit point, so a failing subscriber never undoes a write;
it is logged, and each subscriber must tolerate seeing an event again (replays).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from events.model import Event

log = logging.getLogger("hydraissue.dispatcher")

Subscriber = Callable[[Sequence[Event]], Awaitable[None]]


class Dispatcher:
    def __init__(self) -> None:
        self._subscribers: list[tuple[str, Subscriber]] = []

    def subscribe(self, name: str, subscriber: Subscriber) -> None:
        self._subscribers.append((name, subscriber))

    async def publish(self, events: Sequence[Event]) -> None:
        for name, subscriber in self._subscribers:
            try:
                await subscriber(events)
            except Exception:
                log.exception("subscriber %s failed on events %s", name, [e.pos for e in events])
