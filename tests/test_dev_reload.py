"""``serve --dev`` restarts on a code change: the watcher calls the restart once, for a
module, a template or a static file, and never for what is not code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

import pytest

from hydraissue.config import Config
from tests.conftest import ClientFactory, start_server, stop
from web.app import create_app
from web.devreload import source_dirs


async def test_a_changed_module_restarts_and_other_files_do_not(
    aiohttp_client: ClientFactory,
    config: Config,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = tmp_path / "code"
    (code / "__pycache__").mkdir(parents=True)
    restarts: list[float] = []
    changed = asyncio.Event()

    def restart() -> None:
        restarts.append(time.monotonic())
        changed.set()

    app = create_app(config, code_reload=restart, code_dirs=[code])
    client = await aiohttp_client(app)
    assert (await client.get("/api/v1/health")).status == 200
    caplog.set_level(logging.INFO, logger="hydraissue.dev")
    # Saves of what is not code, each time beside a module's, until the watcher (which
    # starts with the app) reports: only the module is named, and one restart is asked.
    for round_ in range(50):
        (code / "notes.txt").write_text(f"not code {round_}")
        (code / "__pycache__" / "api.cpython-311.pyc").write_bytes(bytes([round_]))
        (code / "data.yaml").write_text(f"a: {round_}\n")
        (code / "api.py").write_text(f"X = {round_}\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), 0.2)
        if changed.is_set():
            break
    assert len(restarts) == 1
    assert "code changed (api.py): restarting" in caplog.text


def test_the_watched_folders_are_this_checkouts_packages() -> None:
    assert [d.name for d in source_dirs()] == ["hydraissue", "web", "events", "projections"]


async def test_serve_dev_says_it_watches_the_code(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data", tmp_path, tmp_path / "dev.log", "--dev")
    assert stop(server, signal.SIGTERM) == 0
    assert "dev: restarting when the code in hydraissue, web, events, projections" in (
        server.output()
    )
