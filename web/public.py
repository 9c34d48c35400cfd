"""Public pages: the report form, the issue view and uploaded files. No login.

One report per submit: the rendered form carries a one-time token (``form_token``);
every submit with it is the same report (its idempotency key is the token), so a
double tap, a back-and-resubmit or a retry after a lost answer gets the first result.
Nothing typed or chosen is lost: a refused submission re-shows the form with what was
typed, and the files that arrived are kept under the token (``web.staging``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from hydraissue.commands import Actor, CreateIssue
from hydraissue.errors import NotFound, TooLarge, TooManyRequests
from hydraissue.model import CATEGORIES, Attachment, Issue, display_key
from hydraissue.parse import issue_id
from hydraissue.report import (
    FILE_FIELD,
    REMOVE_FIELD,
    TOKEN_FIELD,
    FormInvalid,
    ReportLimits,
    extra_fields,
    is_spam,
    parse_report,
    shorten_title,
)
from hydraissue.service import Idempotency
from hydraissue.uploads import INLINE_TYPES, Received, generated_name, human
from web.clientip import client_ip
from web.forms import FormPost, read_form, upload_limits
from web.keys import CONFIG, KEY_LOCKS, RATE_LIMITER, SERVICE, TRUSTED_PROXIES
from web.middleware import fingerprint_form, holding, wants_json
from web.render import issue_view
from web.representation import absolute_issue_dict
from web.responses import json_response, public_base
from web.staging import Kept, Staging, new_token, valid_token

routes = web.RouteTableDef()

FORM_FINGERPRINT = "form-token"  # every submit with one token is the same report
DECOY_TTL = 3600.0
MAX_DECOYS = 1000


class Decoys:
    """What a program that filled the honeypot believes it created: an issue that only
    it can see (by its address), for an hour, so its answer and the page it is sent to
    look like a real report's. Its id is reserved from the store, so it is never a real
    issue's; to everyone else that id is a 404, like a deleted issue."""

    def __init__(self) -> None:
        self._items: OrderedDict[int, tuple[float, str, Issue]] = OrderedDict()

    def add(self, client: str, issue: Issue) -> None:
        self._items[issue.id] = (time.monotonic(), client, issue)
        while len(self._items) > MAX_DECOYS:
            self._items.popitem(last=False)

    def get(self, found: int, client: str) -> Issue | None:
        item = self._items.get(found)
        if item is None or item[1] != client or time.monotonic() - item[0] > DECOY_TTL:
            return None
        return item[2]


DECOYS = web.AppKey("decoys", Decoys)


def report_limits(request: web.Request) -> ReportLimits:
    config = request.app[CONFIG]
    return ReportLimits(
        description=config.report_max_description,
        custom_fields_bytes=config.report_max_custom_fields_bytes,
        custom_fields=config.report_max_custom_fields,
        extra_fields=config.report_max_extra_fields,
    )


def is_machine(request: web.Request) -> bool:
    """A program, not a person at the form: it asks for JSON, or its post does not ask
    for HTML (browsers always do; the headset app and curl do not)."""
    return wants_json(request) or "text/html" not in request.headers.get("Accept", "")


def render_form(
    request: web.Request,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status: int = 200,
    *,
    token: str | None = None,
    kept: Sequence[Kept] = (),
    wait: int | None = None,
) -> web.Response:
    limits = report_limits(request)
    context = {
        "values": values,
        "errors": errors or {},
        "extras": [(name, values[name]) for name in extra_fields(values)],
        "projects": request.app[SERVICE].read_model.known_projects(),
        "categories": CATEGORIES,
        "limits": upload_limits(request.app[CONFIG]),
        "report_limits": limits,
        "token": token or new_token(),
        "kept": kept,
        "remove_field": REMOVE_FIELD,
        "wait": wait,
    }
    response = aiohttp_jinja2.render_template("report.html", request, context, status=status)
    response.headers["Cache-Control"] = "no-store"  # a token is for one report
    if wait is not None:
        response.headers["Retry-After"] = str(wait)
    return response


@routes.get("/")
@routes.get("/report")
async def report_form(request: web.Request) -> web.Response:
    return render_form(request, {"project": request.query.get("project", "")})


@routes.post("/report")
async def submit_report(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    client = client_ip(request, request.app[TRUSTED_PROXIES])
    if wants_json(request):
        # A program gets its 429 before it uploads anything (people get their form back).
        wait = request.app[RATE_LIMITER].peek(client)
        if wait:
            raise _too_many(wait)
    post = await read_form(
        request, service.uploads, upload_limits(request.app[CONFIG]), FILE_FIELD, keep_files=True
    )
    token = valid_token(post.fields.get(TOKEN_FIELD))
    if token is None:
        return await _submit(request, client, post, None)
    # One submit of a token at a time: a double tap's second post waits for the first.
    async with holding(request.app[KEY_LOCKS], f"form:{token}"):
        return await _submit(request, client, post, token)


def _too_many(wait: int) -> TooManyRequests:
    return TooManyRequests(
        f"Too many reports from your address. Please try again in {wait} seconds.", wait
    )


async def _submit(
    request: web.Request, client: str, post: FormPost, token: str | None
) -> web.StreamResponse:
    service = request.app[SERVICE]
    staging = Staging(service.uploads.root)
    fields = post.fields
    idem: Idempotency | None = None
    if token is not None:
        idem = Idempotency(f"form:{token}", FORM_FINGERPRINT)
        record = service.key(idem.key)
        if record is not None:  # this form already made its report: the first result
            service.uploads.discard(post.files)
            staging.clear(token)
            first = service.issue(record.issue_id)
            if first is None or first.deleted:
                raise NotFound(f"{display_key(record.issue_id)} does not exist any more")
            return _created(request, first, replayed=True)
    kept: list[Kept] = []
    if token is not None:
        removed = [name.partition(":")[2] for name in fields if name.startswith(REMOVE_FIELD)]
        kept = staging.remove(token, removed) if removed else staging.kept(token)

    def refuse(errors: dict[str, str], status: int, wait: int | None = None) -> web.Response:
        """The form again, with what was typed and every file received kept."""
        held = staging.keep(token, post.files) if token is not None else []
        if token is None:
            service.uploads.discard(post.files)
        values = {k: v for k, v in fields.items() if not k.startswith(REMOVE_FIELD)}
        return render_form(request, values, errors, status, token=token, kept=held, wait=wait)

    if post.too_large is not None:
        if wants_json(request):
            service.uploads.discard(post.files)
            raise post.too_large
        return refuse({"attachments": _kept_note(post.too_large.message, post.files)}, 413)
    if is_spam(fields):
        return await _decoy(request, client, post, kept, token)
    try:
        command = parse_report(
            shorten_title(fields) if is_machine(request) else fields, report_limits(request)
        )
    except FormInvalid as exc:
        if wants_json(request):
            service.uploads.discard(post.files)
            raise
        return refuse(exc.errors, 400)
    files = [*staging.received(token, kept), *post.files] if token is not None else post.files
    too_many = _over_limits(request, files)
    if too_many is not None:
        if wants_json(request):
            service.uploads.discard(post.files)
            raise too_many
        return refuse({"attachments": too_many.message}, 413)
    limiter = request.app[RATE_LIMITER]
    wait = limiter.take(client)
    if wait:
        if wants_json(request):
            service.uploads.discard(post.files)
            raise _too_many(wait)
        return refuse({}, 429, wait)
    if idem is None:
        idem = fingerprint_form(request, fields, files)
    try:
        outcome = await service.create_with_attachments(
            command, files, Actor("public", command.reporter), idem
        )
    except BaseException:
        limiter.refund(client)  # nothing was created
        raise
    if outcome.replayed is not None:
        limiter.refund(client)
    if token is not None:
        staging.clear(token)
    return _created(request, outcome.issue, replayed=outcome.replayed is not None)


def _kept_note(message: str, files: Sequence[Received]) -> str:
    return message if not files else f"{message}; the other files are kept below"


def _over_limits(request: web.Request, files: Sequence[Received]) -> TooLarge | None:
    """Kept files and new ones together within one report's limits."""
    limits = upload_limits(request.app[CONFIG])
    if len(files) > limits.max_files:
        return TooLarge(
            f"too many files: at most {limits.max_files} per report; remove some",
            {"field": "attachments", "limit": limits.max_files},
        )
    if sum(f.size for f in files) > limits.max_request_bytes:
        return TooLarge(
            f"attachments total more than {human(limits.max_request_bytes)}; remove some",
            {"field": "attachments", "limit": limits.max_request_bytes},
        )
    return None


def _created(request: web.Request, issue: Issue, *, replayed: bool) -> web.Response:
    """The answer to a created report (or the decoy of one: the same in every way)."""
    url = f"/issues/{issue.id}"
    config = request.app[CONFIG]
    if wants_json(request):
        body: dict[str, Any] = absolute_issue_dict(public_base(request), issue)
        # The public view's address; null when that view is switched off.
        body["url"] = f"{public_base(request)}{url}" if config.public_view else None
        headers = {"Location": url}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return json_response(body, status=201, headers=headers)
    target = f"{url}?reported=1" if config.public_view else f"/report/thanks?id={issue.id}"
    raise web.HTTPSeeOther(target, headers={"Idempotent-Replayed": "true"} if replayed else None)


async def _decoy(
    request: web.Request,
    client: str,
    post: FormPost,
    kept: Sequence[Kept],
    token: str | None,
) -> web.Response:
    """The honeypot was filled: nothing is stored, and the answer cannot be told apart
    from a real report's (status, headers, body shape, the page it leads to)."""
    service = request.app[SERVICE]
    service.uploads.discard(post.files)
    if token is not None:
        Staging(service.uploads.root).clear(token)
    wait = request.app[RATE_LIMITER].take(client)  # limited like a real report
    if wait:
        if wants_json(request):
            raise _too_many(wait)
        return render_form(request, post.fields, {}, 429, token=token, wait=wait)
    try:
        command = parse_report(shorten_title(post.fields), report_limits(request))
    except FormInvalid:
        command = CreateIssue(title=post.fields.get("title", "").strip()[:500] or "Report")
    now = service.clock()
    files = [(k.name, k.size, k.content_type) for k in kept]
    files += [(f.name, f.size, f.content_type) for f in post.files]
    issue = Issue(
        id=service.store.reserve_id(),
        title=command.title,
        description=command.description,
        project=command.project,
        category=command.category,
        priority=None,
        status="open",
        reporter=command.reporter,
        custom_fields=command.custom_fields,
        plan=None,
        created_at=now,
        updated_at=now,
        seq=1 + len(files),
        attachments=tuple(
            Attachment(name, generated_name(name), size, kind, now) for name, size, kind in files
        ),
        status_at=now,
    )
    request.app[DECOYS].add(client, issue)
    return _created(request, issue, replayed=False)


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
            client = client_ip(request, request.app[TRUSTED_PROXIES])
            issue = request.app[DECOYS].get(found, client)
    if issue is None:
        raise NotFound("There is no such issue.", {"id": raw})
    context = {**issue_view(issue), "just_reported": request.query.get("reported") == "1"}
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
