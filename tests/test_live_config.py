"""Live config: edits to config.yaml take effect without a restart (a real server and
a real file), a broken edit keeps the running config, and settings that cannot change
live say so. In-process: what the reload path rebuilds from the new config."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config, load
from tests.conftest import (
    ADMIN_TOKEN,
    ClientFactory,
    Server,
    free_port,
    server_env,
    start_server,
    stop,
)
from web.app import create_app
from web.keys import CONFIG, ISSUE_JSON, RATE_LIMITER, SERVICE, SESSIONS, TRUSTED_PROXIES
from web.reload import ConfigWatcher, apply_config

Client = TestClient[Any, web.Application]
OLD = "old-api-token-7d1e"
NEW = "new-api-token-93ab"


def write(path: Path, text: str) -> None:
    """As an editor saves: a new file renamed over the old one."""
    temp = path.with_name(f".{path.name}.swp")
    temp.write_text(text)
    os.replace(temp, path)


def config_text(api_token: str, **extra: str) -> str:
    lines = [f"api_token: {api_token}", f"admin_token: {ADMIN_TOKEN}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, Path]]:
    """A server whose tokens come from its config file only (no HYDRAISSUE_* tokens)."""
    home = tmp_path / "home"
    home.mkdir()
    config = home / "config.yaml"
    config.write_text(config_text(OLD))
    env = {k: v for k, v in server_env(home).items() if not k.startswith("HYDRAISSUE_")}
    server = await start_server(
        tmp_path / "data", home, tmp_path / "server.log", "--config", str(config), env=env
    )
    try:
        yield server, config
    finally:
        assert stop(server, signal.SIGTERM) == 0


async def answer(server: Server, token: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{server.url}/api/v1/issues", headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        return resp.status


def logged(server: Server, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in server.output()

    return check


async def test_a_new_api_token_is_used_without_a_restart(served: tuple[Server, Path]) -> None:
    server, config = served
    assert await answer(server, OLD) == 200
    assert await answer(server, NEW) == 401
    write(config, config_text(NEW))

    async def flipped() -> bool:
        return await answer(server, NEW) == 200

    await until(flipped, "the new api_token accepted")
    assert await answer(server, OLD) == 401
    await until(logged(server, "config: reloaded"), "the reload logged")
    output = server.output()
    assert "reloaded" in output and "api_token" in output
    assert OLD not in output and NEW not in output  # names of keys, never their values
    assert server.proc.poll() is None


async def test_a_broken_edit_keeps_the_running_config(served: tuple[Server, Path]) -> None:
    server, config = served
    write(config, "api_token: [not closed\n")
    await until(logged(server, "not reloaded"), "the refused file logged")
    line = next(x for x in server.output().splitlines() if "not reloaded" in x)
    assert "not valid YAML" in line and "keeping the running configuration" in line
    assert await answer(server, OLD) == 200
    write(config, config_text(OLD, report_rate_limit="many"))  # loads as YAML, not as config
    await until(logged(server, "report_rate_limit must be a whole number"), "the bad value logged")
    assert await answer(server, OLD) == 200
    write(config, config_text(NEW))  # a good file after the broken ones is used

    async def flipped() -> bool:
        return await answer(server, NEW) == 200

    await until(flipped, "the fixed file applied")


async def test_a_changed_listen_says_it_needs_a_restart(served: tuple[Server, Path]) -> None:
    server, config = served
    elsewhere = f"127.0.0.1:{free_port()}"
    write(config, config_text(OLD, listen=elsewhere, log_level="debug"))
    await until(logged(server, "listen changed"), "the listen change logged")
    line = next(x for x in server.output().splitlines() if "listen changed" in x)
    assert "restart" in line
    await until(logged(server, "config: reloaded"), "the live part applied")
    assert await answer(server, OLD) == 200  # still serving where it was


# -- the reload path, in process --------------------------------------------------------


async def test_reload_rebuilds_what_was_built_from_the_config(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await aiohttp_client(create_app(config))
    app = client.app
    limiter, proxies, issue_json = app[RATE_LIMITER], app[TRUSTED_PROXIES], app[ISSUE_JSON]
    resp = await client.post("/login", data={"token": ADMIN_TOKEN}, allow_redirects=False)
    assert resp.status == 303
    assert (await client.get("/admin", allow_redirects=False)).status == 200

    same = await apply_config(app, dataclasses.replace(config))
    assert same == [] and app[RATE_LIMITER] is limiter

    new = dataclasses.replace(
        config,
        report_rate_limit=1,
        trusted_proxies=("10.0.0.0/8",),
        base_url="https://issues.example.org",
        webhooks_allowed_targets=("hooks.lan",),
        listen="0.0.0.0:9999",  # cannot change while running: kept
    )
    changed = await apply_config(app, new)
    assert set(changed) == {
        "report_rate_limit",
        "trusted_proxies",
        "base_url",
        "webhooks_allowed_targets",
    }
    assert app[CONFIG].listen == config.listen and app[CONFIG].report_rate_limit == 1
    assert app[RATE_LIMITER] is not limiter and app[RATE_LIMITER].per_minute == 1
    assert app[TRUSTED_PROXIES] != proxies and app[ISSUE_JSON] is not issue_json
    assert app[ISSUE_JSON].base == "https://issues.example.org"
    service = app[SERVICE]
    assert service.config is app[CONFIG]
    assert service.deliveries.target_policy == service.target_policy()
    assert (await client.get("/admin", allow_redirects=False)).status == 200  # session kept

    sessions = app[SESSIONS]
    await apply_config(app, dataclasses.replace(app[CONFIG], admin_token="another-admin"))
    assert app[SESSIONS] is not sessions and len(app[SESSIONS]) == 0
    assert (await client.get("/admin", allow_redirects=False)).status == 303  # to /login
    text = (Path(config.data_dir) / "sessions.yaml").read_text()
    assert "id_sha256" not in text  # ended on disk too: a restart does not bring them back


async def test_a_key_the_environment_sets_is_logged_as_overridden(
    aiohttp_client: ClientFactory, config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config_text(OLD))
    env = {"HYDRAISSUE_API_TOKEN": "from-the-environment"}
    started = load(path, env=env, flags={"data_dir": config.data_dir})
    client = await aiohttp_client(create_app(started))
    watcher = ConfigWatcher(
        client.app, path, lambda: load(path, env=env, flags={"data_dir": config.data_dir})
    )
    write(path, config_text(NEW, public_view="false"))
    with caplog.at_level(logging.INFO, logger="hydraissue.config"):
        assert await watcher.reload() == ["public_view"]
        assert await watcher.reload() == []  # the same bytes again: nothing to do
    assert client.app[CONFIG].api_token == "from-the-environment"
    assert client.app[CONFIG].public_view is False
    lines = [r.getMessage() for r in caplog.records]
    assert any("api_token changed" in x and "environment" in x for x in lines), lines
    assert any(x.endswith(": public_view") for x in lines), lines
    assert not any(OLD in x or NEW in x or "from-the-environment" in x for x in lines)
