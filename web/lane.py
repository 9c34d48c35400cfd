"""A lane in front of the router for the most frequent request: ``GET
/api/v1/issues/{id}`` of a plain issue.

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
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_request import BaseRequest

from hydraissue.model import etag_of
from hydraissue.parse import issue_id as parse_issue_id
from web.keys import CONFIG, SERVICE
from web.tokens import matches

PREFIX = "/api/v1/issues/"
ROUTE = "/api/v1/issues/{id}"  # the route it stands in for (request metrics' label)
JSON = "application/json"


class LaneResponse(web.Response):
    """A response the lane gave: the access log counts it under ``ROUTE``."""


def answer(app: web.Application, request: BaseRequest) -> web.Response | None:
    """The route's answer to this request when the lane is sure of it, else None."""
    path = request.path
    if request.method != "GET" or not path.startswith(PREFIX):
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
    return LaneResponse(
        body=body,
        content_type=JSON,
        headers={"ETag": etag, "X-Content-Type-Options": "nosniff"},
    )
