"""JSON API handlers: parse, hand a command to the service, render the new state."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from hydraissue import __version__, parse
from hydraissue.commands import Actor, DeleteIssue
from hydraissue.decide import etag_matches
from hydraissue.errors import Invalid, NotFound
from hydraissue.model import Issue, etag_of
from hydraissue.service import Outcome
from web.forms import read_form, upload_limits
from web.keys import CONFIG, ISSUE_JSON, RUNBOOK, SERVICE, STARTED, UPDATE_STATUS
from web.lane import list_page
from web.middleware import fingerprint_form, idempotency_of, mark_replayed
from web.params import known_query
from web.representation import absolute_attachment
from web.responses import json_response, read_json

routes = web.RouteTableDef()
NIM_HEADER = "X-Nim-Name"


def nim_of(request: web.Request) -> str | None:
    """The agent a write says it comes from (``X-Nim-Name``), for its audit trail."""
    raw = request.headers.get(NIM_HEADER)
    if raw is None:
        return None
    name = raw.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise Invalid(NIM_HEADER, "must be the agent's name: 1 to 200 printable characters")
    return name


def actor_of(request: web.Request, name: str | None = None) -> Actor:
    """The API actor: named after the agent when it says who it is, else ``name``."""
    return Actor("api", nim_of(request) or name)


def issue_id_of(request: web.Request) -> int:
    raw = request.match_info["id"]
    found = parse.issue_id(raw)
    if found is None:
        raise NotFound(f"no issue {raw!r}: ids are whole numbers", {"id": raw})
    return found


def issue_response(
    request: web.Request, issue: Issue, status: int = 200, outcome: Outcome | None = None
) -> web.Response:
    headers = {"ETag": issue.etag}
    if status == 201:
        headers["Location"] = f"/api/v1/issues/{issue.id}"
    body = request.app[ISSUE_JSON].render(issue)
    response = json_response(body, status=status, headers=headers)
    mark_replayed(response, outcome.replayed if outcome else None)
    return response


async def body_of(request: web.Request) -> object:
    body = await read_json(request, request.app[CONFIG].max_json_bytes)
    parse.exact_numbers(await request.read(), body)  # never a silently rounded number
    return body


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    known_query(request, ())
    status, extra = request.app[SERVICE].health()
    update_status = request.app.get(UPDATE_STATUS)
    if update_status is not None:  # hydraissue serve: the last check and its result
        extra = {**extra, "update": update_status()}
    return json_response(
        {
            "service": "hydraissue",
            "version": __version__,
            "status": status,
            "uptime_seconds": int(time.monotonic() - request.app[STARTED]),
            "extra": extra,
        }
    )


@routes.get("/api/v1/runbook")
async def runbook(request: web.Request) -> web.Response:
    known_query(request, ())
    return web.Response(body=request.app[RUNBOOK], content_type="text/markdown", charset="utf-8")


@routes.post("/api/v1/issues")
async def create_issue(request: web.Request) -> web.Response:
    known_query(request, ())
    command = parse.create_issue(await body_of(request))
    outcome = await request.app[SERVICE].handle(
        command,
        actor_of(request, command.reporter),
        idempotency_of(request),
        nim=nim_of(request),
    )
    return issue_response(request, outcome.issue, 201, outcome)


@routes.get("/api/v1/issues")
async def list_issues(request: web.Request) -> web.Response:
    body, headers = list_page(request.app, request)  # shared with the lane (web/lane.py)
    return json_response(body, headers=headers)


@routes.get("/api/v1/issues/{id}")
async def get_issue(request: web.Request) -> web.Response:
    known_query(request, ())
    issue_id = issue_id_of(request)
    service = request.app[SERVICE]
    row = service.live_row(issue_id)
    raw = service.read_model.json(issue_id) if row is not None else None
    body = request.app[ISSUE_JSON].of(row, raw, service.read_model.issue) if row and raw else None
    if body is None:  # not in memory as JSON yet (or not there at all: get says which)
        issue = await service.get(issue_id)
        body = request.app[ISSUE_JSON].render(issue)
        etag = issue.etag
    else:
        assert row is not None
        etag = etag_of(row.id, row.seq)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and etag_matches(if_none_match, etag, weak=True):
        return web.Response(status=304, headers={"ETag": etag})
    return json_response(body, headers={"ETag": etag})


@routes.patch("/api/v1/issues/{id}")
async def patch_issue(request: web.Request) -> web.Response:
    known_query(request, ())
    command = parse.update_issue(
        issue_id_of(request), await body_of(request), request.headers.get("If-Match")
    )
    outcome = await request.app[SERVICE].handle(command, actor_of(request), nim=nim_of(request))
    return issue_response(request, outcome.issue)


@routes.delete("/api/v1/issues/{id}")
async def delete_issue(request: web.Request) -> web.Response:
    known_query(request, ())
    command = DeleteIssue(issue_id_of(request), request.headers.get("If-Match"))
    await request.app[SERVICE].handle(command, actor_of(request), nim=nim_of(request))
    request.app[ISSUE_JSON].forget(command.issue_id)
    return web.Response(status=204)


@routes.put("/api/v1/issues/{id}/plan")
async def put_plan(request: web.Request) -> web.Response:
    known_query(request, ())
    command = parse.set_plan(
        issue_id_of(request), await body_of(request), request.headers.get("If-Match")
    )
    outcome = await request.app[SERVICE].handle(command, actor_of(request), nim=nim_of(request))
    return issue_response(request, outcome.issue)


@routes.post("/api/v1/issues/{id}/comments")
async def add_comment(request: web.Request) -> web.Response:
    known_query(request, ())
    command = parse.add_comment(issue_id_of(request), await body_of(request))
    outcome = await request.app[SERVICE].handle(
        command, actor_of(request, command.author), idempotency_of(request), nim=nim_of(request)
    )
    if outcome.replayed is not None:
        comment = next(c for c in outcome.issue.comments if c.id == outcome.replayed.ref)
    else:
        comment = outcome.issue.comments[-1]
    return mark_replayed(json_response(comment.to_dict(), status=201), outcome.replayed)


@routes.post("/api/v1/issues/{id}/nim-actions")
async def add_nim_action(request: web.Request) -> web.Response:
    known_query(request, ())
    command = parse.record_nim_action(issue_id_of(request), await body_of(request))
    outcome = await request.app[SERVICE].handle(
        command, actor_of(request, command.name), idempotency_of(request), nim=nim_of(request)
    )
    actions = outcome.issue.nim_actions
    ref = outcome.replayed.ref if outcome.replayed is not None else None
    action = actions[ref] if isinstance(ref, int) and 0 <= ref < len(actions) else actions[-1]
    return mark_replayed(json_response(action.to_dict(), status=201), outcome.replayed)


@routes.get("/api/v1/issues/{id}/events")
async def issue_events(request: web.Request) -> web.Response:
    known_query(request, ())
    events = await request.app[SERVICE].history(issue_id_of(request))
    return json_response(orjson.dumps([e.public_dict() for e in events]))


@routes.post("/api/v1/issues/{id}/attachments")
async def add_attachment(request: web.Request) -> web.Response:
    known_query(request, ())
    issue_id = issue_id_of(request)
    service = request.app[SERVICE]
    await service.get(issue_id)
    post = await read_form(request, service.uploads, upload_limits(request.app[CONFIG]), "file")
    if post.too_large is not None:
        raise post.too_large
    if len(post.files) != 1:
        service.uploads.discard(post.files)
        raise Invalid("file", "send exactly one file in the multipart field 'file'")
    idem = fingerprint_form(request, post.fields, post.files)
    outcome = await service.attach(
        issue_id, post.files[0], actor_of(request), idem, nim=nim_of(request)
    )
    attachments = outcome.issue.attachments
    ref = outcome.replayed.ref if outcome.replayed is not None else None
    attachment = next((a for a in attachments if a.filename == ref), attachments[-1])
    body = absolute_attachment(request.app[ISSUE_JSON].base, issue_id, attachment)
    return mark_replayed(json_response(body, status=201), outcome.replayed)
