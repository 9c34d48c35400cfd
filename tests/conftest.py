"""Shared fixtures: a real app on a real data dir in ``tmp_path``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hydraissue.config import Config
from web.accesslog import LINES
from web.app import create_app
from web.keys import SERVICE
from web.serving import FloodLog, Limits, Runner

API_TOKEN = "test-api-token"
ADMIN_TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
# A script acting as the admin: the admin token on the admin action URLs, JSON back.
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Accept": "application/json"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, web.Application]]]


@pytest.fixture(autouse=True)
def _request_lines_off() -> Iterator[None]:
    """A test that runs ``serve``'s set-up in this process turns its request lines on
    (web/accesslog.py); they belong to a serve process, not to the test run's output."""
    yield
    LINES.on = False
    LINES.pending.clear()


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


async def admin_move(
    client: TestClient[Any, web.Application], issue_id: int, status: str, expect: int = 200
) -> dict[str, Any]:
    """A move as the admin makes it (the human's moves: accept, reject, un-reject)."""
    resp = await client.post(
        f"/admin/issues/{issue_id}/status", data={"status": status}, headers=ADMIN_AUTH
    )
    assert resp.status == expect, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def settled(client: TestClient[Any, web.Application]) -> None:
    """Wait until background work is idle: every subscriber has handled every commit."""
    await client.app[SERVICE].dispatcher.idle(timeout=10)


# -- webhook receivers (real aiohttp servers on 127.0.0.1) -------------------------------


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    """A webhook receiver: records every call; answers with what ``script`` says next
    (a status code, or "hang"), then ``default``."""

    script: list[int | str] = field(default_factory=list)
    default: int = 200
    calls: list[Call] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # ends every "hang"
    server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(Call(dict(request.headers), await request.read(), time.monotonic()))
        self.arrived.set()
        action = self.script.pop(0) if self.script else self.default
        if action == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), 30)
            action = 200
        return web.Response(status=int(action), text="ok")

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    async def wait(self, count: int, timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            self.arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.calls)} of {count} calls arrived")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)
        return self.calls


@pytest.fixture
async def receivers() -> AsyncIterator[Any]:
    started: list[TestServer] = []
    made: list[Receiver] = []

    async def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        made.append(receiver)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        receiver.server = server
        started.append(server)
        return receiver

    yield make
    for receiver in made:
        receiver.released.set()
    for server in started:
        await server.close()


# -- the real server, as a process ------------------------------------------------------

BIN = Path(sys.executable).parent / "hydraissue"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def local_site(app: web.Application) -> tuple[web.AppRunner, str]:
    """A small aiohttp app of a test's own (a release server, a webhook receiver) on a
    free loopback port: its runner (clean it up) and its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def guarded_site(app: web.Application) -> tuple[web.AppRunner, str]:
    """Our app behind ``hydraissue serve``'s own server (web/serving.py: the limits,
    the get-by-id lane), in this process, on a free loopback port."""
    runner = Runner(app, Limits(), FloodLog())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


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


async def start_server(
    data_dir: Path, home: Path, log: Path, *args: str, env: dict[str, str] | None = None
) -> Server:
    """``hydraissue serve`` on a free port, once its health check answers (``env``:
    instead of ``server_env(home)``)."""
    port = free_port()
    command = [str(BIN), "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*command, *args],
            env=server_env(home) if env is None else env,
            stdout=out,
            stderr=subprocess.STDOUT,
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


async def start_lan_server(tmp_path: Path) -> Server:
    """``hydraissue serve`` in ``tmp_path`` that may send webhooks to 127.0.0.1 (the
    test receivers), with its data dir, home and log there."""
    home, data_dir, log = tmp_path / "home", tmp_path / "data", tmp_path / "server.log"
    home.mkdir(exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text("webhooks:\n  allow_private_targets: true\n")
    return await start_server(data_dir, home, log, "--config", str(config))


def stop(server: Server, sig: signal.Signals) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
    try:
        return server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        raise


# -- browser tests (Playwright on Debian's Chromium, a real `hydraissue serve`) --------
# Module-scoped: each browser test module gets its own server and browser.

REPO = Path(__file__).resolve().parents[1]
# The committed screenshots are refreshed only on request, so a test run leaves the
# work tree clean: HYDRAISSUE_UPDATE_SCREENSHOTS=1 make test
SCREENSHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("HYDRAISSUE_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "hydraissue-screenshots"
)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
BROWSER_API_TOKEN = "browser-api-token"
BROWSER_ADMIN_TOKEN = "browser-admin-token"
PHONE = {"width": 390, "height": 844}

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
JS_LINK = "[x](javascript:alert(1))"
ALL_PAYLOADS = f"{SCRIPT} {IMG} {JS_LINK}"

# Runs before any page script: any alert/confirm/prompt, any injected <img src=x>
# failing, and any inline code the page's CSP had to block, sets a flag.
XSS_HOOKS = """
(() => {
  const hit = (why) => { window.__xss = true; (window.__xssWhy ||= []).push(why); };
  for (const name of ["alert", "confirm", "prompt"]) {
    const original = window[name].bind(window);
    window[name] = (...args) => { hit(name); return original(...args); };
  }
  window.addEventListener("error", (event) => {
    const el = event.target;
    if (el && el.getAttribute && el.getAttribute("src") === "x") hit("onerror:" + el.tagName);
  }, true);
  document.addEventListener("securitypolicyviolation", (event) => {
    hit("csp:" + event.violatedDirective);
  });
})();
"""


def require_browser() -> None:
    reason = (
        f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium); "
        "the browser tests never download a browser"
    )
    if CHROMIUM.exists():
        return
    if os.environ.get("HYDRAISSUE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and HYDRAISSUE_REQUIRE_BROWSER=1 makes that an error")
    pytest.skip(reason)


def make_png(width: int = 96, height: int = 64) -> bytes:
    """A small real PNG: a blue-to-orange gradient with a white diagonal."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            if abs(x * height - y * width) < width * 2:
                rows += b"\xff\xff\xff"
            else:
                rows += bytes(
                    (40 + 200 * x // width, 90 + 60 * y // height, 220 - 180 * x // width)
                )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


# -- the server ------------------------------------------------------------------------


@dataclass(frozen=True)
class BrowserServer:
    url: str
    data_dir: Path

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {BROWSER_API_TOKEN}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read() or b"null")


def hydraissue_command() -> list[str]:
    script = Path(sys.executable).with_name("hydraissue")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hydraissue.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserServer]:
    # a high limit: these tests post more than a person would in a minute
    yield from serve(tmp_path_factory, "report_rate_limit: 1000\nreport_rate_burst: 1000\n")


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserServer]:
    """One report at once per address, then one a minute: the second is a 429."""
    yield from serve(tmp_path_factory, "report_rate_limit: 1\nreport_rate_burst: 1\n")


def serve(tmp_path_factory: pytest.TempPathFactory, config_text: str) -> Iterator[BrowserServer]:
    require_browser()
    home = tmp_path_factory.mktemp("browser-home")
    data_dir = home / "data"
    config = home / "config.yaml"
    config.write_text(config_text)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAISSUE_")}
    env.update(
        HOME=str(home),
        HYDRAISSUE_API_TOKEN=BROWSER_API_TOKEN,
        HYDRAISSUE_ADMIN_TOKEN=BROWSER_ADMIN_TOKEN,
    )
    log_path = home / "server.log"
    command = [
        *hydraissue_command(),
        "serve",
        "--config",
        str(config),
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"hydraissue serve exited: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"hydraissue serve did not come up: {log_path.read_text()}")
            time.sleep(0.05)
        yield BrowserServer(url, data_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(server: BrowserServer) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        if os.environ.get("HYDRAISSUE_REQUIRE_BROWSER") == "1":
            pytest.fail("playwright is not installed; pip install -e '.[test]'")
        pytest.skip("playwright is not installed; pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()
