"""Shared fixtures: a real app on a real data dir in ``tmp_path``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
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


# -- the real server, as a process ------------------------------------------------------

BIN = Path(sys.executable).parent / "hydraissue"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(home: Path) -> dict[str, str]:
    """The environment of a server under test: our tokens, none of the caller's
    ``HYDRAISSUE_*`` settings, and a home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAISSUE_")}
    env.update(HOME=str(home), HYDRAISSUE_API_TOKEN=API_TOKEN, HYDRAISSUE_ADMIN_TOKEN=ADMIN_TOKEN)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def start_server(data_dir: Path, home: Path, log: Path, *args: str) -> Server:
    """``hydraissue serve`` on a free port, once its health check answers."""
    port = free_port()
    command = [str(BIN), "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*command, *args], env=server_env(home), stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 15
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{server.output()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{server.url}/api/v1/health") as resp:
                    if resp.status == 200:
                        return server
            await asyncio.sleep(0.05)
    stop(server, signal.SIGKILL)
    pytest.fail(f"server did not become healthy:\n{server.output()}")


def stop(server: Server, sig: signal.Signals) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
    try:
        return server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        raise
