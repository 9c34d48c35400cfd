"""The live events feed's hub: every committed batch, once, to every sink.

The feed is a commit listener of the store, so it sees each batch once, in position
order, at the moment it commits. Its sinks must be cheap and never wait (the web
layer's Server-Sent Events hub only queues the batch for its one writer task).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from events.model import Event

log = logging.getLogger("hydraissue.feed")

Sink = Callable[[Sequence[Event]], None]


class LiveFeed:
    def __init__(self) -> None:
        self._sinks: list[Sink] = []

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def publish(self, events: Sequence[Event]) -> None:
        """The store's commit listener."""
        for sink in self._sinks:
            try:
                sink(events)
            except Exception:
                log.exception("live feed sink %r failed", sink)
