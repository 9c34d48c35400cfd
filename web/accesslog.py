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

import logging
import sys
import time as clock
from typing import Any

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
    names = sorted({name for name in request.query})
    return f"{path}?{'&'.join(names)}" if names else path


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
        self.logger.info(
            "%s %s %d %.1fms %s",
            fields["method"],
            fields["path"],
            status,
            fields["ms"],
            fields["actor"],
            extra={"request": fields},
        )

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
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not root.handlers:  # as logging.basicConfig: leave a host's handlers (pytest's) alone
        root.addHandler(handler)
