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
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aiohttp import web

from hydraissue.errors import Invalid
from hydraissue.model import EVENT_TYPES, Event
from hydraissue.service import IssueService
from web.keys import FEED_KEEPALIVE, SERVICE
from web.responses import json_response

routes = web.RouteTableDef()

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_SCAN = 10_000  # events looked at per JSON page when filters skip most of them
WRITE_TIMEOUT = 10.0  # seconds a client may take to accept a chunk before it is dropped
PARAMS = ("after", "limit", "issue_id", "type", "project")
FRAMES = 8192  # SSE frames kept rendered: 50 clients cost one rendering per event


@dataclass(frozen=True, slots=True)
class FeedQuery:
    after: int | None
    limit: int
    issue_id: int | None
    types: frozenset[str] | None
    projects: frozenset[str] | None

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
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise Invalid(
            unknown[0],
            f"unknown query parameter; accepted: {', '.join(PARAMS)}",
            {"field": unknown[0], "allowed": list(PARAMS)},
        )
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


FRAME_CACHE = web.AppKey("feed_frames", Frames)


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
        }
    )
    await response.prepare(request)
    frames = request.app[FRAME_CACHE]
    keepalive = request.app[FEED_KEEPALIVE]
    client = service.feed.connect()  # first: everything committed from now on is buffered
    position = service.head if query.after is None else query.after
    try:
        await _write(response, b": connected\n\n")
        caught_up_to = service.head
        while position < caught_up_to:  # the history the client missed, from the store
            batch = await service.events_after(position, 500)
            if not batch:
                break
            position = await _send(response, service, frames, query, batch, position)
        while True:
            live = await client.next(keepalive)
            if live is None:
                break  # cut off (too slow) or shutting down: the client resumes
            if not live:
                await _write(response, b": keep-alive\n\n")
                continue
            position = await _send(response, service, frames, query, live, position)
    except (ConnectionError, TimeoutError, asyncio.CancelledError):
        pass
    finally:
        client.close()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


async def _send(
    response: web.StreamResponse,
    service: IssueService,
    frames: Frames,
    query: FeedQuery,
    batch: Sequence[Event],
    position: int,
) -> int:
    chunk: list[bytes] = []
    for event in batch:
        if event.pos <= position:
            continue  # already sent (the catch-up and the live buffer overlap)
        position = event.pos
        if query.matches(service, event.issue_id, event.type):
            chunk.append(frames.of(event))
    if chunk:
        await _write(response, b"".join(chunk))
    return position


async def _write(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):  # a client that stops reading is dropped
        await response.write(data)
