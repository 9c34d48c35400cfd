"""The three cross-cutting edges: errors, bearer auth, idempotent POSTs."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from hydraissue.errors import DomainError, Invalid, TooManyRequests
from hydraissue.idempotency import WINDOW_SECONDS, Stored
from web.keys import CONFIG, IDEMPOTENCY
from web.responses import JSON, error_body

log = logging.getLogger("hydraissue.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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
    """One place turns every failure into the error shape; bad input never becomes a 500."""
    try:
        return await handler(request)
    except DomainError as exc:
        extra = {}
        if isinstance(exc, TooManyRequests):
            extra["Retry-After"] = str(exc.retry_after)
        if not wants_json(request):
            return html_message(request, exc.status, exc.message, extra)
        return _json_error(exc.status, exc.message, exc.detail, **extra)
    except (RequestPayloadError, HttpProcessingError) as exc:
        # A body aiohttp could not read (bad gzip, broken chunking): the client's fault.
        message = f"the request body could not be read ({str(exc).strip()})"
        if not wants_json(request):
            return html_message(request, 400, message, {})
        return _json_error(400, message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if not wants_json(request):
            text = HTML_REASONS.get(exc.status, exc.reason)
            return html_message(request, exc.status, text, {})
        reasons = {
            404: "no such endpoint; see GET /api/v1/runbook for the API",
            405: f"method {request.method} is not allowed on {request.path}",
            413: "request body is too large",
        }
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return _json_error(exc.status, reasons.get(exc.status, exc.reason), None, **headers)
    except Exception:
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


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Pages get a strict CSP; uploads set their own (sandbox) in their handler."""
    headers = response.headers
    if response.content_type == "text/html":
        for name, value in HTML_SECURITY.items():
            headers.setdefault(name, value)
    elif "X-Content-Type-Options" not in headers:
        headers["X-Content-Type-Options"] = "nosniff"


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API) or request.path in PUBLIC_API:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _json_error(
            401,
            "missing bearer token; send Authorization: Bearer <api_token>",
            None,
            **{"WWW-Authenticate": 'Bearer realm="hydraissue"'},
        )
    expected = request.app[CONFIG].api_token.encode()
    if not hmac.compare_digest(token.strip().encode(), expected):
        return _json_error(
            401,
            "invalid bearer token; check api_token in the server's config",
            None,
            **{"WWW-Authenticate": 'Bearer realm="hydraissue", error="invalid_token"'},
        )
    return await handler(request)


REPLAYED_HEADERS = ("Location", "ETag")


@web.middleware
async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or key is None:
        return await handler(request)
    if not key.strip() or len(key) > 255:
        raise Invalid("Idempotency-Key", "must be 1 to 255 characters")
    if request.content_type.startswith("multipart/"):
        # Uploads are streamed to disk, never held whole, so there is no body to compare.
        raise Invalid(
            "Idempotency-Key",
            "is not supported on multipart uploads; send the request without it",
        )
    store = request.app[IDEMPOTENCY]
    key = f"{'api' if request.path.startswith(API) else 'public'}:{key}"
    digest = hashlib.sha256(f"{request.method} {request.path_qs}\n".encode())
    digest.update(await request.read())
    fingerprint = digest.hexdigest()
    async with store.locked(key):
        stored = store.get(key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return _json_error(
                    422,
                    "Idempotency-Key was already used with a different request; use a new key",
                    {"key": request.headers["Idempotency-Key"]},
                )
            headers = {**stored.headers, "Idempotent-Replayed": "true"}
            return web.Response(
                body=stored.body,
                status=stored.status,
                content_type=stored.content_type,
                headers=headers,
            )
        response = await handler(request)
        if 200 <= response.status < 300 and isinstance(response, web.Response):
            body = response.body
            if isinstance(body, bytes):
                await store.put(
                    Stored(
                        key=key,
                        fingerprint=fingerprint,
                        status=response.status,
                        content_type=response.content_type,
                        body=body,
                        headers={
                            name: response.headers[name]
                            for name in REPLAYED_HEADERS
                            if name in response.headers
                        },
                        expires=time.time() + WINDOW_SECONDS,
                    )
                )
        return response
