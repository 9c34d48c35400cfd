"""What the team reads about the pipeline: agents' audit trails (``/api/v1/nims``),
aggregate statistics (``/api/v1/stats``) and the quality report
(``/api/v1/reports/quality``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from aiohttp import web

from hydraissue.errors import Invalid, NotFound
from projections.quality import csv as quality_csv
from projections.quality import markdown as quality_markdown
from web.keys import SERVICE
from web.params import known_params, known_query
from web.responses import json_response

routes = web.RouteTableDef()

MAX_LIMIT = 1000
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def stamp(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_moment(raw: str, name: str, *, end_of_day: bool = False) -> str:
    """A date (``2026-03-01``) or an RFC 3339 time, as our UTC stamp."""
    text = raw.strip()
    try:
        if _DATE.match(text):
            moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
            if end_of_day:
                moment += timedelta(days=1) - timedelta(milliseconds=1)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                raise ValueError("no time zone")
    except ValueError:
        raise Invalid(
            name, f"must be a date (2026-03-01) or an RFC 3339 time with a zone, got {raw!r}"
        ) from None
    return stamp(moment)


def _number(params: Mapping[str, str], name: str, default: int, high: int) -> int:
    raw = params.get(name, str(default))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or int(raw) > high:
        raise Invalid(name, f"must be a whole number from 0 to {high}, got {raw!r}")
    return int(raw)


@routes.get("/api/v1/nims")
async def nims(request: web.Request) -> web.Response:
    known_query(request, ())
    return json_response((await request.app[SERVICE].trails()).summary())


@routes.get("/api/v1/nims/{name}/actions")
async def nim_actions(request: web.Request) -> web.Response:
    params = request.query
    known_params(params, ("action", "since", "until", "limit", "offset"))
    name = request.match_info["name"]
    since = parse_moment(params["since"], "since") if "since" in params else None
    until = parse_moment(params["until"], "until", end_of_day=True) if "until" in params else None
    if since and until and since > until:
        raise Invalid("since", "is after until")
    limit = _number(params, "limit", 100, MAX_LIMIT)
    offset = _number(params, "offset", 0, 10**9)
    entries = (await request.app[SERVICE].trails()).entries(
        name, action=params.get("action") or None, since=since, until=until
    )
    if entries is None:
        raise NotFound(f"no agent {name!r} has done anything yet", {"name": name})
    page = entries[offset : offset + limit]
    return json_response(
        [e.public_dict() for e in page], headers={"X-Total-Count": str(len(entries))}
    )


@routes.get("/api/v1/stats")
async def stats(request: web.Request) -> web.Response:
    known_query(request, ("project",))
    project = request.query.get("project") or None
    return json_response(request.app[SERVICE].read_model.stats.stats(project))


FORMATS = ("json", "markdown", "csv")


@routes.get("/api/v1/reports/quality")
async def quality(request: web.Request) -> web.StreamResponse:
    params = request.query
    known_params(params, ("since", "until", "format", "project"))
    now = datetime.now(UTC)
    until = (
        parse_moment(params["until"], "until", end_of_day=True) if "until" in params else stamp(now)
    )
    since = (
        parse_moment(params["since"], "since")
        if "since" in params
        else stamp(datetime.fromisoformat(until) - timedelta(days=7))
    )
    if since > until:
        raise Invalid("since", f"is after until ({since} > {until})")
    fmt = params.get("format", "json")
    if fmt not in FORMATS:
        raise Invalid("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    report = await request.app[SERVICE].quality(since, until, params.get("project") or None)
    if fmt == "markdown":
        return web.Response(
            text=quality_markdown(report), content_type="text/markdown", charset="utf-8"
        )
    if fmt == "csv":
        return web.Response(
            text=quality_csv(report),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="quality.csv"'},
        )
    return json_response(report.to_dict())
