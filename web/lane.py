"""A lane in front of the router for the most frequent requests: ``GET
/api/v1/issues/{id}`` of a plain issue, and ``GET /api/v1/issues`` (a list page).

Agents and admins poll issues by id. Such a request spent more of its time in aiohttp's
router and the middleware chain than in its own work (finding the kept JSON of one
issue): answered here, before routing, get-by-id went from 13,600-14,000 to
19,300-20,800 req/s (wrk, 16 connections, 10,000 issues; docs/architecture.md).

The lane answers only when its answer is certain to be the route's, byte for byte
(``get_issue`` in web/api.py, through the ``errors`` and ``authenticate`` middlewares):
a GET without a query string or a body, without ``If-None-Match``, whose
``Authorization`` is exactly ``Bearer <api_token>``, for the canonical id of a live
issue held in memory without files. Anything else (no or another token, a bad id, a
query, a 304, files to link, a damaged log, an issue not loaded yet) gets ``None`` and
goes the usual way. tests/test_api_issues.py asks the lane and the route the same
questions and compares the answers.

A list page is built by ``list_page``, which the route calls too, so the two cannot
drift; the lane takes any GET of the exact path without a body, with the same token
rule, and leaves to the route every query it cannot answer (a bad parameter: the
route names it). Measured (wrk, 16 connections, 10,000 issues, pages of 50 open
issues at random offsets, alternating builds): see docs/architecture.md.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_request import BaseRequest

from hydraissue.model import etag_of
from hydraissue.parse import issue_id as parse_issue_id
from projections.query import parse_list_query
from web.keys import CONFIG, ISSUE_JSON, SERVICE
from web.responses import base_url_of, next_link
from web.tokens import matches

LIST = "/api/v1/issues"  # the list route's path, and its request metrics' label
PREFIX = "/api/v1/issues/"
ROUTE = "/api/v1/issues/{id}"  # the route it stands in for (request metrics' label)
JSON = "application/json"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}  # what the ``secure`` middleware adds


class LaneResponse(web.Response):
    """A response the lane gave: the access log counts it under ``route``."""

    route = ROUTE


class LaneListResponse(LaneResponse):
    route = LIST


def list_page(app: web.Application, request: BaseRequest) -> tuple[bytes, dict[str, str]]:
    """A list page's body and headers, for the lane and the route alike. Raises on a
    bad query, as parsing does."""
    query = parse_list_query(request.query)
    service = app[SERVICE]
    total, ids = service.query(query)
    headers = {"X-Total-Count": str(total)}
    if query.offset + query.limit < total:
        base = base_url_of(app[CONFIG], request)
        headers["Link"] = next_link(request, base, query.offset + query.limit, query.limit)
    return app[ISSUE_JSON].page_of(ids, service.read_model), headers


def answer(app: web.Application, request: BaseRequest) -> web.Response | None:
    """The route's answer to this request when the lane is sure of it, else None."""
    path = request.path
    if request.method != "GET":
        return None
    if path == LIST:
        return _list(app, request)
    if not path.startswith(PREFIX):
        return None
    raw_id = path[len(PREFIX) :]
    issue_id = parse_issue_id(raw_id)
    if issue_id is None or request.rel_url.raw_query_string or not request.content.is_eof():
        return None
    headers = request.headers
    if "If-None-Match" in headers:
        return None
    expected = f"Bearer {app[CONFIG].api_token}"  # read per request: live reload
    if not matches(headers.get("Authorization", ""), expected):
        return None
    model = app[SERVICE].read_model
    body = model.plain_json(issue_id)  # live, in memory, no files: sent as it is kept
    if body is None:
        return None
    etag = etag_of(issue_id, model.rows[issue_id].seq)
    return LaneResponse(body=body, content_type=JSON, headers={"ETag": etag, **NOSNIFF})


def _list(app: web.Application, request: BaseRequest) -> web.Response | None:
    if not request.content.is_eof():
        return None
    expected = f"Bearer {app[CONFIG].api_token}"
    if not matches(request.headers.get("Authorization", ""), expected):
        return None
    try:
        body, headers = list_page(app, request)
    except Exception:  # a bad query (or worse): the route answers it, with its errors
        return None
    # with the header the route's answer gets from the ``secure`` middleware
    return LaneListResponse(body=body, content_type=JSON, headers={**headers, **NOSNIFF})
