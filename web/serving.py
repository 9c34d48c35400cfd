"""Serving the app: limits on connections, one log line per flood, a bounded shutdown.

``run`` replaces ``web.run_app`` for ``hydraissue serve``. What it adds:

- a cap on open connections (``max_connections``): one more gets a 503 and is closed;
- a request's headers must arrive within ``header_timeout_seconds`` of the connection
  (or of the previous response): else a 408 and the connection is closed; a body must
  arrive within ``body_timeout_seconds`` plus a second per KB received: else a 408;
  an idle keep-alive connection is closed after ``keepalive_timeout_seconds``;
- floods (refused connections, timeouts, ``accept()`` out of file descriptors, requests
  the parser refused) are counted and logged once a minute with the count;
- SIGTERM/SIGINT: stop accepting (connections already in the listen backlog are still
  accepted and answered), answer new requests on open connections 503 with
  Retry-After, let requests in flight finish; a body still arriving at 75% of
  ``shutdown_timeout_seconds`` is answered 503; at 90% what still runs is cancelled;
  then the app's cleanup (the service flushes projections and checkpoints, the lock is
  released) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import time
from asyncio import current_task
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from hydraissue.config import Config
from web import lane
from web.keys import IDEMPOTENCY_HEADER, SAFE_METHODS
from web.middleware import secure

log = logging.getLogger("hydraissue.serve")
FLOOD_INTERVAL = 60.0
BODY_MIN_RATE = 1024  # bytes a second a body must keep up once body_timeout is spent
BAD_REQUESTS_LOGGED = 20  # per interval, one line each; the rest are counted
SWEEP = 0.25  # seconds between checks of connections waiting for headers
LINGER = 0.5  # seconds a connection given a fixed 503/408 stays open, reading, before closing
MAX_LINGERING = 64  # at most so many at once (a flood): beyond, they are closed at once
Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]

# a refusal page loads nothing at all; web/middleware.py ``secure`` adds the rest
REFUSAL_CSP = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    shutdown_timeout: float = 10.0

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(
            max_connections=config.max_connections,
            header_timeout=float(config.header_timeout_seconds),
            body_timeout=float(config.body_timeout_seconds),
            keepalive_timeout=float(config.keepalive_timeout_seconds),
            shutdown_timeout=float(config.shutdown_timeout_seconds),
        )


class FloodLog:
    """Events that can come by the thousand, logged as one line per kind per interval:
    ``refused 123 connections in the last 60 s: over max_connections (1000)``."""

    def __init__(self, interval: float = FLOOD_INTERVAL) -> None:
        self.interval = interval
        self.counts: dict[tuple[str, str, str], int] = {}
        self.since = time.monotonic()
        self.bad_requests = 0

    def count(self, verb: str, noun: str, reason: str) -> None:
        key = (verb, noun, reason)
        self.counts[key] = self.counts.get(key, 0) + 1

    def bad_request(self, peer: str, reason: str) -> None:
        """A request the parser refused: one INFO line, up to 20 an interval."""
        self.bad_requests += 1
        if self.bad_requests <= BAD_REQUESTS_LOGGED:
            log.info("bad request from %s: %s (answered 400)", peer, reason)
        else:
            self.count("answered", "bad requests with 400", "the parser refused them")

    def flush(self) -> None:
        seconds = round(time.monotonic() - self.since)
        for (verb, noun, reason), n in sorted(self.counts.items()):
            log.warning("%s %d %s in the last %d s: %s", verb, n, noun, seconds, reason)
        self.counts.clear()
        self.bad_requests = 0
        self.since = time.monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.flush()


def _raw_response(status: int, reason: str, error: str, retry_after: int | None = None) -> bytes:
    body = orjson.dumps({"error": error, "code": status, "detail": None})
    retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{retry}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


OVER_CAPACITY = _raw_response(
    503, "Service Unavailable", "too many connections; retry shortly", retry_after=1
)
HEADER_TIMEOUT = _raw_response(
    408, "Request Timeout", "the request's headers did not arrive in time"
)


class BodyCut(RequestPayloadError):
    """Set on a request's body stream: the handler stops reading; the answer is ours."""


def refusal(request: BaseRequest, status: int, text: str, retry_after: int | None) -> web.Response:
    """A 503/408 in the service's error shape (JSON for the API, a short page otherwise)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    wants_json = request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )
    if wants_json:
        response = web.Response(
            body=orjson.dumps({"error": text, "code": status, "detail": None}),
            status=status,
            content_type="application/json",
            headers=headers,
        )
    else:
        page = (
            '<!doctype html><html lang="en"><meta charset="utf-8"><title>HydraIssue</title>'
            f"<h1>Please try again</h1><p>{text}</p></html>"
        )
        response = web.Response(
            text=page, status=status, content_type="text/html", headers={**headers, **REFUSAL_CSP}
        )
    secure(response)  # answered outside the middlewares: the same headers as every answer
    response.force_close()
    return response


def stopped_answer(request: BaseRequest, retry_after: int) -> web.Response:
    """The 503 of a request stopped at 0.9 T. A write may have been saved already (a
    commit is seen through once it has begun), so only a request that is safe to send
    again, a read or one with an ``Idempotency-Key``, is told to retry."""
    if request.method in SAFE_METHODS or IDEMPOTENCY_HEADER in request.headers:
        text = "the server is restarting; send the request again shortly"
        return refusal(request, 503, text, retry_after)
    text = (
        "the server stopped before this request finished; it may have been saved: check "
        "before sending it again (with an Idempotency-Key a retry is always safe)"
    )
    return refusal(request, 503, text, None)


class Flight:
    """One request in flight: the task running it (cancelled if it outlives the
    shutdown's 0.9 T) and the status the wrapper answers when it was cut short."""

    __slots__ = ("cut", "request", "stopped", "task")

    def __init__(self, request: BaseRequest, task: asyncio.Task[Any] | None) -> None:
        self.request = request
        self.cut: int | None = None
        self.stopped = False  # cancelled at 0.9 T of a shutdown
        self.task = task


class GuardedServer(Server):
    """aiohttp's server with the limits: its connections are ``GuardedHandler``s and
    every request passes ``handle`` (in flight, draining, bodies cut)."""

    def __init__(
        self,
        app_handler: Handler,
        limits: Limits,
        flood: FloodLog,
        app: web.Application,
        **kwargs: Any,
    ):
        super().__init__(self.handle, **kwargs)
        self.app_handler = app_handler
        self.app = app  # the app served: its lane (web/lane.py)
        self.lane_answers = 0  # answers the lane gave (read by tests)
        self.limits = limits
        self.flood = flood
        self.draining = False
        self.inflight: dict[int, Flight] = {}  # by id(request): a Request is not hashable
        self.idle = asyncio.Event()  # nothing in flight (cleared when a drain begins)
        self.idle.set()
        self.deadline = 0.0
        # Connections waiting for a request's headers, and when they time out: one
        # sweep every SWEEP seconds instead of a timer per request (a timer set and
        # cancelled per request, 10 s ahead, filled the loop's heap with cancelled
        # handles: get-by-id ran ~15% slower with them).
        self.awaiting: dict[GuardedHandler, float] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self.lingering = 0  # connections given a fixed answer, closing in LINGER s

    def sweep_soon(self) -> None:
        if self._sweep is None:
            self._sweep = self._loop.call_later(SWEEP, self._sweep_now)

    def _sweep_now(self) -> None:
        self._sweep = None
        now = self._loop.time()
        for handler, deadline in list(self.awaiting.items()):
            if deadline <= now:
                del self.awaiting[handler]
                handler.header_timed_out()
        if self.awaiting:
            self.sweep_soon()

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    @property
    def retry_after(self) -> int:
        return max(1, round(self.limits.shutdown_timeout))

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        """Every request: the lane first, then counted in flight (for the
        shutdown) with its body on a clock, and handed to the app."""
        if self.draining:
            return refusal(
                request, 503, "the server is restarting; retry shortly", self.retry_after
            )
        quick = lane.answer(self.app, request)  # before routing: web/lane.py
        if quick is not None:
            self.lane_answers += 1
            return quick
        key = id(request)
        flight = Flight(request, current_task())
        inflight = self.inflight
        inflight[key] = flight
        protocol = request.protocol
        watched = False
        if not request.content.is_eof() and isinstance(protocol, GuardedHandler):
            watched = protocol.watch_body(request)
        try:
            response = await self.app_handler(request)
        except asyncio.CancelledError:
            if not flight.stopped or request.writer.output_size:
                raise  # the client left, aiohttp's own cancel, or an answer under way
            # cancelled at 0.9 T of a shutdown (``drain``): this request gets its answer
            task = current_task()
            if task is not None:
                task.uncancel()
            return stopped_answer(request, self.retry_after)
        finally:
            del inflight[key]
            if not inflight:
                self.idle.set()
            if watched:
                assert isinstance(protocol, GuardedHandler)
                protocol.unwatch_body()
        if flight.cut is not None and not response.prepared:
            if flight.cut == 503:
                text = "the server is restarting; send the request again shortly"
                return refusal(request, 503, text, self.retry_after)
            return refusal(request, 408, "the request body arrived too slowly", None)
        if self.draining:
            response.force_close()
        return response

    def cut(self, request: BaseRequest, status: int) -> None:
        """Stop a body that is still arriving: its handler gives up, the answer is ours."""
        flight = self.inflight.get(id(request))
        if flight is None or flight.cut is not None:
            return
        flight.cut = status
        protocol = request.protocol
        if isinstance(protocol, GuardedHandler):
            protocol.cut_lingering()
        request.content.set_exception(BodyCut("request body cut off"))

    def pre_shutdown(self) -> None:
        """Idle connections stay open while requests drain: a request sent on one is
        answered 503 instead of meeting a closed socket; ``shutdown`` closes them."""

    async def drain(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        total = self.limits.shutdown_timeout
        cut_at, self.deadline = started + 0.75 * total, started + 0.9 * total
        if self.inflight:  # new requests are refused now: it only empties from here
            self.idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), max(0.0, cut_at - loop.time()))
        arriving = [f.request for f in self.inflight.values() if not f.request.content.is_eof()]
        if arriving:
            log.warning(
                "shutdown: %d request(s) still sending their body: answered 503", len(arriving)
            )
            for request in arriving:
                self.cut(request, 503)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), max(0.0, self.deadline - loop.time()))
        if self.inflight:
            log.warning(
                "shutdown: %d request(s) did not finish in time: cancelled, answered 503",
                len(self.inflight),
            )
            for flight in list(self.inflight.values()):
                flight.stopped = True
                if flight.task is not None:
                    flight.task.cancel()
            with contextlib.suppress(TimeoutError):  # their 503s are written
                await asyncio.wait_for(self.idle.wait(), 0.05 * total)

    async def shutdown(self, timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        await super().shutdown(max(0.05, min(timeout or 1.0, self.deadline - loop.time(), 1.0)))


class GuardedHandler(RequestHandler):
    """One connection: refused over the cap, headers and bodies on a clock, parse
    errors logged as one quiet line."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = manager
        self.refused = False
        self.answered_early = False  # a fixed 503/408 was written: what comes is dropped
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_request: BaseRequest | None = None
        self.body_bytes = 0
        self.body_started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        if len(guard.connections) >= guard.limits.max_connections:
            self.refused = True
            guard.flood.count(
                "refused", "connections", f"over max_connections ({guard.limits.max_connections})"
            )
            assert isinstance(transport, asyncio.Transport)
            self.answer_and_close(transport, OVER_CAPACITY)
            return
        super().connection_made(transport)
        self.start_header_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.refused:
            return
        self.stop_header_clock()
        if self.body_timer is not None:
            self.body_timer.cancel()
        super().connection_lost(exc)

    # -- headers -------------------------------------------------------------------

    def start_header_clock(self) -> None:
        timeout = self.guard.limits.header_timeout
        awaiting = self.guard.awaiting
        if timeout > 0 and self not in awaiting:
            awaiting[self] = self._loop.time() + timeout
            self.guard.sweep_soon()

    def stop_header_clock(self) -> None:
        self.guard.awaiting.pop(self, None)

    def answer_and_close(self, transport: asyncio.Transport, answer: bytes) -> None:
        """Write a fixed answer, half-close, and close a moment later. Closing at once,
        with bytes the client sent still unread, resets the connection, and the reset
        can destroy the answer before the client reads it."""
        self.answered_early = True
        guard = self.guard
        with contextlib.suppress(OSError, RuntimeError):
            transport.write(answer)
            if guard.lingering >= MAX_LINGERING:
                transport.close()  # a flood: no file descriptors held for the courtesy
                return
            if transport.can_write_eof():
                transport.write_eof()
        guard.lingering += 1

        def close() -> None:
            guard.lingering -= 1
            transport.close()

        self._loop.call_later(LINGER, close)

    def data_received(self, data: bytes) -> None:
        if self.answered_early:
            return  # after a fixed answer: read and dropped until the close
        if self.body_request is not None:
            self.body_bytes += len(data)
        elif not self._request_in_progress and not self._messages:
            self.start_header_clock()  # the first bytes of the next request
        super().data_received(data)
        if self._messages or self._request_in_progress:
            self.stop_header_clock()

    def header_timed_out(self) -> None:
        waiting = self._waiter is not None and not self._waiter.done()
        if not waiting or self._messages or self.transport is None:
            return
        self.guard.flood.count(
            "closed",
            "connections",
            f"request headers not complete within header_timeout_seconds "
            f"({self.guard.limits.header_timeout:g}); answered 408",
        )
        transport = self.transport
        assert isinstance(transport, asyncio.Transport)
        self.answer_and_close(transport, HEADER_TIMEOUT)
        self._loop.call_later(LINGER, self.force_close)  # ends the wait for a request

    # -- bodies --------------------------------------------------------------------

    def watch_body(self, request: BaseRequest) -> bool:
        timeout = self.guard.limits.body_timeout
        if timeout <= 0 or request.content.is_eof():
            return False
        self.body_request, self.body_bytes = request, 0
        self.body_started = self._loop.time()
        self.body_timer = self._loop.call_later(timeout, self.check_body)
        return True

    def unwatch_body(self) -> None:
        self.body_request = None
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def check_body(self) -> None:
        self.body_timer = None
        request = self.body_request
        if request is None or request.content.is_eof():
            return
        limits = self.guard.limits
        deadline = self.body_started + limits.body_timeout + self.body_bytes / BODY_MIN_RATE
        now = self._loop.time()
        if now < deadline:
            self.body_timer = self._loop.call_later(deadline - now, self.check_body)
            return
        self.guard.flood.count(
            "cut off",
            "request bodies",
            f"slower than body_timeout_seconds ({limits.body_timeout:g}) and 1 KB/s allow; "
            "answered 408",
        )
        self.guard.cut(request, 408)

    def cut_lingering(self) -> None:
        """After a cut body's answer, close at once instead of reading the rest."""
        self._lingering_time = 0.0

    # -- parse errors --------------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        # The reason only, never the bytes the client sent (they may hold a token).
        reason = (exc.message or type(exc).__name__).strip().splitlines()[0].split(":")[0]
        self.guard.flood.bad_request(_peer(self.peername), reason[:120])
        response = web.Response(
            body=orjson.dumps(
                {"error": f"bad request: {reason[:120]}", "code": status, "detail": None}
            ),
            status=status,
            content_type="application/json",
        )
        response.force_close()
        return response


def _peer(peername: Any) -> str:
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return "unknown"


class Runner(web.AppRunner):
    def __init__(self, app: web.Application, limits: Limits, flood: FloodLog, **kwargs: Any):
        super().__init__(app, **kwargs)
        self.limits = limits
        self.flood = flood
        self.stopping_since = 0.0

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            self.limits,
            self.flood,
            self.app,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )

    async def shutdown(self) -> None:
        """Between closing the listener and closing connections: the app's on_shutdown
        (live feeds end), then requests in flight drain."""
        await super().shutdown()
        server = self.server
        if isinstance(server, GuardedServer):
            await server.drain(self.stopping_since)


async def stop_listening(site: web.TCPSite, server: Server) -> int:
    """Close the listening sockets; connections already waiting in their backlog are
    accepted and served (they get a 503 while draining) instead of being reset."""
    loop = asyncio.get_running_loop()
    listening = getattr(site, "_server", None)
    sockets = list(getattr(listening, "sockets", None) or ())
    copies = [socket.socket(fileno=os.dup(s.fileno())) for s in sockets]
    await site.stop()
    taken = 0
    for copy in copies:
        copy.setblocking(False)
        with contextlib.suppress(OSError):
            while True:
                conn, _ = copy.accept()
                conn.setblocking(False)
                await loop.connect_accepted_socket(server, conn)
                taken += 1
        copy.close()
    return taken


def quiet_loop_errors(
    flood: FloodLog,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """asyncio reports ``accept()`` out of file descriptors once per attempt, with a
    traceback; count it instead (it pauses accepting for a second by itself)."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "out of system resource" in message:
            exc = context.get("exception")
            what = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "?"
            flood.count(
                "paused accepting",
                "times",
                f"socket.accept() out of system resource ({what}); raise the open-file "
                "limit (LimitNOFILE=) or lower max_connections",
            )
            return
        loop.default_exception_handler(context)

    return handle


def raise_file_limit(limits: Limits) -> None:
    """Use the hard open-file limit, and say so when max_connections cannot fit it."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        if soft != resource.RLIM_INFINITY and limits.max_connections + 256 > soft:
            log.warning(
                "max_connections is %d but the open-file limit is %d: connections beyond "
                "about %d fail to be accepted; raise LimitNOFILE= or lower max_connections",
                limits.max_connections,
                soft,
                max(0, soft - 256),
            )


def run(app: web.Application, config: Config, on_listening: Callable[[], None]) -> None:
    """Serve until SIGTERM/SIGINT, then shut down within shutdown_timeout_seconds."""
    asyncio.run(_serve(app, config, on_listening))


async def _serve(app: web.Application, config: Config, on_listening: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    limits = Limits.of(config)
    flood = FloodLog()
    loop.set_exception_handler(quiet_loop_errors(flood))
    raise_file_limit(limits)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)  # not outside the main thread
    runner = Runner(
        app,
        limits,
        flood,
        keepalive_timeout=limits.keepalive_timeout,
        shutdown_timeout=limits.shutdown_timeout,
        handle_signals=False,
    )
    host, port = config.host_port
    flusher: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        on_listening()
        flusher = asyncio.create_task(flood.run(), name="flood-log")
        await stop.wait()
        runner.stopping_since = loop.time()
        log.info(
            "shutting down: no new connections; requests in flight get up to %gs",
            limits.shutdown_timeout,
        )
        server = runner.server
        assert isinstance(server, GuardedServer)
        server.draining = True
        taken = await stop_listening(site, server)
        if taken:
            log.info("shutdown: %d connection(s) from the listen backlog answered 503", taken)
    finally:
        await runner.cleanup()
        if flusher is not None:
            flusher.cancel()
        flood.flush()
    log.info("stopped")
