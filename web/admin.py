"""The admin dashboard's triage pages: the issue list, the review queue, an issue's
page, and the actions taken from them.

Every action is a command through the service, as the API's, with the actor ``admin``:
the same events, webhooks and audit trails. Pages read from memory; the list renders
one page of rows from the index, never all issues.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp_jinja2
import orjson
from aiohttp import web
from markupsafe import Markup
from multidict import MultiMapping

from hydraissue import parse
from hydraissue.commands import Actor, Command, DeleteIssue, RejectPlan, UpdateIssue
from hydraissue.decide import transition_allowed
from hydraissue.errors import DomainError, Invalid
from hydraissue.model import CATEGORIES, PRIORITIES, STAGES, STATUSES, Issue, display_key
from projections.query import PARAMS, parse_list_query
from projections.rows import IndexRow
from web import feed
from web.admin_auth import admin_of, see_other
from web.api import issue_id_of
from web.keys import ISSUE_JSON, SERVICE
from web.render import ago, epoch, field_value, issue_view, markdown
from web.responses import json_response

routes = web.RouteTableDef()
ADMIN = Actor("admin")
PAGE = 50
SORTS = ("-updated", "updated", "-created", "created", "priority")
LIST_PARAMS = (*PARAMS, "view", "bulk_done", "refused")
MESSAGES = ("bulk_done", "refused")  # what the last action said, shown once


# -- the list ------------------------------------------------------------------------------


def _list_params(query: MultiMapping[str]) -> dict[str, str]:
    """The URL's filters as the list query takes them: repeated keys (several statuses
    ticked) joined with commas, empty ones (a filter left at "any") dropped."""
    params: dict[str, str] = {}
    for key in dict.fromkeys(query.keys()):
        values = [v.strip() for v in query.getall(key) if v.strip()]
        if values:
            params[key] = ",".join(values)
    unknown = sorted(set(params) - set(LIST_PARAMS))
    if unknown:
        raise Invalid(unknown[0], f"unknown filter; the list takes {', '.join(LIST_PARAMS)}")
    return params


def _row(row: IndexRow) -> dict[str, Any]:
    last = row.nims[-1] if row.nims else None
    return {
        "id": row.id,
        "key": display_key(row.id),
        "title": row.title,
        "project": row.project,
        "status": row.status,
        "priority": row.priority,
        "category": row.category,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "attachments": row.attachments,
        "review": row.status == "proposed",
        "last_nim": f"{last[0]}: {last[1]}" if last else None,
    }


PAGES = 128  # list pages kept whole (a page is about 30 KB)


class RowHtml:
    """List rows as HTML, kept per issue for its state shown last (its seq), the age
    filled in per page.

    Built here rather than in the template, and kept: Jinja's lookups and escaping per
    cell made a page of 50 rows 10x slower than the JSON list page of the same filter.
    """

    def __init__(self, limit: int = 30_000) -> None:
        self.limit = limit
        # per issue id: the seq it was rendered at, the row's HTML before its age, when
        # it was created, the rest (keyed by the id alone: an int hashes cheaper than an
        # (id, seq) tuple, and an issue's older states go at once); the least recently
        # shown go first (emptying it when full, as before, halved the hits once the
        # open issues outnumbered it: 100,000 issues, 27,900 open, and 20,000 kept then)
        self._rows: OrderedDict[int, tuple[int, str, float | None, str]] = OrderedDict()
        self._pages: OrderedDict[tuple[object, ...], Markup] = OrderedDict()

    def page(self, rows: list[IndexRow], now: datetime) -> Markup:
        """The rows of one page; a page of the same issue states within the same minute
        (ages are in minutes) is the same HTML, kept (at most ``PAGES`` of them)."""
        seconds = now.timestamp()
        key: tuple[object, ...] = (int(seconds // 60), *((row.id, row.seq) for row in rows))
        page = self._pages.get(key)
        if page is None:
            page = self._pages[key] = self._render(rows, seconds)
            while len(self._pages) > PAGES:
                self._pages.popitem(last=False)  # the oldest: no scan past deleted slots
        return page

    def _render(self, rows: list[IndexRow], seconds: float) -> Markup:
        parts: list[str] = []
        kept = self._rows
        for row in rows:
            cached = kept.get(row.id)
            if cached is None or cached[0] != row.seq:
                if cached is None and len(kept) >= self.limit:
                    kept.popitem(last=False)
                cached = kept[row.id] = (row.seq, *_row_html(_row(row)))
            kept.move_to_end(row.id)
            _, head, created, tail = cached
            parts += (head, row.created_at if created is None else ago(seconds - created), tail)
        return Markup("".join(parts))


class Fragments:
    """Parts of the list page that depend only on the filter (or on nothing): the
    filter form and the bulk form's choices, rendered once per distinct filter."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._parts: dict[tuple[object, ...], Markup] = {}

    def get(
        self,
        request: web.Request,
        name: str,
        context: dict[str, Any],
        key: tuple[object, ...] | None = None,
    ) -> Markup:
        """``key``: what of ``context`` varies, when the caller knows (``()`` for a
        context of constants); else a key of all of it, which costs more than the rest
        of the lookup."""
        if key is None:
            key = tuple((k, _hashable(v)) for k, v in sorted(context.items()))
        key = (name, *key)
        part = self._parts.get(key)
        if part is None:
            if len(self._parts) >= self.limit:
                self._parts.clear()
            env = aiohttp_jinja2.get_env(request.app)
            part = self._parts[key] = Markup(env.get_template(name).render(context))
        return part


def _hashable(value: Any) -> object:
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if isinstance(value, (list, set, frozenset)):
        return tuple(sorted(value, key=str))
    return value


ROW_HTML = web.AppKey("admin_row_html", RowHtml)
FRAGMENTS = web.AppKey("admin_fragments", Fragments)
CHOICES = {"statuses": STATUSES, "priorities": PRIORITIES, "categories": CATEGORIES}


# As character references: a row of ASCII alone is kept at a byte a character (a "—"
# made Python keep the whole row at two), and the kept rows are most of the admin's memory
DASH = "&#8212;"
CLIP = "&#128206;"


def _row_html(r: dict[str, Any]) -> tuple[str, float | None, str]:
    """One list row, around its age: (before, created at in epoch seconds, after)."""
    i, key = r["id"], escape(r["key"])
    badges = ""
    if r["attachments"]:
        badges += f'<span class="badge" title="attachments">{CLIP} {r["attachments"]}</span>'
    if r["review"]:
        badges += '<span class="badge review">plan to review</span>'
    if r["last_nim"]:
        badges += f'<span class="badge nim" dir="auto">{escape(r["last_nim"])}</span>'
    return (
        f'<tr data-id="{i}"><td><input type="checkbox" name="id" value="{i}" form="bulk" '
        f'aria-label="Select {key}"></td><td class="title"><a href="/admin/issues/{i}">'
        f'<span class="key">{key}</span> <span dir="auto">{escape(r["title"])}</span></a>'
        f'{badges}</td><td dir="auto">{escape(r["project"]) if r["project"] else DASH}</td>'
        f'<td><span class="status status-{r["status"]}">{r["status"]}</span></td>'
        f"<td>{r['priority'] or DASH}</td><td>{r['category']}</td>"
        f'<td><time datetime="{escape(r["created_at"])}">',
        epoch(r["created_at"]),
        "</time></td></tr>\n",
    )


@functools.lru_cache(maxsize=256)
def counts_html(numbers: tuple[int, ...], selected: frozenset[str]) -> Markup:
    """The count of each status, as links: the same until a status changes, so rendered
    once for each (counts, selection) instead of by the template per page (the
    template's loop, 36 escapes, was about a tenth of a list page's time)."""
    items = []
    for status, count in zip(STATUSES, numbers, strict=True):
        css = f"count status-{status} on" if status in selected else f"count status-{status}"
        items.append(
            f'  <li><a href="/admin?status={status}" class="{css}">'
            f"<span>{status}</span> <strong>{count}</strong></a></li>\n"
        )
    return Markup(f'<ul class="counts" aria-label="Issues per status">\n{"".join(items)}</ul>')


def _link(params: Mapping[str, str], **changes: Any) -> str:
    merged = {**params, **{k: str(v) for k, v in changes.items() if v is not None}}
    for key in [k for k, v in changes.items() if v is None]:
        merged.pop(key, None)
    return "/admin?" + urlencode(merged) if merged else "/admin"


@routes.get("/admin")
async def issue_list(request: web.Request) -> web.Response:
    params = _list_params(request.query)
    view = params.pop("view", "")
    for key in MESSAGES:
        params.pop(key, None)
    if view == "review":  # plans awaiting a person, oldest first
        params = {"status": "proposed", "sort": "created", **params}
    params.setdefault("sort", "-updated")
    params.setdefault("limit", str(PAGE))
    query = parse_list_query(params)
    service = request.app[SERVICE]
    total, ids = service.query(query)
    live = service.read_model.live_rows(ids)
    stats = service.read_model.stats
    fragments = request.app[FRAGMENTS]
    counts = stats.status_counts()
    selected = set(query.statuses or ())
    filters = {k: v for k, v in params.items() if k != "offset"}
    base = {**filters, "view": view} if view else filters  # what the page links keep
    paged = f"/admin?{urlencode(base)}&offset=" if base else "/admin?offset="  # once a page
    filtering = any(k not in ("sort", "limit") for k in params) and view != "review"
    projects = stats.project_names()
    context = {
        "admin": admin_of(request),
        "rows": live,
        "rows_html": request.app[ROW_HTML].page(live, datetime.now(UTC)),
        "total": total,
        "offset": query.offset,
        "limit": query.limit,
        "params": params,
        "view": view,
        "selected": selected,
        "counts_html": counts_html(tuple(counts[s] for s in STATUSES), frozenset(selected)),
        "filters_html": fragments.get(
            request,
            "admin/_filters.html",
            {
                **CHOICES,
                # the form shows the filter, not the page: one fragment for all offsets
                "params": filters,
                "view": view,
                "selected": selected,
                "filtering": filtering,
                "projects": projects,
                "stages": tuple(STAGES),
                "sorts": SORTS,
            },
            # what varies (the rest are constants): cheaper than a key of every item
            key=(tuple(filters.items()), view, frozenset(selected), filtering, tuple(projects)),
        ),
        "bulk_options_html": fragments.get(
            request,
            "admin/_bulk_value.html",
            CHOICES,
            key=(),  # constants: its name alone
        ),
        "prev": f"{paged}{max(0, query.offset - query.limit)}" if query.offset else None,
        "next": f"{paged}{query.offset + query.limit}"
        if query.offset + query.limit < total
        else None,
        "bulk": request.query.get("bulk_done"),
        "refused": request.query.get("refused"),
        "back": request.path_qs,
    }
    return aiohttp_jinja2.render_template("admin/list.html", request, context)


BOARD_CARDS = 50  # per column; the column's count links to the full list


@routes.get("/admin/board")
async def board(request: web.Request) -> web.Response:
    """One column per status, the most recently changed cards first; each card offers
    the moves the lifecycle allows (a form; drag and drop with JavaScript)."""
    params = _list_params(request.query)
    unknown = sorted(set(params) - {"project", "category", "priority", "q", *MESSAGES})
    if unknown:
        raise Invalid(unknown[0], "unknown filter; the board takes project, category, priority, q")
    for key in MESSAGES:
        params.pop(key, None)
    service = request.app[SERVICE]
    columns = []
    for status in STATUSES:
        query = parse_list_query(
            {**params, "status": status, "sort": "-updated", "limit": str(BOARD_CARDS)}
        )
        total, ids = service.query(query)
        cards = [_row(r) for r in service.read_model.live_rows(ids)]
        for card in cards:
            card["moves"] = [s for s in STATUSES if s != status and transition_allowed(status, s)]
        columns.append(
            {
                "status": status,
                "total": total,
                "cards": cards,
                "more": _link(params, status=status) if total > len(cards) else None,
            }
        )
    context = {
        "admin": admin_of(request),
        "columns": columns,
        "params": params,
        "notice": request.query.get("bulk_done", ""),
        "refused": request.query.get("refused", ""),
    }
    return aiohttp_jinja2.render_template("admin/board.html", request, context)


@routes.get("/admin/events")
async def admin_events(request: web.Request) -> web.StreamResponse:
    """The live events stream for the pages' "changed" notices: a browser's EventSource
    sends the session cookie, not the api token."""
    return await feed.events_feed(request)


@routes.get("/admin/review")
async def review(request: web.Request) -> web.StreamResponse:
    return see_other("/admin?view=review")


# -- one issue -----------------------------------------------------------------------------


def _history_entry(event: Any) -> dict[str, Any]:
    data = event.data
    changes: list[tuple[str, str, str]] = []
    if event.type == "issue.updated":
        previous = data.get("previous", {})
        for name, value in data.get("changes", {}).items():
            changes.append((name, _short(previous.get(name)), _short(value)))
    summary = {
        "issue.created": "created the issue",
        "issue.imported": "imported the issue",
        "issue.updated": "changed " + ", ".join(c[0] for c in changes) if changes else "updated",
        "comment.added": "commented",
        "nim_action.recorded": f"recorded the nim action “{data.get('action', '')}”",
        "attachment.added": f"attached {data.get('name') or data.get('filename') or 'a file'}",
        "issue.deleted": "deleted the issue",
    }.get(event.type, event.type)
    actor = event.actor.kind + (f" ({event.actor.name})" if event.actor.name else "")
    return {"at": event.at, "actor": actor, "summary": summary, "changes": changes}


def _short(value: Any) -> str:
    text = field_value(value) if value is not None else "—"
    return text if len(text) <= 120 else text[:119] + "…"


async def _issue_context(request: web.Request, issue: Issue) -> dict[str, Any]:
    service = request.app[SERVICE]
    history = await service.history(issue.id)
    return {
        **issue_view(issue),
        "admin": admin_of(request),
        "plan": markdown(issue.plan) if issue.plan and issue.plan.strip() else "",
        "custom_json": orjson.dumps(issue.custom_fields, option=orjson.OPT_INDENT_2).decode()
        if issue.custom_fields
        else "{}",
        "nim_actions": list(reversed(issue.nim_actions)),
        "history": [_history_entry(e) for e in reversed(history)],
        "moves": [s for s in STATUSES if s != issue.status and transition_allowed(issue.status, s)],
        "statuses": STATUSES,
        "priorities": PRIORITIES,
        "categories": CATEGORIES,
        "error": "",
        "notice": request.query.get("done", ""),
    }


@routes.get("/admin/issues/{id}")
async def issue_page(request: web.Request) -> web.Response:
    issue = await request.app[SERVICE].get(issue_id_of(request))
    context = await _issue_context(request, issue)
    return aiohttp_jinja2.render_template("admin/issue.html", request, context)


@routes.get("/admin/issues/{id}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    issue = await request.app[SERVICE].get(issue_id_of(request))
    context = {"admin": admin_of(request), "issue": issue, "key": display_key(issue.id)}
    return aiohttp_jinja2.render_template("admin/delete.html", request, context)


# -- actions -------------------------------------------------------------------------------


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


async def _form(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}


def _etag(form: Mapping[str, str]) -> str | None:
    """The issue state the form was rendered from: a save over a newer one is refused."""
    return form.get("etag") or None


async def _act(
    request: web.Request, issue_id: int, command: Command, done: str
) -> web.StreamResponse:
    """Run the command as the admin; on success back to the issue (or its JSON for a
    script), on refusal the issue's page again with the reason and the status."""
    try:
        outcome = await request.app[SERVICE].handle(command, ADMIN)
    except DomainError as exc:
        return await _refused(request, issue_id, exc)
    if _wants_json(request):
        issue = outcome.issue
        return json_response(request.app[ISSUE_JSON].render(issue), headers={"ETag": issue.etag})
    return see_other(f"/admin/issues/{issue_id}?{urlencode({'done': done})}")


async def _refused(request: web.Request, issue_id: int, exc: DomainError) -> web.Response:
    """A refused action: the error as JSON for a script, else the issue's page with why."""
    issue = request.app[SERVICE].issue(issue_id)
    if _wants_json(request) or issue is None:
        raise exc
    context = await _issue_context(request, issue)
    context["error"] = _reason(exc)
    return aiohttp_jinja2.render_template("admin/issue.html", request, context, status=exc.status)


def _reason(exc: DomainError) -> str:
    if exc.status == 412:
        return (
            "This issue changed since you opened it (someone else saved first). "
            "Nothing was saved: look at the changes below and try again."
        )
    return exc.message


@routes.post("/admin/issues/{id}/status")
async def set_status(request: web.Request) -> web.StreamResponse:
    issue_id = issue_id_of(request)
    form = await _form(request)
    command = parse.update_issue(issue_id, {"status": form.get("status", "")}, _etag(form))
    if form.get("back") == "board":
        return await _board_move(request, issue_id, command)
    return await _act(request, issue_id, command, f"Moved to {command.changes['status']}.")


async def _board_move(request: web.Request, issue_id: int, command: UpdateIssue) -> web.Response:
    """A move from the board: back to the board, with what happened."""
    try:
        await request.app[SERVICE].handle(command, ADMIN)
    except DomainError as exc:
        said = {"refused": f"{display_key(issue_id)} not moved: {exc.message}"}
    else:
        said = {"bulk_done": f"{display_key(issue_id)} moved to {command.changes['status']}."}
    return see_other(f"/admin/board?{urlencode(said)}")


@routes.post("/admin/issues/{id}/accept")
async def accept_plan(request: web.Request) -> web.StreamResponse:
    issue_id = issue_id_of(request)
    form = await _form(request)
    command = UpdateIssue(issue_id, {"status": "accepted"}, _etag(form))
    return await _act(request, issue_id, command, "Plan accepted.")


@routes.post("/admin/issues/{id}/reject")
async def reject_plan(request: web.Request) -> web.StreamResponse:
    issue_id = issue_id_of(request)
    form = await _form(request)
    reason = parse.text(form.get("reason"), "reason", required=True)
    command = RejectPlan(issue_id, reason, _etag(form))
    return await _act(request, issue_id, command, "Plan rejected.")


@routes.post("/admin/issues/{id}/comment")
async def comment(request: web.Request) -> web.StreamResponse:
    issue_id = issue_id_of(request)
    form = await _form(request)
    command = parse.add_comment(issue_id, {"author": "admin", "text": form.get("text")})
    return await _act(request, issue_id, command, "Comment added.")


EDITABLE = ("title", "description", "priority", "category", "project", "custom_fields")


@routes.post("/admin/issues/{id}/edit")
async def edit(request: web.Request) -> web.StreamResponse:
    issue_id = issue_id_of(request)
    form = await _form(request)
    body: dict[str, Any] = {k: form[k] for k in EDITABLE if k in form}
    for name in ("priority", "project"):
        if name in body and not body[name].strip():
            body[name] = None
    if "custom_fields" in body:
        raw = body["custom_fields"].strip() or "{}"
        try:
            body["custom_fields"] = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Invalid("custom_fields", f"not a JSON object ({exc})") from None
        parse.exact_numbers(raw, body["custom_fields"], "custom_fields")
    command = parse.update_issue(issue_id, body, _etag(form))
    return await _act(request, issue_id, command, "Saved.")


@routes.post("/admin/issues/{id}/delete")
async def delete(request: web.Request) -> web.StreamResponse:
    issue_id = issue_id_of(request)
    form = await _form(request)
    if form.get("confirm") != "yes":
        return see_other(f"/admin/issues/{issue_id}/delete")
    try:
        await request.app[SERVICE].handle(DeleteIssue(issue_id, _etag(form)), ADMIN)
    except DomainError as exc:
        return await _refused(request, issue_id, exc)
    if _wants_json(request):
        return web.Response(status=204)
    return see_other(f"/admin?{urlencode({'bulk_done': f'{display_key(issue_id)} deleted.'})}")


# -- bulk ------------------------------------------------------------------------------------

BULK_FIELDS = ("status", "priority", "category")


@routes.post("/admin/bulk")
async def bulk(request: web.Request) -> web.StreamResponse:
    """One change for the selected issues, each checked by the lifecycle on its own."""
    form = await request.post()
    ids = [parse.issue_id(str(v)) for v in form.getall("id", [])]
    field = str(form.get("field") or "")
    value = str(form.get("value") or "")
    if field not in BULK_FIELDS:
        raise Invalid("field", f"choose one of {', '.join(BULK_FIELDS)}")
    if not ids or None in ids:
        raise Invalid("id", "select at least one issue")
    body = {field: value if value or field == "status" else None}
    service = request.app[SERVICE]
    changed: list[str] = []
    refused: list[str] = []
    for issue_id in ids:
        assert issue_id is not None
        try:
            outcome = await service.handle(parse.update_issue(issue_id, body), ADMIN)
            if outcome.events:
                changed.append(display_key(issue_id))
        except DomainError as exc:
            refused.append(f"{display_key(issue_id)}: {exc.message}")
    said = {"bulk_done": f"{field} set to {value or 'none'} on {len(changed)} issue(s)."}
    if refused:
        said["refused"] = "Refused: " + "; ".join(refused)
    back = str(form.get("back") or "/admin")
    if not back.startswith("/admin"):
        back = "/admin"
    # what the last action said replaces what an earlier one said
    path, _, query = back.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query) if k not in MESSAGES]
    return see_other(f"{path}?{urlencode([*kept, *said.items()])}")
