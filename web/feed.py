"""``GET /api/v1/events``: the committed-event stream for agents, as JSON pages or as
Server-Sent Events.

JSON: ``?after=<position>&limit=N`` returns ``{"events": [...], "next": <position>}``;
pass ``next`` as ``after`` to continue (it moves past filtered-out events too).
SSE (``Accept: text/event-stream``): ``id:`` is the position, ``event:`` the type,
``data:`` the event; ``Last-Event-ID`` (or ``after``) resumes with no gap and no
duplicate. Live events come from the service's one fan-out (``hydraissue.feed``); a
client too slow to keep up is disconnected and resumes with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aiohttp import web

from hydraissue.errors import Invalid
from hydraissue.model import EVENT_TYPES, Event
from hydraissue.service import IssueService
from web.keys import FEED_KEEPALIVE, SERVICE
from web.params import known_params
from web.responses import json_response

routes = web.RouteTableDef()

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_SCAN = 10_000  # events looked at per JSON page when filters skip most of them
WRITE_TIMEOUT = 10.0  # seconds a client may take to accept a chunk before it is dropped
PARAMS = ("after", "limit", "issue_id", "type", "project")
FRAMES = 8192  # SSE frames kept rendered: 50 clients cost one rendering per event
ROUND = 0.01  # seconds: the shortest gap between two delivery rounds of the SSE hub


@dataclass(frozen=True, slots=True)
class FeedQuery:
    after: int | None
    limit: int
    issue_id: int | None
    types: frozenset[str] | None
    projects: frozenset[str] | None

    @property
    def unfiltered(self) -> bool:
        return self.issue_id is None and self.types is None and self.projects is None

    def matches(self, service: IssueService, issue_id: int, kind: str) -> bool:
        if self.issue_id is not None and issue_id != self.issue_id:
            return False
        if self.types is not None and kind not in self.types:
            return False
        if self.projects is not None:
            row = service.read_model.rows.get(issue_id)
            return row is not None and row.project in self.projects
        return True


def _number(raw: str, name: str, low: int, high: int) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise Invalid(name, f"must be a whole number, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise Invalid(name, f"must be between {low} and {high}, got {value}")
    return value


def _list(raw: str) -> frozenset[str]:
    return frozenset(v.strip() for v in raw.split(",") if v.strip())


def parse_feed_query(request: web.Request) -> FeedQuery:
    params = request.query
    known_params(params, PARAMS)
    types = _list(params["type"]) if "type" in params else None
    if types is not None:
        bad = sorted(types - set(EVENT_TYPES)) or ([] if types else [params["type"]])
        if bad:
            raise Invalid(
                "type",
                f"unknown event type {bad[0]!r}; allowed: {', '.join(EVENT_TYPES)}",
                {"field": "type", "allowed": list(EVENT_TYPES), "got": bad},
            )
    after = params.get("after")
    last_id = request.headers.get("Last-Event-ID")
    if after is None and last_id is not None and last_id.strip():
        after = last_id.strip()
        name = "Last-Event-ID"
    else:
        name = "after"
    return FeedQuery(
        after=_number(after, name, 0, 10**18) if after is not None else None,
        limit=_number(params.get("limit", str(DEFAULT_LIMIT)), "limit", 1, MAX_LIMIT),
        issue_id=_number(params["issue_id"], "issue_id", 1, 10**18)
        if "issue_id" in params
        else None,
        types=types,
        projects=_list(params["project"]) if "project" in params else None,
    )


class Frames:
    """Rendered SSE frames by position, shared by every client: one rendering per event."""

    def __init__(self) -> None:
        self._frames: OrderedDict[int, bytes] = OrderedDict()

    def of(self, event: Event) -> bytes:
        frame = self._frames.get(event.pos)
        if frame is None:
            data = orjson.dumps(event.public_dict())
            frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (event.pos, event.type.encode(), data)
            self._frames[event.pos] = frame
            if len(self._frames) > FRAMES:
                self._frames.popitem(last=False)
        return frame


class SseClient:
    """One connected stream: what it asked for, how far it got, what waits for it."""

    def __init__(
        self, hub: SseHub, request: web.Request, response: web.StreamResponse, query: FeedQuery
    ) -> None:
        self.hub = hub
        self.transport = request.transport
        self.response = response
        self.query = query
        self.position = 0
        self.pending: list[Event] = []
        self.live = False  # False while its history is sent; then the hub's writer sends
        self.done = asyncio.Event()  # set when it is cut off or the server stops

    def push(self, events: Sequence[Event]) -> None:
        if self.done.is_set():
            return
        if len(self.pending) + len(events) > self.hub.client_buffer:
            self.cut_off()  # too far behind: it resumes with Last-Event-ID
            return
        self.pending.extend(events)

    def frames(self, service: IssueService, events: Sequence[Event]) -> bytes:
        """The frames of ``events`` it has not had and asked for (catch-up and live
        overlap: positions it already passed are skipped)."""
        chunk: list[bytes] = []
        for event in events:
            if event.pos <= self.position:
                continue
            self.position = event.pos
            if self.query.matches(service, event.issue_id, event.type):
                chunk.append(self.hub.render.of(event))
        return b"".join(chunk)

    def cut_off(self) -> None:
        self.pending.clear()
        self.done.set()
        self.hub.clients.discard(self)


class SseHub:
    """The one fan-out of committed events to every SSE client of an app.

    A sink of the service's live feed: each commit appends the batch to every client's
    bounded buffer; one writer task then writes each client's pending events as one
    chunk. No task per client wakes per event, and a frame is rendered once. A client
    whose unsent bytes pile up (it stopped reading) is cut off, never buffered without
    bound.
    """

    def __init__(
        self, service: IssueService, *, client_buffer: int = 10_000, max_backlog: int = 1 << 20
    ) -> None:
        self.service = service
        self.client_buffer = client_buffer  # events a client may fall behind
        self.max_backlog = max_backlog  # unsent bytes a client may leave in its socket
        self.render = Frames()
        self.clients: set[SseClient] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def publish(self, events: Sequence[Event]) -> None:
        if self.clients:
            for client in list(self.clients):
                client.push(events)
            self._wake.set()

    def connect(
        self, request: web.Request, response: web.StreamResponse, query: FeedQuery
    ) -> SseClient:
        client = SseClient(self, request, response, query)
        self.clients.add(client)
        return client

    def go_live(self, client: SseClient) -> None:
        client.live = True
        self._wake.set()  # what arrived during its catch-up goes out now

    def start(self) -> None:
        self.service.feed.add_sink(self.publish)
        self._task = asyncio.create_task(self._run(), name="sse-writer")

    async def stop(self) -> None:
        self.service.feed.remove_sink(self.publish)
        for client in list(self.clients):
            client.cut_off()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        last = 0.0
        while True:
            await self._wake.wait()
            # At most one round per ROUND seconds: under a stream of commits each client
            # gets fewer, larger writes (latency stays far below the 50 ms target).
            wait = last + ROUND - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wake.clear()
            last = time.monotonic()
            shared: dict[tuple[int, int], bytes] = {}  # one rendering for alike clients
            for client in list(self.clients):
                if client.live and client.pending and not client.done.is_set():
                    await self._deliver(client, shared)

    async def _deliver(self, client: SseClient, shared: dict[tuple[int, int], bytes]) -> None:
        events, client.pending = client.pending, []
        if client.query.unfiltered and events[0].pos > client.position:
            key = (events[0].pos, events[-1].pos)
            data = shared.get(key)
            if data is None:
                data = shared[key] = b"".join(self.render.of(e) for e in events)
            client.position = events[-1].pos
        else:
            data = client.frames(self.service, events)
        if not data:
            return
        transport = client.transport
        if transport is None or transport.is_closing():
            client.cut_off()
            return
        if transport.get_write_buffer_size() > self.max_backlog:
            client.cut_off()
            return
        try:
            # Below the backlog the write does not wait, so one slow client cannot
            # hold up the others (and needs no timer of its own).
            await client.response.write(data)
        except (ConnectionError, RuntimeError):
            client.cut_off()


HUB = web.AppKey("sse_hub", SseHub)


@routes.get("/api/v1/events")
async def events_feed(request: web.Request) -> web.StreamResponse:
    query = parse_feed_query(request)
    service = request.app[SERVICE]
    if "text/event-stream" in request.headers.get("Accept", ""):
        return await _stream(request, service, query)
    position = query.after or 0
    found: list[dict[str, object]] = []
    scanned = 0
    while len(found) < query.limit and position < service.head and scanned < MAX_SCAN:
        batch = await service.events_after(position, max(query.limit, 256))
        if not batch:
            break
        for event in batch:
            scanned += 1
            position = event.pos
            if query.matches(service, event.issue_id, event.type):
                found.append(event.public_dict())
                if len(found) == query.limit:
                    break
    return json_response({"events": found, "next": position})


async def _stream(
    request: web.Request, service: IssueService, query: FeedQuery
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    hub = request.app[HUB]
    keepalive = request.app[FEED_KEEPALIVE]
    client = hub.connect(request, response, query)  # first: all committed from now is kept
    client.position = service.head if query.after is None else query.after
    try:
        await _write(response, b": connected\n\n")
        caught_up_to = service.head
        while client.position < caught_up_to:  # the history it missed, from the store
            batch = await service.events_after(client.position, 500)
            if not batch:
                break
            data = client.frames(service, batch)
            if data:
                await _write(response, data)
        hub.go_live(client)
        while not client.done.is_set():
            try:
                await asyncio.wait_for(client.done.wait(), keepalive)
            except TimeoutError:
                await _write(response, b": keep-alive\n\n")
    except (ConnectionError, TimeoutError, asyncio.CancelledError):
        pass
    finally:
        client.cut_off()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


async def _write(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):  # a client that stops reading is dropped
        await response.write(data)
