"""One log line per request, and the log's format (text or JSON lines).

An aiohttp access logger (not a middleware): it runs after the response is written, for
every request the server answered, including the ones no middleware sees (a request
aiohttp's parser refused, a 503 while shutting down, a 408 for a body that stopped).

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
from urllib.parse import unquote_plus

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from web.admin_auth import ADMIN

ACCESS = logging.getLogger("hydraissue.access")
API = "/api/v1/"
PUBLIC_API = frozenset({"/api/v1/health", "/api/v1/runbook"})
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def actor_kind(request: BaseRequest, status: int) -> str:
    """api / admin / public / anonymous: who the server took the caller to be."""
    if isinstance(request, web.Request) and request.get(ADMIN) is not None:
        return "admin"
    path = request.path
    if status in (401, 403):
        return "anonymous"
    if path.startswith(API) and path not in PUBLIC_API:
        return "api"
    if path.startswith("/admin"):
        return "anonymous"
    return "public"


def shown_path(request: BaseRequest) -> str:
    """The path, and of the query only the parameter names (``?limit&status``)."""
    path = request.path
    raw = request.query_string  # split here: parsing request.query per line cost ~5%
    if not raw:
        return path
    names = sorted({unquote_plus(part.partition("=")[0]) for part in raw.split("&") if part})
    return f"{path}?{'&'.join(names)}" if names else path


class Lines:
    """Access lines, written to stderr in batches (at most every 0.2 s, and at exit).

    Through ``logging`` one line cost as much as a get-by-id itself (a LogRecord, a
    formatter, a lock and a flush each): the same text, built here and written in
    batches, costs a few microseconds. Up to 0.2 s of lines can be lost in a kill -9.
    """

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.json = False
        self._second = -1
        self._stamp = ""
        self._flush_at: asyncio.TimerHandle | None = None
        atexit.register(self.flush)

    def add(self, fields: dict[str, Any]) -> None:
        now = clock.time()
        second = int(now)
        if self.json:
            stamp = clock.strftime("%Y-%m-%dT%H:%M:%S", clock.gmtime(now))
            entry = {"time": f"{stamp}.{int(now * 1000) % 1000:03d}Z", "level": "info"}
            entry |= {"logger": ACCESS.name, "message": _message(fields), **fields}
            self.pending.append(orjson.dumps(entry).decode() + "\n")
        else:
            if second != self._second:
                self._second = second
                self._stamp = clock.strftime("%Y-%m-%d %H:%M:%S", clock.localtime(now))
            ms = int(now * 1000) % 1000
            self.pending.append(f"{self._stamp},{ms:03d} INFO {ACCESS.name}: {_message(fields)}\n")
        if self._flush_at is None:
            try:
                self._flush_at = asyncio.get_running_loop().call_later(0.2, self.flush)
            except RuntimeError:  # no loop (a test calling the logger directly)
                self.flush()

    def flush(self) -> None:
        self._flush_at = None
        if self.pending:
            text, self.pending = "".join(self.pending), []
            try:
                sys.stderr.write(text)
                sys.stderr.flush()
            except (OSError, ValueError):  # stderr closed or full: access lines are best effort
                pass


def _message(fields: dict[str, Any]) -> str:
    method, path, status = fields["method"], fields["path"], fields["status"]
    return f"{method} {path} {status} {fields['ms']:.1f}ms {fields['actor']}"


LINES = Lines()


class AccessLog(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.method == "UNKNOWN":
            return  # a request the parser refused: web/serving.py logs its one line
        try:
            status = response.status
            fields = {
                "method": request.method,
                "path": shown_path(request),
                "status": status,
                "ms": round(time * 1000, 1),
                "actor": actor_kind(request, status),
            }
        except Exception:  # pragma: no cover - a request aiohttp could not even parse
            return
        LINES.add(fields)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


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
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not root.handlers:  # as logging.basicConfig: leave a host's handlers (pytest's) alone
        root.addHandler(handler)
