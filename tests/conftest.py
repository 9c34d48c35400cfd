"""Shared fixtures: a real app on a real data dir in ``tmp_path``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from web.app import create_app
from web.keys import SERVICE

API_TOKEN = "test-api-token"
ADMIN_TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, web.Application]]]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config(data_dir: Path) -> Config:
    return Config(
        api_token=API_TOKEN,
        admin_token=ADMIN_TOKEN,
        data_dir=str(data_dir),
        base_url="http://testserver",
    )


@pytest.fixture
async def client(aiohttp_client: ClientFactory, config: Config) -> TestClient[Any, web.Application]:
    return await aiohttp_client(create_app(config))


@pytest.fixture
def auth() -> dict[str, str]:
    return dict(AUTH)


async def settled(client: TestClient[Any, web.Application]) -> None:
    """Wait until background work is idle: every subscriber has handled every commit."""
    await client.app[SERVICE].dispatcher.idle(timeout=10)
