"""JSON API handlers: parse, hand a command to the service, render the new state."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from events.model import Actor
from hydraissue import __version__, parse
from hydraissue.commands import DeleteIssue
from hydraissue.decide import etag_matches
from hydraissue.errors import Invalid, NotFound
from hydraissue.model import Issue, display_key
from projections.query import parse_list_query
from web.forms import read_form, upload_limits
from web.keys import CONFIG, RUNBOOK, SERVICE, STARTED
from web.responses import json_response, public_base, read_json

routes = web.RouteTableDef()
API_ACTOR = Actor("api")


def issue_id_of(request: web.Request) -> int:
    raw = request.match_info["id"]
    found = parse.issue_id(raw)
    if found is None:
        raise NotFound(f"no issue {raw!r}: ids are whole numbers", {"id": raw})
    return found


def live_issue(request: web.Request, issue_id: int) -> Issue:
    issue = request.app[SERVICE].projection.issue(issue_id)
    if issue is None:
        raise NotFound(f"{display_key(issue_id)} does not exist", {"id": issue_id})
    return issue


def issue_response(request: web.Request, issue: Issue, status: int = 200) -> web.Response:
    headers = {"ETag": issue.etag}
    if status == 201:
        headers["Location"] = f"/api/v1/issues/{issue.id}"
    body = request.app[SERVICE].projection.issue_json(issue)
    return json_response(body, status=status, headers=headers)


async def body_of(request: web.Request) -> object:
    return await read_json(request, request.app[CONFIG].max_json_bytes)


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    return json_response(
        {
            "service": "hydraissue",
            "version": __version__,
            "status": "ok",
            "uptime_seconds": int(time.monotonic() - request.app[STARTED]),
            "extra": {"issues": request.app[SERVICE].projection.count()},
        }
    )


@routes.get("/api/v1/runbook")
async def runbook(request: web.Request) -> web.Response:
    return web.Response(body=request.app[RUNBOOK], content_type="text/markdown", charset="utf-8")


@routes.post("/api/v1/issues")
async def create_issue(request: web.Request) -> web.Response:
    command = parse.create_issue(await body_of(request))
    outcome = await request.app[SERVICE].handle(command, Actor("api", command.reporter))
    return issue_response(request, outcome.issue, 201)


@routes.get("/api/v1/issues")
async def list_issues(request: web.Request) -> web.Response:
    query = parse_list_query(request.query)
    total, body = request.app[SERVICE].projection.query_json(query)
    headers = {"X-Total-Count": str(total)}
    if query.offset + query.limit < total:
        next_url = request.rel_url.update_query(
            offset=query.offset + query.limit, limit=query.limit
        )
        headers["Link"] = f'<{public_base(request)}{next_url}>; rel="next"'
    return json_response(body, headers=headers)


@routes.get("/api/v1/issues/{id}")
async def get_issue(request: web.Request) -> web.Response:
    issue = live_issue(request, issue_id_of(request))
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and etag_matches(if_none_match, issue.etag, weak=True):
        return web.Response(status=304, headers={"ETag": issue.etag})
    return issue_response(request, issue)


@routes.patch("/api/v1/issues/{id}")
async def patch_issue(request: web.Request) -> web.Response:
    command = parse.update_issue(
        issue_id_of(request), await body_of(request), request.headers.get("If-Match")
    )
    outcome = await request.app[SERVICE].handle(command, API_ACTOR)
    return issue_response(request, outcome.issue)


@routes.delete("/api/v1/issues/{id}")
async def delete_issue(request: web.Request) -> web.Response:
    command = DeleteIssue(issue_id_of(request), request.headers.get("If-Match"))
    await request.app[SERVICE].handle(command, API_ACTOR)
    return web.Response(status=204)


@routes.put("/api/v1/issues/{id}/plan")
async def put_plan(request: web.Request) -> web.Response:
    command = parse.set_plan(
        issue_id_of(request), await body_of(request), request.headers.get("If-Match")
    )
    outcome = await request.app[SERVICE].handle(command, API_ACTOR)
    return issue_response(request, outcome.issue)


@routes.post("/api/v1/issues/{id}/comments")
async def add_comment(request: web.Request) -> web.Response:
    command = parse.add_comment(issue_id_of(request), await body_of(request))
    outcome = await request.app[SERVICE].handle(command, Actor("api", command.author))
    comment = outcome.issue.comments[-1]
    return json_response(comment.to_dict(), status=201)


@routes.post("/api/v1/issues/{id}/nim-actions")
async def add_nim_action(request: web.Request) -> web.Response:
    command = parse.record_nim_action(issue_id_of(request), await body_of(request))
    outcome = await request.app[SERVICE].handle(command, Actor("api", command.name))
    return json_response(outcome.issue.nim_actions[-1].to_dict(), status=201)


@routes.get("/api/v1/issues/{id}/events")
async def issue_events(request: web.Request) -> web.Response:
    issue_id = issue_id_of(request)
    events = await request.app[SERVICE].history(issue_id)
    if events is None:
        raise NotFound(f"{display_key(issue_id)} does not exist", {"id": issue_id})
    return json_response(orjson.dumps(events))  # orjson reads the event dataclasses


@routes.post("/api/v1/issues/{id}/attachments")
async def add_attachment(request: web.Request) -> web.Response:
    issue_id = issue_id_of(request)
    live_issue(request, issue_id)
    service = request.app[SERVICE]
    post = await read_form(request, service.uploads, upload_limits(request.app[CONFIG]), "file")
    if post.too_large is not None:
        raise post.too_large
    if len(post.files) != 1:
        service.uploads.discard(post.files)
        raise Invalid("file", "send exactly one file in the multipart field 'file'")
    outcome = await service.attach(issue_id, post.files[0], API_ACTOR)
    return json_response(outcome.issue.attachments[-1].to_dict(), status=201)
