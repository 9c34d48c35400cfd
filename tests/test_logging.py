"""One log line per request (method, path without query values, status, ms, actor kind),
text or JSON lines; no token, cookie, Authorization header or form content ever logged."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import aiohttp

from tests.conftest import ADMIN_TOKEN, API_TOKEN, AUTH, Server, start_server, stop

COOKIE_VALUE = "cookie-value-that-must-not-be-logged"
PASSWORD = "password-that-must-not-be-logged"
QUERY_SECRET = "query-secret-that-must-not-be-logged"


async def serve(tmp_path: Path, config: str = "") -> Server:
    home = tmp_path / "home"
    (home / ".hydraissue").mkdir(parents=True)
    (home / ".hydraissue" / "config.yaml").write_text(config)
    return await start_server(tmp_path / "data", home, tmp_path / "server.log")


async def send_secrets(server: Server) -> None:
    async with aiohttp.ClientSession(cookies={"admin_session": COOKIE_VALUE}) as session:
        async with session.post(
            f"{server.url}/api/v1/issues",
            json={"title": "logged", "description": PASSWORD},
            headers=AUTH,
        ) as resp:
            assert resp.status == 201
        async with session.get(
            f"{server.url}/api/v1/issues?project=demo&limit=5", headers=AUTH
        ) as resp:
            assert resp.status == 200
        async with session.get(f"{server.url}/report?token={QUERY_SECRET}") as resp:
            assert resp.status in (200, 400)
        async with session.post(
            f"{server.url}/login", data={"token": ADMIN_TOKEN, "password": PASSWORD}
        ) as resp:
            await resp.read()
        async with session.get(
            f"{server.url}/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as resp:
            assert resp.status == 200
        async with session.get(
            f"{server.url}/api/v1/issues", headers={"Authorization": "Bearer wrong-token"}
        ) as resp:
            assert resp.status == 401


def assert_no_secrets(log: str) -> None:
    for secret in (API_TOKEN, ADMIN_TOKEN, COOKIE_VALUE, PASSWORD, QUERY_SECRET, "wrong-token"):
        assert secret not in log, secret
    assert "Authorization" not in log and "Cookie" not in log


async def test_text_lines_one_per_request_without_secrets(tmp_path: Path) -> None:
    server = await serve(tmp_path)
    await send_secrets(server)
    assert stop(server, signal.SIGTERM) == 0
    log = server.output()
    assert_no_secrets(log)
    access = [line for line in log.splitlines() if "hydraissue.access" in line]
    shown = [line.split("hydraissue.access: ", 1)[1] for line in access]
    assert any(s.startswith("POST /api/v1/issues 201 ") and s.endswith("ms api") for s in shown)
    assert any(s.startswith("GET /api/v1/issues?limit&project 200 ") for s in shown), shown
    assert any(s.startswith("GET /report?token ") and s.endswith(" public") for s in shown)
    assert any(s.startswith("GET /admin 200 ") and s.endswith(" admin") for s in shown)
    assert any(s.startswith("GET /api/v1/issues 401 ") and s.endswith(" anonymous") for s in shown)


async def test_json_lines(tmp_path: Path) -> None:
    server = await serve(tmp_path, "log_format: json\n")
    await send_secrets(server)
    assert stop(server, signal.SIGTERM) == 0
    log = server.output()
    assert_no_secrets(log)
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    # Everything but the "listening on" banner (stdout) is a JSON line.
    assert len(records) == len(log.splitlines()) - 1
    created = next(
        r for r in records if r.get("path") == "/api/v1/issues" and r.get("status") == 201
    )
    assert created["method"] == "POST" and created["actor"] == "api"
    assert created["logger"] == "hydraissue.access" and created["level"] == "info"
    assert isinstance(created["ms"], float) and created["time"].endswith("Z")
