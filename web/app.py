"""The app factory: everything a server needs, built from a Config (no module state)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hydraissue.config import Config
from hydraissue.datadir import DataDirLock
from hydraissue.idempotency import IdempotencyStore
from hydraissue.ratelimit import RateLimiter
from hydraissue.service import IssueService
from hydraissue.uploads import human
from projections.flusher import Flusher
from web import api, public
from web.clientip import networks
from web.keys import CONFIG, IDEMPOTENCY, RATE_LIMITER, RUNBOOK, SERVICE, STARTED, TRUSTED_PROXIES
from web.middleware import bearer_auth, errors, idempotency, security_headers
from web.render import when

log = logging.getLogger("hydraissue")
HERE = Path(__file__).resolve().parent
WARM_CHUNK = 256


def runbook_text() -> bytes:
    """docs/runbook.md from the source tree, or the copy packed into the wheel."""
    for candidate in (HERE.parent / "docs" / "runbook.md", HERE / "runbook.md"):
        if candidate.exists():
            return candidate.read_bytes()
    return b"# HydraIssue runbook\n\nThe runbook was not packaged with this build.\n"


def create_app(config: Config, *, own_lock: bool = True) -> web.Application:
    app = web.Application(
        middlewares=[errors, bearer_auth, idempotency],
        client_max_size=config.max_json_bytes,
    )
    app[CONFIG] = config
    app[RUNBOOK] = runbook_text()
    app[STARTED] = time.monotonic()
    app[RATE_LIMITER] = RateLimiter(config.report_rate_limit)
    app[TRUSTED_PROXIES] = networks(config.trusted_proxies)
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    env.globals["human"] = human
    env.filters["when"] = when
    app.on_response_prepare.append(security_headers)
    app.add_routes(api.routes)
    app.add_routes(public.routes)
    app.router.add_static("/static", HERE / "static")
    app.cleanup_ctx.append(_storage(own_lock))
    return app


def _storage(own_lock: bool):  # type: ignore[no-untyped-def]
    async def storage(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        data_dir = config.data_path
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock(data_dir)
        if own_lock:
            lock.acquire()
        service = IssueService(data_dir)
        service.uploads.clear_incoming()  # halves of uploads cut off by a crash
        started = time.monotonic()
        report = await asyncio.to_thread(service.load)
        log.info(
            "loaded %d issues from %s in %.2fs (%d replayed from their logs%s)",
            report.rows,
            data_dir,
            time.monotonic() - started,
            len(report.replayed),
            ", index was missing" if report.index_missing else "",
        )
        for repair in report.repairs:
            log.warning("repaired on start-up: %s", repair)
        if report.dropped:
            log.warning(
                "dropped index rows of issues without an event log (the log is the truth): %s",
                ", ".join(map(str, report.dropped)),
            )
        store = IdempotencyStore(data_dir)
        await asyncio.to_thread(store.load)
        app[SERVICE] = service
        app[IDEMPOTENCY] = store
        flusher = Flusher(service.projection)
        tasks = [asyncio.create_task(flusher.run()), asyncio.create_task(_warm(service))]
        if service.projection.index_dirty or service.projection.dirty_issues:
            service.projection.on_dirty()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await flusher.flush(index=True)
            service.close()
            if own_lock:
                lock.release()

    return storage


async def _warm(service: IssueService) -> None:
    """Load every full issue in small slices, yielding to requests between them."""
    pending = service.projection.unloaded()
    started = time.monotonic()
    for start in range(0, len(pending), WARM_CHUNK):
        service.projection.warm(pending[start : start + WARM_CHUNK])
        await asyncio.sleep(0)
    if pending:
        log.info("warmed %d issues in %.2fs", len(pending), time.monotonic() - started)
