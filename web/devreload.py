"""``serve --dev``: a change to the code restarts the server.

A cleanup_ctx follows the source folders with ``watchfiles.awatch``; on the first change
to a module, template or static file it calls ``restart`` once (the CLI's: stop the way
SIGTERM does, then execute the same command again, so every module is loaded anew and
the data dir lock is released in between). Only with ``--dev``: a deployed server
changes its code through the updater, never underneath itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from aiohttp import web
from watchfiles import Change, awatch

from web.reload import running

log = logging.getLogger("hydraissue.dev")

CODE = (".py", ".html", ".css", ".js", ".md")
# the packages of this service, beside each other in a checkout
PACKAGES = ("hydraissue", "web", "events", "projections")


def source_dirs() -> list[Path]:
    root = Path(__file__).resolve().parent.parent
    return [root / name for name in PACKAGES if (root / name).is_dir()]


def _is_code(change: Change, path: str) -> bool:
    return path.endswith(CODE) and "__pycache__" not in path


def watching_code(
    dirs: Sequence[Path], restart: Callable[[], None]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(stop: asyncio.Event) -> None:
        try:
            async for changes in awatch(*dirs, watch_filter=_is_code, stop_event=stop):
                names = sorted({Path(path).name for _, path in changes})
                log.info("code changed (%s): restarting", ", ".join(names[:5]))
                restart()
                return
        except (OSError, RuntimeError) as exc:  # out of inotify watches, a folder gone
            log.warning("dev: cannot watch the code (%s); restart by hand after changes", exc)

    async def watch(app: web.Application) -> AsyncIterator[None]:
        async with running("dev-code-watcher", run):
            log.info("dev: restarting when the code in %s changes", ", ".join(d.name for d in dirs))
            yield

    return watch
