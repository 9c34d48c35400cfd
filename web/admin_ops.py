"""The admin's operations page: ``GET /admin/runbook``, this deployment's own notes.

The public runbook (``/api/v1/runbook``) is the product's; what only this deployment's
operators should read (the host, its addresses, the backup schedule, where the data
lives) is in the Markdown file the config names in ``deployment_notes``. It is read on
every request (a small file, and an edit shows at once) and shown inside the admin
layout; ``web/admin_auth.py``'s guard keeps it to the admin, like every ``/admin`` path.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp_jinja2
from aiohttp import web

from web.admin_auth import admin_of
from web.keys import CONFIG
from web.render import markdown

routes = web.RouteTableDef()
log = logging.getLogger(__name__)
MAX_NOTES_BYTES = 1024 * 1024


def read_notes(setting: str) -> tuple[str, str]:
    """(the notes' Markdown, or why there are none to show)."""
    if not setting:
        return "", "No deployment notes: set deployment_notes in the config to a Markdown file."
    path = Path(setting).expanduser()
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_NOTES_BYTES + 1)
    except OSError as exc:
        log.warning("deployment_notes: cannot read %s (%s)", path, exc.strerror)
        return "", f"The deployment notes file {path} cannot be read ({exc.strerror})."
    if len(data) > MAX_NOTES_BYTES:
        return "", f"The deployment notes file {path} is larger than 1 MB; shorten it."
    return data.decode("utf-8", errors="replace"), ""


@routes.get("/admin/runbook")
async def runbook(request: web.Request) -> web.Response:
    setting = request.app[CONFIG].deployment_notes
    text, problem = await asyncio.to_thread(read_notes, setting)
    context = {
        "admin": admin_of(request),
        "notes": markdown(text) if text else None,
        "problem": problem,
        "source": str(Path(setting).expanduser()) if setting else "",
    }
    return aiohttp_jinja2.render_template("admin/runbook.html", request, context)
