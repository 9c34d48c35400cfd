"""One log line per request, every answer counted, and the log's format (text or JSON).

An aiohttp access logger (not a middleware), set by the app itself (``handler_args``,
so every server of the app has it, tests' included): it runs after the response is
written, for every request the server answered, including the ones no middleware sees
(a request aiohttp's parser refused, a 503 while shutting down, a 408 for a body that
stopped). It writes the request's line and counts the answer in ``/metrics``
(web/metrics.py): one place, one duration, no layer in the handler chain.

What a line holds is fixed here, never taken from the request wholesale: the method,
the path without its query values (only the parameter names: a token in a query
string never reaches the log), the status, the duration in ms, the actor kind. No
header, cookie or form field is ever read.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time as clock
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from web.admin_auth import ADMIN
from web.lane import LaneResponse
from web.metrics import METRICS
from web.params import param_name

ACCESS = logging.getLogger("hydraissue.access")
API = "/api/v1/"
PUBLIC_API = frozenset({"/api/v1/health", "/api/v1/runbook"})
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def actor_kind(request: BaseRequest, status: int) -> str:
    """api / admin / public / anonymous: who the server took the caller to be."""
    path = request.path
    # Only an /admin path can carry the guard's mark (a Request's get() raises inside)
    admin_path = path.startswith("/admin") and isinstance(request, web.Request)
    if admin_path and request.get(ADMIN) is not None:
        return "admin"
    if status in (401, 403):
        return "anonymous"
    if path.startswith(API) and path not in PUBLIC_API:
        return "api"
    if path.startswith("/admin"):
        return "anonymous"
    return "public"


def shown(path: str, raw_query: str) -> str:
    """The path, and of the query only the parameter names (``?limit&status``), from
    the raw query string (building request.query per line cost ~5%)."""
    if not raw_query:
        return path
    names = sorted({param_name(part) for part in raw_query.split("&") if part})
    return f"{path}?{'&'.join(names)}" if names else path


class Lines:
    """Access lines, written to stderr in batches (at most every 0.2 s, and at exit).

    Through ``logging`` one line cost as much as a get-by-id itself (a LogRecord, a
    formatter, a lock and a flush each): the same text, built here and written in
    batches, costs a few microseconds. A request only records its fields; the lines are
    formatted at the flush, in one loop (list pages about 1% faster than formatting
    each line as it came).
    Up to 0.2 s of lines can be lost in a kill -9.
    """

    def __init__(self) -> None:
        # (time, method, path, raw query, status, ms, actor) per answer, until the flush
        self.pending: list[tuple[float, str, str, str, int, float, str]] = []
        self.on = False  # set by setup_logging: a process that did not ask writes none
        self.json = False
        self._second = -1
        self._stamp = ""
        self._name = f"INFO {ACCESS.name}: "
        self._flush_at: asyncio.TimerHandle | None = None
        atexit.register(self.flush)

    def add(
        self, method: str, path: str, status: int, ms: float, actor: str, raw_query: str = ""
    ) -> None:
        self.pending.append((clock.time(), method, path, raw_query, status, ms, actor))
        if self._flush_at is None:
            try:
                self._flush_at = asyncio.get_running_loop().call_later(0.2, self.flush)
            except RuntimeError:  # no loop (a test calling the logger directly)
                self.flush()

    def line(self, now: float, method: str, path: str, status: int, ms: float, actor: str) -> str:
        message = f"{method} {path} {status} {ms:.1f}ms {actor}"
        if self.json:
            stamp = clock.strftime("%Y-%m-%dT%H:%M:%S", clock.gmtime(now))
            entry = {
                "time": f"{stamp}.{int(now * 1000) % 1000:03d}Z",
                "level": "info",
                "logger": ACCESS.name,
                "message": message,
                "method": method,
                "path": path,
                "status": status,
                "ms": round(ms, 1),
                "actor": actor,
            }
            return orjson.dumps(entry).decode() + "\n"
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = f"{clock.strftime('%Y-%m-%d %H:%M:%S', clock.localtime(now))},"
        return f"{self._stamp}{int(now * 1000) % 1000:03d} {self._name}{message}\n"

    def flush(self) -> None:
        self._flush_at = None
        if self.pending:
            pending, self.pending = self.pending, []
            line = self.line
            text = "".join(
                [
                    line(now, method, shown(path, query), status, ms, actor)
                    for now, method, path, query, status, ms, actor in pending
                ]
            )
            try:
                sys.stderr.write(text)
                sys.stderr.flush()
            except (OSError, ValueError):  # stderr closed or full: access lines are best effort
                pass


LINES = Lines()


class AccessLog(AbstractAccessLogger):
    """aiohttp makes one per connection from the class alone, so the app whose answers
    it counts is a class attribute: ``per_app`` makes the class an app sets its ``app``
    on (a request refused before routing, a 503 while shutting down, has no app)."""

    app: web.Application | None = None

    @classmethod
    def per_app(cls) -> type[AccessLog]:
        return type("AppAccessLog", (cls,), {})

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.method == "UNKNOWN":
            return  # a request the parser refused: web/serving.py logs its one line
        status = response.status
        if self.app is not None and isinstance(request, web.Request):
            metrics = self.app.get(METRICS)
            if metrics is not None:
                lane_route = response.route if isinstance(response, LaneResponse) else None
                metrics.answered(request, status, time, lane_route)
        if LINES.on and self.logger.isEnabledFor(logging.INFO):  # log_level is live
            try:
                path = request.path
                query = request.rel_url.raw_query_string
                actor = actor_kind(request, status)
            except Exception:  # pragma: no cover - a request aiohttp could not even parse
                return
            LINES.add(request.method, path, status, time * 1000, actor, query)

    @property
    def enabled(self) -> bool:
        return True  # answers are counted whatever the log level


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and a request's fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = getattr(record, "request", None)
        if isinstance(request, dict):
            entry.update(request)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(level: str, log_format: str) -> None:
    """The root logger's one handler on stderr, in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = clock.gmtime
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    LINES.json = log_format == "json"
    LINES.on = True
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not root.handlers:  # as logging.basicConfig: leave a host's handlers (pytest's) alone
        root.addHandler(handler)
