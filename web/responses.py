"""JSON in and out, with the size limit and the one error shape."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest

from hydraissue.config import Config
from hydraissue.errors import Invalid, TooLarge
from web.keys import CONFIG
from web.params import param_name

JSON = "application/json"


def json_response(
    payload: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def public_base(request: web.Request) -> str:
    """The base URL for links: base_url when configured, else what the client used."""
    return base_url_of(request.app[CONFIG], request)


def base_url_of(config: Config, request: BaseRequest) -> str:
    """``public_base`` for a request not routed yet (web/lane.py)."""
    configured = config.base_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


PAGING = ("offset", "limit")


def next_link(request: BaseRequest, base: str, offset: int, limit: int) -> str:
    """The ``Link: <…>; rel="next"`` of a list page: the same path and query with the
    next ``offset`` and ``limit`` (string work on the raw query: yarl's update_query
    parses and re-encodes it, 9% of a list page's time measured)."""
    url = request.rel_url
    kept = [
        part for part in url.raw_query_string.split("&") if part and param_name(part) not in PAGING
    ]
    kept.append(f"offset={offset}&limit={limit}")
    return f'<{base}{url.raw_path}?{"&".join(kept)}>; rel="next"'


def error_body(error: str, code: int, detail: Any = None) -> bytes:
    return orjson.dumps({"error": error, "code": code, "detail": detail})


async def read_json(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(
            f"request body is {request.content_length} bytes; the limit is {limit}",
            {"limit": limit},
        )
    try:
        raw = await request.read()  # cached: the idempotency check may have read it already
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(
            f"request body exceeds the limit of {limit} bytes", {"limit": limit}
        ) from None
    if not raw.strip():
        raise Invalid("body", "is empty; send a JSON object")
    ctype = request.content_type
    # curl -d sends form encoding by default; accept it when the body is JSON anyway.
    lenient = (JSON, "application/octet-stream", "application/x-www-form-urlencoded", "")
    if ctype not in lenient and not ctype.endswith("+json"):
        raise Invalid("Content-Type", f"must be application/json, got {ctype}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid("body", f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
