"""The app factory: everything a server needs, built from a Config (no module state)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.abc import AbstractResolver

from hydraissue.config import Config
from hydraissue.datadir import DataDirLock
from hydraissue.delivery import Policy
from hydraissue.ratelimit import RateLimiter
from hydraissue.service import IssueService
from hydraissue.uploads import human
from web import (
    admin,
    admin_auth,
    admin_insight,
    admin_ops,
    api,
    devreload,
    feed,
    insight_api,
    public,
    webhooks_api,
)
from web.accesslog import ACCESS, AccessLog
from web.clientip import networks
from web.keys import (
    CONFIG,
    FEED_KEEPALIVE,
    ISSUE_JSON,
    KEY_LOCKS,
    RATE_LIMITER,
    RUNBOOK,
    SERVICE,
    STARTED,
    TRUSTED_PROXIES,
    UPDATE_STATUS,
)
from web.metrics import install as install_metrics
from web.middleware import authenticate, errors
from web.reload import watching
from web.render import age, when
from web.representation import IssueJson

HERE = Path(__file__).resolve().parent


def runbook_text() -> bytes:
    """docs/runbook.md from the source tree, or the copy packed into the wheel."""
    for candidate in (HERE.parent / "docs" / "runbook.md", HERE / "runbook.md"):
        if candidate.exists():
            return candidate.read_bytes()
    return b"# HydraIssue runbook\n\nThe runbook was not packaged with this build.\n"


def create_app(
    config: Config,
    *,
    own_lock: bool = True,
    feed_keepalive: float = 15.0,
    delivery_policy: Policy | None = None,
    resolver: AbstractResolver | None = None,
    clock: Callable[[], str] | None = None,
    config_file: Path | None = None,
    reload_config: Callable[[], Config] | None = None,
    update_status: Callable[[], dict[str, object]] | None = None,
    code_reload: Callable[[], None] | None = None,
    code_dirs: Sequence[Path] | None = None,
) -> web.Application:
    """``delivery_policy``, ``resolver`` and ``clock``: webhook retries, name lookups and
    event times, which a test shortens or controls; the defaults are the seed's numbers,
    the system's DNS and the wall clock. ``config_file`` and ``reload_config``: the file
    to watch and how to load the config again (``hydraissue serve``; web/reload.py).
    ``update_status``: serve's automatic updates, for health's ``extra.update``.
    ``code_reload``: ``serve --dev``'s restart, called once when the code in ``code_dirs``
    (default: this checkout's packages) changes (web/devreload.py)."""
    # every server of this app (serve's, a test's) writes request lines and counts
    # answers through this access logger
    access_log = AccessLog.per_app()
    app = web.Application(
        middlewares=[errors, authenticate],
        client_max_size=config.max_json_bytes,
        handler_args={"access_log_class": access_log, "access_log": ACCESS},
    )
    access_log.app = app
    app[CONFIG] = config
    app[RUNBOOK] = runbook_text()
    app[STARTED] = time.monotonic()
    app[RATE_LIMITER] = RateLimiter(
        config.report_rate_limit, config.report_rate_burst, config.report_rate_limit_exempt
    )
    app[TRUSTED_PROXIES] = networks(config.trusted_proxies)
    app[ISSUE_JSON] = IssueJson(config.public_url)  # absolute URLs in JSON
    app[KEY_LOCKS] = {}
    if update_status is not None:
        app[UPDATE_STATUS] = update_status
    app[FEED_KEEPALIVE] = feed_keepalive
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        # no stat() of the template file per render (5% of an admin list page); a
        # template changes with a release, and `serve --dev` restarts on a change
        auto_reload=False,
    )
    env.globals["human"] = human
    env.filters["when"] = when
    env.filters["age"] = age
    app.add_routes(api.routes)
    app.add_routes(feed.routes)
    app.add_routes(webhooks_api.routes)
    app.add_routes(insight_api.routes)
    app.add_routes(public.routes)
    app.add_routes(admin_auth.routes)
    app.add_routes(admin.routes)
    app.add_routes(admin_ops.routes)
    app[admin.ROW_HTML] = admin.RowHtml()
    app[admin.FRAGMENTS] = admin.Fragments()
    app.add_routes(admin_insight.routes)
    app[admin_insight.FIGURES] = admin_insight.FigureCache()
    app.on_cleanup.append(admin_insight.stop_figures)
    app[public.DECOYS] = public.Decoys()  # the honeypot's look-alike answers
    app.router.add_static("/static", HERE / "static")
    app.cleanup_ctx.append(_storage(own_lock, delivery_policy, resolver, clock))
    app.cleanup_ctx.append(admin_auth.admin_sessions)
    install_metrics(app)  # GET /metrics; its commit listener, once the storage runs
    if config_file is not None and reload_config is not None:
        app.cleanup_ctx.append(watching(config_file, reload_config))  # live config
    if code_reload is not None:
        dirs = list(code_dirs) if code_dirs is not None else devreload.source_dirs()
        app.cleanup_ctx.append(devreload.watching_code(dirs, code_reload))
    app.on_shutdown.append(_close_feeds)
    return app


async def _close_feeds(app: web.Application) -> None:
    """Live-feed clients end before the server waits for open requests to finish."""
    if feed.HUB in app:
        await app[feed.HUB].stop()


def _storage(  # type: ignore[no-untyped-def]
    own_lock: bool,
    delivery_policy: Policy | None,
    resolver: AbstractResolver | None,
    clock: Callable[[], str] | None,
):
    async def storage(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        data_dir = config.data_path
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock(data_dir)
        if own_lock:
            lock.acquire()
        service = IssueService(
            data_dir,
            config=config,
            delivery_policy=delivery_policy,
            resolver=resolver,
            **({"clock": clock} if clock is not None else {}),
        )
        try:
            await service.start()
            app[SERVICE] = service
            app[feed.HUB] = feed.SseHub(service)
            app[feed.HUB].start()
            yield
        finally:
            if feed.HUB in app:
                await app[feed.HUB].stop()
            await service.stop()
            if own_lock:
                lock.release()

    return storage
