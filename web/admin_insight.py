"""The admin dashboard's insight pages: charts of the pipeline (``/admin/stats``), the
quality report of a chosen window (``/admin/reports/quality``, also as Markdown and
CSV), the webhooks with their deliveries and actions (``/admin/webhooks``) and the
agents' activity and trails (``/admin/nims``).

Every figure comes from what the service already keeps: the stats index (counts, and
the sorted times the weekly counts are two binary searches in), the quality report,
the webhook registry and delivery journals, the agents' trails. Webhook actions are
the service calls the JSON API makes, so both behave the same.

The stats page's plan and stage figures come from the quality report of the last
twelve weeks, which reads the history of every issue touched in them (about a second
at 10,000 issues): it is kept per project, recomputed in the background when the
event log has grown, and shown with the time it was computed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
from aiohttp import web

from hydraissue.errors import Invalid, NotFound
from hydraissue.model import STATUSES, display_key
from hydraissue.service import IssueService
from hydraissue.targets import TargetRefused
from hydraissue.webhooks import parse_update
from projections.insight import WEEKS, stamp, week_starts, weekly
from projections.quality import csv as quality_csv
from projections.quality import markdown as quality_markdown
from web import charts
from web.admin_auth import admin_of, see_other
from web.insight_api import parse_moment
from web.keys import SERVICE
from web.params import known_params, known_query
from web.webhooks_api import redeliver_from

routes = web.RouteTableDef()
log = logging.getLogger(__name__)

FRESH_FOR = 30.0  # s: a stats report this young is shown even if events came since
STALE_LIMIT = 600.0  # s: one older than this (and out of date) is recomputed first
MAX_SCOPES = 32  # projects whose stats report is kept
RECENT_DELIVERIES = 20  # attempts shown per webhook
TRAIL_PAGE = 100
LISTED = 200  # issues listed per section of the quality page (the downloads have all)
STAGE_NAMES = {
    "open_to_groomed": "open → groomed",
    "proposed_to_decision": "proposed → decided",
    "accepted_to_done": "accepted → done",
}


# -- the stats page's quality figures, kept -------------------------------------------


@dataclass(slots=True)
class Figures:
    """What the stats page shows of a quality report (not its per-issue lists)."""

    since: str
    until: str
    acceptance: dict[str, Any]
    times: dict[str, Any]
    head: int  # the event log's head when it was computed
    made: float  # time.monotonic() then
    at: str  # and as a stamp


@dataclass(slots=True)
class FigureCache:
    """The last twelve weeks' quality report per project (None: every project)."""

    figures: dict[str | None, Figures] = field(default_factory=dict)
    running: dict[str | None, asyncio.Task[Figures]] = field(default_factory=dict)

    async def get(self, service: IssueService, project: str | None) -> tuple[Figures, bool]:
        """The figures, and whether events were committed since they were computed."""
        found = self.figures.get(project)
        if found is not None:
            current = found.head == service.head
            age = time.monotonic() - found.made
            if age < FRESH_FOR or (current and age < STALE_LIMIT):
                return found, not current
            if current or age < STALE_LIMIT:  # unchanged but old: the window moved on
                self.refresh(service, project)
                return found, not current
        return await asyncio.shield(self.refresh(service, project)), False

    def refresh(self, service: IssueService, project: str | None) -> asyncio.Task[Figures]:
        """Compute the figures again, unless that is already under way."""
        task = self.running.get(project)
        if task is None:
            task = asyncio.create_task(self._compute(service, project), name="admin-stats")
            self.running[project] = task
            task.add_done_callback(lambda done: self._finished(project, done))
        return task

    async def idle(self) -> None:
        """Wait for every recomputation under way (tests)."""
        while self.running:
            await asyncio.wait(list(self.running.values()))

    async def _compute(self, service: IssueService, project: str | None) -> Figures:
        head = service.head
        now = datetime.now(UTC)
        report = await service.quality(stamp(week_starts(now)[0]), stamp(now), project)
        figures = Figures(
            report.since,
            report.until,
            report.acceptance,
            report.times,
            head,
            time.monotonic(),
            stamp(now),
        )
        self.figures.pop(project, None)
        self.figures[project] = figures
        while len(self.figures) > MAX_SCOPES:
            del self.figures[next(iter(self.figures))]
        return figures

    def _finished(self, project: str | None, task: asyncio.Task[Figures]) -> None:
        if self.running.get(project) is task:
            del self.running[project]
        if not task.cancelled() and task.exception() is not None:
            log.warning("admin stats: the quality figures failed", exc_info=task.exception())

    async def stop(self) -> None:
        """At shutdown: recomputations under way are cancelled, not left running."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


FIGURES = web.AppKey("admin_figures", FigureCache)


async def stop_figures(app: web.Application) -> None:
    await app[FIGURES].stop()


# -- /admin/stats -----------------------------------------------------------------------


def _hours(value: float | None) -> str:
    return "–" if value is None else f"{charts.number(value)} h"


def _stage(name: str) -> str:
    return STAGE_NAMES.get(name, name.replace("_", " "))


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.0f}%"


@routes.get("/admin/stats")
async def stats_page(request: web.Request) -> web.Response:
    known_query(request, ("project",))
    service = request.app[SERVICE]
    index = service.read_model.stats
    overall = index.stats()
    projects = list(overall["by_project"])
    project = request.query.get("project", "").strip() or None
    if project is not None and project not in overall["by_project"]:
        raise Invalid("project", f"no issue is in the project {project!r}")
    scoped = index.stats(project) if project else overall
    now = datetime.now(UTC)
    weeks = weekly(index.created.get(project, []), index.done.get(project, []), now)
    figures, stale = await request.app[FIGURES].get(service, project)
    by_status = [(s, scoped["by_status"][s]) for s in STATUSES]
    by_project = sorted(overall["by_project"].items(), key=lambda item: (-item[1], item[0]))
    agents = [
        (name, c["rate"], c["accepted"], c["rejected"])
        for name, c in figures.acceptance["by_agent"].items()
    ]
    stages = [
        (
            STAGE_NAMES.get(name, name.replace("_", " ")),
            s["median_hours"],
            s["p90_hours"],
            s["count"],
        )
        for name, s in figures.times.items()
    ]
    timed = [(name, median) for name, median, _, _ in stages if median is not None]
    scope = f" in {project}" if project else ""
    context = {
        "admin": admin_of(request),
        "project": project,
        "projects": projects,
        "stats": scoped,
        "by_status": by_status,
        "by_project": by_project,
        "weeks": weeks,
        "agents": agents,
        "acceptance": figures.acceptance,
        "stages": stages,
        "since": figures.since,
        "until": figures.until,
        "computed_at": figures.at,
        "stale": stale,
        "charts": {
            "status": charts.bars("by-status", f"Issues by status{scope}", by_status),
            "project": charts.bars("by-project", "Issues by project", by_project)
            if not project
            else None,
            "weekly": charts.columns(
                "weekly",
                f"Issues created and done per week, last {WEEKS} weeks{scope}",
                [f"week of {w.start}" for w in weeks],
                [("created", [w.created for w in weeks]), ("done", [w.done for w in weeks])],
                ticks=[w.start[5:] for w in weeks],
            ),
            "acceptance": charts.bars(
                "acceptance",
                f"Plan acceptance rate per agent, last {WEEKS} weeks{scope}",
                [(name, (rate or 0) * 100) for name, rate, _, _ in agents],
                top=100,
                values=[f"{_percent(rate)} ({a} of {a + r})" for _, rate, a, r in agents],
                empty="No plan was accepted or rejected in these weeks.",
            ),
            "stages": charts.bars(
                "stages",
                f"Median time in each stage, last {WEEKS} weeks{scope}",
                timed,
                values=[_hours(m) for _, m in timed],
                empty="No issue went through a stage in these weeks.",
            ),
        },
        "hours": _hours,
        "percent": _percent,
    }
    return aiohttp_jinja2.render_template("admin/stats.html", request, context)


# -- /admin/reports/quality ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    since: str
    until: str
    project: str | None
    form: dict[str, str]  # what the form shows (and the download links carry)


def _window(query: Mapping[str, str]) -> Window:
    known_params(query, ("since", "until", "project"))
    today = datetime.now(UTC).date()
    raw_until = query.get("until", "").strip() or today.isoformat()
    raw_since = query.get("since", "").strip() or (today - timedelta(days=7)).isoformat()
    until = parse_moment(raw_until, "until", end_of_day=True)
    since = parse_moment(raw_since, "since")
    if since > until:
        raise Invalid("since", f"is after until ({since} > {until})")
    project = query.get("project", "").strip() or None
    form = {"since": raw_since, "until": raw_until, **({"project": project} if project else {})}
    return Window(since, until, project, form)


def _filename(window: Window, extension: str) -> str:
    scope = "".join(c for c in (window.project or "") if c.isalnum() or c in "-_")[:40]
    parts = ["quality", *([scope] if scope else []), window.since[:10], window.until[:10]]
    return "-".join(parts) + "." + extension


@routes.get("/admin/reports/quality")
async def quality_page(request: web.Request) -> web.Response:
    window = _window(request.query)
    service = request.app[SERVICE]
    report = await service.quality(window.since, window.until, window.project)
    known = list(service.read_model.stats.stats()["by_project"])
    query = urlencode(window.form)
    context = {
        "admin": admin_of(request),
        "form": window.form,
        "projects": known,
        "report": report,
        "stages": [(_stage(name), s) for name, s in report.times.items()],
        "refused": [
            {**r, "key": display_key(int(r["issue_id"]))}
            for r in report.refused_moves
            if str(r.get("issue_id", "")).isdigit()
        ],
        "shown": LISTED,
        "markdown_url": f"/admin/reports/quality.md?{query}",
        "csv_url": f"/admin/reports/quality.csv?{query}",
        "hours": _hours,
        "percent": _percent,
    }
    return aiohttp_jinja2.render_template("admin/quality.html", request, context)


DOWNLOADS = {"md": (quality_markdown, "text/markdown"), "csv": (quality_csv, "text/csv")}


@routes.get(r"/admin/reports/quality.{kind:md|csv}")
async def quality_download(request: web.Request) -> web.Response:
    """The report of the chosen window as a file: Markdown or CSV."""
    kind = request.match_info["kind"]
    render, content_type = DOWNLOADS[kind]
    window = _window(request.query)
    report = await request.app[SERVICE].quality(window.since, window.until, window.project)
    return web.Response(
        text=render(report),
        content_type=content_type,
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_filename(window, kind)}"'},
    )


# -- /admin/webhooks ----------------------------------------------------------------------


@routes.get("/admin/webhooks")
async def webhooks_page(request: web.Request) -> web.Response:
    known_query(request, ("done",))
    service = request.app[SERVICE]
    hooks = []
    for hook in service.webhooks.all():
        journal = await service.deliveries.journal(hook.id)
        attempts = list(reversed(journal.attempts))[:RECENT_DELIVERIES]
        recent = journal.recent
        hooks.append(
            {
                **hook.public_dict(),
                "queued": len(journal.pending),
                "attempts": [
                    {
                        **a.to_dict(),
                        "ok": a.ok,
                        "key": display_key(a.issue_id) if a.issue_id is not None else "",
                        "redeliver": a.delivery_id in recent,
                        "url": f"/admin/webhooks/{hook.id}/deliveries/"
                        f"{quote(a.delivery_id, safe='')}/redeliver",
                    }
                    for a in attempts
                ],
            }
        )
    context = {"admin": admin_of(request), "hooks": hooks, "notice": request.query.get("done")}
    return aiohttp_jinja2.render_template("admin/webhooks.html", request, context)


def _back(said: str) -> web.Response:
    return see_other(f"/admin/webhooks?{urlencode({'done': said})}")


@routes.post("/admin/webhooks/{id}/ping")
async def ping(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    hook = service.webhooks.get(request.match_info["id"])
    attempt = await service.deliveries.ping(hook)
    if attempt.ok:
        return _back(f"Ping to {hook.id}: HTTP {attempt.status} in {attempt.duration_ms:.0f} ms.")
    why = attempt.error or f"HTTP {attempt.status}"
    return _back(f"Ping to {hook.id} failed: {why}")


@routes.post("/admin/webhooks/{id}/active")
async def set_active(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    form = await request.post()
    raw = form.get("active")
    if raw not in ("true", "false"):
        raise Invalid("active", "must be true or false")
    active = raw == "true"
    try:
        hook = await service.update_webhook(
            request.match_info["id"], parse_update({"active": active})
        )
    except TargetRefused as exc:
        raise Invalid("url", str(exc)) from None
    return _back(f"{hook.id} {'activated' if hook.active else 'deactivated'}.")


@routes.post("/admin/webhooks/{id}/deliveries/{delivery_id}/redeliver")
async def redeliver(request: web.Request) -> web.StreamResponse:
    delivery = await redeliver_from(request)
    return _back(f"Delivery {delivery.id} of {delivery.webhook} queued again.")


# -- /admin/nims ---------------------------------------------------------------------------


def nim_url(name: str) -> str:
    return "/admin/nims/" + quote(name, safe="")


@routes.get("/admin/nims")
async def nims_page(request: web.Request) -> web.Response:
    known_query(request, ())
    trails = await request.app[SERVICE].trails()
    agents = [{**a, "url": nim_url(a["name"])} for a in trails.summary()]
    context = {
        "admin": admin_of(request),
        "agents": agents,
        "chart": charts.bars(
            "nim-activity",
            "Nim actions per agent",
            [(a["name"], a["actions"]) for a in agents],
            empty="No agent has recorded anything yet.",
        ),
    }
    return aiohttp_jinja2.render_template("admin/nims.html", request, context)


def _whole(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name, "").strip() or str(default)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise Invalid(name, f"must be a whole number, got {raw!r}")
    return int(raw)


@routes.get("/admin/nims/{name}")
async def nim_page(request: web.Request) -> web.Response:
    query = request.query
    known_params(query, ("action", "since", "until", "offset"))
    name = request.match_info["name"]
    since_raw, until_raw = query.get("since", "").strip(), query.get("until", "").strip()
    since = parse_moment(since_raw, "since") if since_raw else None
    until = parse_moment(until_raw, "until", end_of_day=True) if until_raw else None
    action = query.get("action", "").strip() or None
    offset = _whole(query, "offset", 0)
    trails = await request.app[SERVICE].trails()
    entries = trails.entries(name, action=action, since=since, until=until)
    if entries is None:
        raise NotFound(f"no agent {name!r} has done anything yet", {"name": name})
    summary = trails.agent_summary(name)
    form = {
        k: v for k, v in (("action", action or ""), ("since", since_raw), ("until", until_raw)) if v
    }
    base = nim_url(name)

    def page(at: int) -> str:
        params = {**form, **({"offset": str(at)} if at else {})}
        return f"{base}?{urlencode(params)}" if params else base

    shown = entries[offset : offset + TRAIL_PAGE]
    context = {
        "admin": admin_of(request),
        "name": name,
        "url": base,
        "summary": summary,
        "form": form,
        "total": len(entries),
        "offset": offset,
        "entries": [{**e.public_dict()} for e in shown],
        "prev": page(max(0, offset - TRAIL_PAGE)) if offset else None,
        "next": page(offset + TRAIL_PAGE) if offset + TRAIL_PAGE < len(entries) else None,
    }
    return aiohttp_jinja2.render_template("admin/nim.html", request, context)
