"""The cross-cutting edges, as two middlewares (each layer costs every request a call):
``errors`` (every failure in one shape) and ``authenticate`` (the API's bearer token,
the admin guard, then ``keyed`` for a POST with an ``Idempotency-Key``); and security
headers. (Request lines and request metrics are the access logger's: web/accesslog.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import aiohttp_jinja2
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from hydraissue.errors import DomainError, Invalid, TooManyRequests
from hydraissue.service import Idempotency
from hydraissue.uploads import Received
from web import admin_auth
from web.clientip import client_ip
from web.keys import (
    CONFIG,
    IDEMPOTENCY,
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY,
    KEY_LOCKS,
    TRUSTED_PROXIES,
    Handler,
)
from web.responses import JSON, error_body
from web.tokens import matches

log = logging.getLogger("hydraissue.web")

R = TypeVar("R", bound=web.StreamResponse)
API = "/api/v1/"
PUBLIC_API = frozenset({"/api/v1/health", "/api/v1/runbook"})


def wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


HTML_REASONS = {
    404: "There is nothing at this address.",
    405: "This page cannot be used that way.",
    413: "What you sent is too large.",
}
HEADINGS = {
    400: "Please check your input",
    404: "Not found",
    413: "Too large",
    429: "Please slow down",
}


def html_message(
    request: web.Request, status: int, text: str, headers: dict[str, str]
) -> web.Response:
    heading = HEADINGS.get(status, "Something went wrong")
    context = {"heading": heading, "text": text, "status": status}
    response = aiohttp_jinja2.render_template("message.html", request, context, status=status)
    response.headers.update(headers)
    return response


def _json_error(status: int, error: str, detail: object = None, **headers: str) -> web.Response:
    return web.Response(
        body=error_body(error, status, detail), status=status, content_type=JSON, headers=headers
    )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One place turns every failure into the error shape (bad input never becomes a
    500) and gives every answer its security headers (here rather than in an
    ``on_response_prepare`` signal, which cost every request an awaited dispatch)."""
    try:
        response = await handler(request)
    except Exception as exc:
        response = failure(request, exc)
    secure(response)
    return response


def failure(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer to what a handler raised (called in its ``except``); a redirect is
    raised again, with its headers, for aiohttp to send."""
    if isinstance(exc, DomainError):
        extra = {}
        if isinstance(exc, TooManyRequests):
            extra["Retry-After"] = str(exc.retry_after)
        if not wants_json(request):
            return html_message(request, exc.status, exc.message, extra)
        return _json_error(exc.status, exc.message, exc.detail, **extra)
    if isinstance(exc, RequestPayloadError | HttpProcessingError):
        # A body aiohttp could not read (bad gzip, broken chunking): the client's fault.
        message = f"the request body could not be read ({str(exc).strip()})"
        if not wants_json(request):
            return html_message(request, 400, message, {})
        return _json_error(400, message)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            secure(exc)
            raise exc
        allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        if not wants_json(request):
            text = HTML_REASONS.get(exc.status, exc.reason)
            return html_message(request, exc.status, text, allow)  # a 405 keeps its Allow
        reasons = {
            404: "no such endpoint; see GET /api/v1/runbook for the API",
            405: f"method {request.method} is not allowed on {request.path}",
            413: "request body is too large",
        }
        return _json_error(exc.status, reasons.get(exc.status, exc.reason), None, **allow)
    log.exception("unhandled error on %s %s", request.method, request.path)
    if not wants_json(request):
        return html_message(request, 500, "Something broke on our side; it was logged.", {})
    return _json_error(500, "internal error; the server log has the details")


HTML_SECURITY = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def secure(response: web.StreamResponse) -> None:
    """Pages get a strict CSP; uploads set their own (sandbox) in their handler; a
    stream the handler already started (the SSE feed) set its own. (The header itself,
    not ``response.content_type``: that parses it, on every request.)"""
    if response.prepared:
        return
    headers = response.headers
    if headers.get("Content-Type", "").startswith("text/html"):
        for name, value in HTML_SECURITY.items():
            headers.setdefault(name, value)
    elif "X-Content-Type-Options" not in headers:
        headers["X-Content-Type-Options"] = "nosniff"


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API takes the api token as a bearer token (but for health and the runbook);
    ``/admin`` takes the admin's session or token (web/admin_auth.py); the rest is open.
    A POST with an ``Idempotency-Key`` (API or public form) then goes through ``keyed``."""
    path = request.path
    if not path.startswith(API):
        if admin_auth.is_admin_path(path):
            return await admin_auth.guard(request, handler)
    elif path not in PUBLIC_API:
        refused = bearer_refusal(request)
        if refused is not None:
            return refused
    if request.method == "POST" and IDEMPOTENCY_HEADER in request.headers:
        return await keyed(request, handler)
    return await handler(request)


def bearer_refusal(request: web.Request) -> web.Response | None:
    """The 401 for an API request without the api token, or None when it has it."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _json_error(
            401,
            "missing bearer token; send Authorization: Bearer <api_token>",
            None,
            **{"WWW-Authenticate": 'Bearer realm="hydraissue"'},
        )
    if not matches(token.strip(), request.app[CONFIG].api_token):
        return _json_error(
            401,
            "invalid bearer token; check api_token in the server's config",
            None,
            **{"WWW-Authenticate": 'Bearer realm="hydraissue", error="invalid_token"'},
        )
    return None


@contextlib.asynccontextmanager
async def holding(locks: dict[str, asyncio.Lock], key: str) -> AsyncIterator[None]:
    """Serialise requests with the same key, so a concurrent retry waits for the first."""
    lock = locks.setdefault(key, asyncio.Lock())
    try:
        async with lock:
            yield
    finally:
        if not lock.locked():
            locks.pop(key, None)


async def keyed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An ``Idempotency-Key`` on a POST: scope it, fingerprint the request, hold its lock.

    The service looks the key up and commits it with the event it produces, so the
    record is as durable as the write; handlers mark a replayed answer.
    """
    key = request.headers[IDEMPOTENCY_HEADER]
    if not key.strip() or len(key) > 255:
        raise Invalid(IDEMPOTENCY_HEADER, "must be 1 to 255 characters")
    if not _is_text(key):  # it is committed with the event: undecodable bytes cannot be
        raise Invalid(IDEMPOTENCY_HEADER, "must be UTF-8 text")
    # Public clients' keys are scoped per client address: one client's key can neither
    # block another's report nor hand it someone else's answer.
    if request.path.startswith(API):
        scoped = f"api:{key}"
    else:
        scoped = f"public:{client_ip(request, request.app[TRUSTED_PROXIES])}:{key}"
    async with holding(request.app[KEY_LOCKS], scoped):
        request[IDEMPOTENCY_KEY] = scoped
        if not request.content_type.startswith("multipart/"):
            digest = hashlib.sha256(f"{request.method} {request.path_qs}\n".encode())
            digest.update(await request.read())
            request[IDEMPOTENCY] = Idempotency(scoped, digest.hexdigest())
        return await handler(request)


def _is_text(value: str) -> bool:
    """A header's value was UTF-8 (aiohttp keeps other bytes as surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def fingerprint_form(
    request: web.Request, fields: dict[str, str], files: Sequence[Received]
) -> Idempotency | None:
    """The fingerprint of a multipart post, from what was received (files by digest)."""
    key = request.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    digest = hashlib.sha256(f"{request.method} {request.path_qs}\n".encode())
    digest.update(orjson.dumps(sorted(fields.items())))
    for received in files:
        digest.update(f"\n{received.name}\n{received.sha256}".encode())
    return Idempotency(key, digest.hexdigest())


def idempotency_of(request: web.Request) -> Idempotency | None:
    return request.get(IDEMPOTENCY)


def mark_replayed(response: R, replayed: object) -> R:
    if replayed is not None:
        response.headers["Idempotent-Replayed"] = "true"
    return response
