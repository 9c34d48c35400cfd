"""Live config: edits to the config file take effect without a restart.

``watching`` (a cleanup_ctx of ``hydraissue serve``) follows the file's folder with
``watchfiles.awatch`` and, when the file changes, loads the config again the way the
server started (file < environment < flags). A file that does not load is logged (one
line, the reason) and the running config is kept. ``apply_config`` is the one reload
path: given the new Config it swaps ``app[CONFIG]`` and everything built from it in one
synchronous step on the event loop (no lookup sees half a swap).

Handlers look every shared object up per request (``request.app[KEY]``) and keep none
past the request, so replacing the values in the app's state is the whole swap;
aiohttp deprecates ``app[key] = value`` once the app runs (it is meant for set-up), so
``_swap`` writes the app's state mapping directly. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from watchfiles import Change, awatch

from hydraissue.config import SECTIONS, Config, ConfigError, read_file
from hydraissue.ratelimit import RateLimiter
from hydraissue.sessions import Sessions
from web.clientip import networks
from web.keys import CONFIG, ISSUE_JSON, RATE_LIMITER, SERVICE, SESSIONS, TRUSTED_PROXIES
from web.representation import IssueJson

log = logging.getLogger("hydraissue.config")

# Read once at start (the listening socket, the data dir lock, the server's limits and
# timeouts, the log format, the updater's schedule): a change waits for a restart.
# A key added to Config is live unless it is named here.
RESTART_ONLY = (
    "listen",
    "data_dir",
    "max_json_bytes",  # aiohttp's client_max_size is fixed when the app is built
    "log_format",
    "max_connections",
    "header_timeout_seconds",
    "body_timeout_seconds",
    "keepalive_timeout_seconds",
    "shutdown_timeout_seconds",
    "update_enabled",
    "update_interval_hours",
    "update_channel",
    "update_release_url",
    "update_public_key",
)
_RATE = ("report_rate_limit", "report_rate_burst", "report_rate_limit_exempt")
_TARGETS = ("webhooks_allow_private_targets", "webhooks_allowed_targets")
_SHOWN = {
    name: f"{section}.{key}" for section, keys in SECTIONS.items() for key, name in keys.items()
}


def shown(name: str) -> str:
    """A field as the file spells it (``webhooks.allowed_targets``)."""
    return _SHOWN.get(name, name)


def _restart_only(config: Config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in RESTART_ONLY if hasattr(config, name)}


def _swap(app: web.Application, values: Mapping[web.AppKey[Any], object]) -> None:
    """Replace app state values after start-up, in one step, without the deprecation
    warning of ``app[key] = value`` (readers look keys up per request)."""
    state: dict[Any, object] = app._state
    for key, value in values.items():
        state[key] = value


async def apply_config(app: web.Application, new: Config) -> list[str]:
    """Make ``new`` the running config; returns the fields that changed (names only).

    Settings in RESTART_ONLY keep their running value (the caller logs them).
    """
    old = app[CONFIG]
    new = dataclasses.replace(new, **_restart_only(old), dev=old.dev)
    changed = [
        f.name for f in dataclasses.fields(Config) if getattr(old, f.name) != getattr(new, f.name)
    ]
    if not changed:
        return []
    values: dict[web.AppKey[Any], object] = {CONFIG: new}
    if any(name in changed for name in _RATE):
        # A fresh limiter: every client's bucket starts full under the new numbers.
        values[RATE_LIMITER] = RateLimiter(
            new.report_rate_limit, new.report_rate_burst, new.report_rate_limit_exempt
        )
    if "trusted_proxies" in changed:
        values[TRUSTED_PROXIES] = networks(new.trusted_proxies)
    if new.public_url != old.public_url:
        values[ISSUE_JSON] = IssueJson(new.public_url)  # its cached JSON holds old URLs
    sessions = app.get(SESSIONS)
    if sessions is not None and "admin_token" in changed:
        # A new admin token ends every session: sessions.yaml is rewritten empty under
        # the new token's fingerprint (Sessions.load), then the empty set is swapped in.
        fresh = Sessions(new.data_path, new.admin_token, new.admin_session_days * 86400.0)
        await asyncio.to_thread(fresh.load)
        values[SESSIONS] = fresh
    elif sessions is not None and "admin_session_days" in changed:
        sessions.max_age = new.admin_session_days * 86400.0  # sessions opened from now on
    _swap(app, values)
    service = app.get(SERVICE)
    if service is not None:
        service.config = new  # approvals, the quality report, webhook target checks
        deliveries = service.deliveries
        if any(name in changed for name in _TARGETS):
            deliveries.set_target_policy(service.target_policy())
        if "webhooks_disable_after_hours" in changed:
            disable_after = new.webhooks_disable_after_hours * 3600.0
            deliveries.policy = dataclasses.replace(deliveries.policy, disable_after=disable_after)
    if "log_level" in changed:
        logging.getLogger().setLevel(new.log_level.upper())
    return changed


class ConfigWatcher:
    """Loads the config again when its file changes, and applies it to the app."""

    def __init__(self, app: web.Application, path: Path, load: Callable[[], Config]) -> None:
        self.app = app
        self.path = path.expanduser().absolute()
        self.load = load
        self.file_values = self._file_values()
        self.digest = self._digest()

    def _file_values(self) -> dict[str, Any]:
        try:
            return read_file(self.path)
        except (FileNotFoundError, ConfigError):
            return {}

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    async def reload(self) -> list[str] | None:
        """One reload: the fields that changed, or None when the file was refused."""
        digest = self._digest()
        if digest is None:
            if self.digest is not None:
                log.warning("config: %s is gone; keeping the running configuration", self.path)
            self.digest = None
            return None
        if digest == self.digest:
            return []  # touched, or written again with the same bytes
        try:
            file_values = read_file(self.path)
            new = self.load()
        except (ConfigError, OSError) as exc:
            log.error("config: not reloaded, keeping the running configuration: %s", exc)
            return None
        self.digest = digest
        edited = {
            name
            for name in {*file_values, *self.file_values}
            if file_values.get(name) != self.file_values.get(name)
        }
        self.file_values = file_values
        old = self.app[CONFIG]
        changed = await apply_config(self.app, new)
        for name in sorted(edited & set(RESTART_ONLY)):
            log.warning(
                "config: %s changed in %s; it cannot change while running: restart the "
                "service to use it (still %s)",
                shown(name),
                self.path,
                getattr(old, name),
            )
        overridden = sorted(edited - set(changed) - set(RESTART_ONLY))
        if overridden:
            log.warning(
                "config: %s changed in %s, but the environment or a command-line flag sets "
                "it and wins over the file",
                ", ".join(shown(name) for name in overridden),
                self.path,
            )
        if changed:
            note = "; every admin session ended" if "admin_token" in changed else ""
            log.info(
                "config: reloaded %s: %s%s",
                self.path,
                ", ".join(shown(name) for name in changed),
                note,
            )
        return changed

    def wanted(self, change: Change, path: str) -> bool:
        return Path(path) == self.path

    async def run(self, stop: asyncio.Event) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            log.warning("config: %s does not exist; config changes are not watched", folder)
            return
        try:
            async for _changes in awatch(
                folder, watch_filter=self.wanted, stop_event=stop, recursive=False, step=50
            ):
                try:
                    await self.reload()
                except Exception:  # a bug here must not stop the watching
                    log.exception("config: reloading %s failed; keeping the running one", self.path)
        except (OSError, RuntimeError) as exc:  # no inotify watch left, and the like
            log.error("config: cannot watch %s (%s); config changes need a restart", folder, exc)


def watching(
    path: Path, load: Callable[[], Config]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: watch ``path`` while the app runs."""

    async def watch(app: web.Application) -> AsyncIterator[None]:
        watcher = ConfigWatcher(app, path, load)
        async with running("config-watcher", watcher.run):
            log.debug("config: watching %s for changes", watcher.path)
            yield

    return watch


@contextlib.asynccontextmanager
async def running(
    name: str, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
) -> AsyncIterator[None]:
    """A file watcher's task for as long as the block: ``run(stop)`` until ``stop`` is
    set at the end (then up to 5 s to finish, else it is cancelled)."""
    # watchfiles logs "1 change detected" at INFO for every save; our own lines say more
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop), name=name)
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
