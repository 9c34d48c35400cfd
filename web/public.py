"""Public pages: the report form, the issue view and uploaded files. No login."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from hydraissue.commands import Actor
from hydraissue.errors import NotFound, TooManyRequests
from hydraissue.model import CATEGORIES, display_key
from hydraissue.parse import issue_id
from hydraissue.report import FILE_FIELD, FormInvalid, extra_fields, is_spam, parse_report
from hydraissue.uploads import INLINE_TYPES
from web.clientip import client_ip
from web.forms import read_form, upload_limits
from web.keys import CONFIG, RATE_LIMITER, SERVICE, TRUSTED_PROXIES
from web.middleware import fingerprint_form, mark_replayed, wants_json
from web.render import field_value, markdown
from web.representation import attachment_dict, issue_dict
from web.responses import json_response, public_base

routes = web.RouteTableDef()


def render_form(
    request: web.Request,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    context = {
        "values": values,
        "errors": errors or {},
        "extras": [(name, values[name]) for name in extra_fields(values)],
        "projects": request.app[SERVICE].read_model.known_projects(),
        "categories": CATEGORIES,
        "limits": upload_limits(request.app[CONFIG]),
    }
    return aiohttp_jinja2.render_template("report.html", request, context, status=status)


@routes.get("/")
@routes.get("/report")
async def report_form(request: web.Request) -> web.Response:
    return render_form(request, {"project": request.query.get("project", "")})


@routes.post("/report")
async def submit_report(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    wait = request.app[RATE_LIMITER].hit(client_ip(request, request.app[TRUSTED_PROXIES]))
    if wait:
        raise TooManyRequests(
            f"Too many reports from your address. Please try again in {wait} seconds.", wait
        )
    post = await read_form(request, service.uploads, upload_limits(request.app[CONFIG]), FILE_FIELD)
    if post.too_large is not None:
        if wants_json(request):
            raise post.too_large
        return render_form(request, post.fields, {"attachments": post.too_large.message}, 413)
    if is_spam(post.fields):
        service.uploads.discard(post.files)
        if wants_json(request):
            return json_response({"status": "received"}, status=201)
        raise web.HTTPSeeOther("/report/thanks")
    try:
        command = parse_report(post.fields)
    except FormInvalid as exc:
        service.uploads.discard(post.files)
        if wants_json(request):
            raise
        return render_form(request, post.fields, exc.errors, 400)
    idem = fingerprint_form(request, post.fields, post.files)
    outcome = await service.create_with_attachments(
        command, post.files, Actor("public", command.reporter), idem
    )
    issue = outcome.issue
    url = f"/issues/{issue.id}"
    if wants_json(request):
        body: dict[str, Any] = issue_dict(issue)
        # The public view's address; null when that view is switched off.
        body["url"] = f"{public_base(request)}{url}" if request.app[CONFIG].public_view else None
        response = json_response(body, status=201, headers={"Location": url})
        return mark_replayed(response, outcome.replayed)
    target = (
        f"{url}?reported=1" if request.app[CONFIG].public_view else f"/report/thanks?id={issue.id}"
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed is not None else None
    raise web.HTTPSeeOther(target, headers=headers)


@routes.get("/report/thanks")
async def thanks(request: web.Request) -> web.Response:
    found = issue_id(request.query.get("id", ""))
    reference = f" Your reference is {display_key(found)}." if found is not None else ""
    return aiohttp_jinja2.render_template(
        "message.html",
        request,
        {"heading": "Thank you", "text": f"Your report was received.{reference}", "status": 200},
    )


@routes.get("/issues/{id}")
async def issue_page(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    found = issue_id(raw)
    issue = None
    if request.app[CONFIG].public_view and found is not None:
        issue = request.app[SERVICE].issue(found)
    if issue is None:
        raise NotFound("There is no such issue.", {"id": raw})
    context = {
        "issue": issue,
        "just_reported": request.query.get("reported") == "1",
        "key": display_key(issue.id),
        "description": markdown(issue.description) if issue.description.strip() else "",
        "custom_fields": [(k, field_value(v)) for k, v in issue.custom_fields.items()],
        "images": [
            attachment_dict(issue.id, a)
            for a in issue.attachments
            if a.content_type in INLINE_TYPES
        ],
        "files": [
            attachment_dict(issue.id, a)
            for a in issue.attachments
            if a.content_type not in INLINE_TYPES
        ],
        "comments": [
            {"author": c.author, "created_at": c.created_at, "html": markdown(c.text)}
            for c in issue.comments
        ],
    }
    return aiohttp_jinja2.render_template("issue.html", request, context)


@routes.get("/uploads/{id}/{filename}")
async def serve_upload(request: web.Request) -> web.StreamResponse:
    raw_id, filename = request.match_info["id"], request.match_info["filename"]
    service = request.app[SERVICE]
    found = issue_id(raw_id)
    issue = service.issue(found) if found is not None else None
    attachment = (
        next((a for a in issue.attachments if a.filename == filename), None) if issue else None
    )
    path = service.uploads.path(issue.id, filename) if issue and attachment else None
    if attachment is None or path is None or not path.is_file():
        raise NotFound("There is no such file.", {"id": raw_id, "filename": filename})
    # Stored types come from sniffing (hydraissue.uploads.sniff): never HTML or SVG.
    inline = attachment.content_type in INLINE_TYPES
    headers = {
        "Content-Type": attachment.content_type,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Content-Disposition": "inline" if inline else content_disposition(attachment.name),
        "Cache-Control": "private, max-age=3600",
    }
    return web.FileResponse(path, headers=headers)


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback name and the real one per RFC 6266."""
    fallback = "".join(
        ch if ch.isascii() and (ch.isalnum() or ch in "._- ") else "_" for ch in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
