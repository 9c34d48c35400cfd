"""SIGTERM under load, with uploads still arriving: the process exits 0 within the
shutdown timeout, every request sent got an HTTP answer (2xx, or 503 with
Retry-After), and every 2xx write is there after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import AUTH, local_site, start_server, stop

BOUNDARY = "hydraissue-slow-upload"


async def slow_multipart() -> AsyncIterator[bytes]:
    """A file part that never ends: a chunk every 100 ms."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="slow.txt"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    for _ in range(600):
        await asyncio.sleep(0.1)
        yield b"x" * 512


async def test_sigterm_under_load_answers_every_request_and_keeps_every_write(
    tmp_path: Path,
) -> None:
    data_dir, home, log = tmp_path / "data", tmp_path / "home", tmp_path / "server.log"
    server = await start_server(data_dir, home, log)
    answers: list[int] = []
    lost: list[str] = []
    created: list[int] = []
    uploads: list[tuple[int, str | None]] = []
    stopping = asyncio.Event()

    async def creator(session: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while not stopping.is_set() or server.proc.poll() is None:
            i += 1
            try:
                async with session.post(
                    f"{server.url}/api/v1/issues", json={"title": f"load {n}-{i}"}, headers=AUTH
                ) as resp:
                    answers.append(resp.status)
                    if resp.status == 201:
                        created.append((await resp.json())["id"])
                    else:
                        assert resp.status == 503, await resp.text()
                        assert resp.headers.get("Retry-After")
            except aiohttp.ClientConnectorError:
                if stopping.is_set():
                    return  # refused: the listener is closed, nothing was sent
                raise
            except aiohttp.ClientError as exc:
                lost.append(repr(exc))
                return

    async def uploader(session: aiohttp.ClientSession, issue_id: int) -> None:
        headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        try:
            async with session.post(
                f"{server.url}/api/v1/issues/{issue_id}/attachments",
                data=slow_multipart(),
                headers=headers,
            ) as resp:
                await resp.read()
                uploads.append((resp.status, resp.headers.get("Retry-After")))
        except aiohttp.ClientError as exc:
            lost.append(f"upload: {exc!r}")

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(
            f"{server.url}/api/v1/issues", json={"title": "target"}, headers=AUTH
        ) as resp:
            assert resp.status == 201
            target = (await resp.json())["id"]
            created.append(target)
        tasks = [asyncio.create_task(creator(session, n)) for n in range(6)]
        tasks += [asyncio.create_task(uploader(session, target)) for _ in range(3)]
        await asyncio.sleep(1.5)  # load running, uploads in flight
        assert len(created) > 10 and not uploads
        stopping.set()
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        while server.proc.poll() is None and time.monotonic() - started < 15:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
    assert server.proc.returncode == 0, server.output()
    assert elapsed < 11, elapsed
    assert not lost, (lost, server.output())
    assert [status for status, _ in uploads] == [503, 503, 503], uploads
    assert all(retry for _, retry in uploads)
    output = server.output()
    assert "3 request(s) still sending their body: answered 503" in output
    assert "Traceback" not in output

    again = await start_server(data_dir, home, log)
    try:
        async with aiohttp.ClientSession() as session:
            for issue_id in created:
                async with session.get(
                    f"{again.url}/api/v1/issues/{issue_id}", headers=AUTH
                ) as resp:
                    assert resp.status == 200, issue_id
            async with session.get(f"{again.url}/api/v1/health") as resp:
                health: dict[str, Any] = await resp.json()
                assert health["extra"]["issues"] == len(created)
    finally:
        assert stop(again, signal.SIGTERM) == 0
    # The lock was released and the checkpoints flushed: nothing to repair.
    assert "repaired on start-up" not in server.output()


async def test_sigterm_when_idle_exits_at_once(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data", tmp_path / "home", tmp_path / "server.log")
    started = time.monotonic()
    assert stop(server, signal.SIGTERM) == 0
    assert time.monotonic() - started < 3
    assert "INFO hydraissue.serve: stopped" in server.output()


@pytest.mark.parametrize(
    ("key", "retry"), [(None, None), ("ping-1", "2")], ids=["plain", "idempotency-key"]
)
async def test_a_request_still_running_at_the_deadline_is_answered_503(
    tmp_path: Path, key: str | None, retry: str | None
) -> None:
    """A ping to a receiver that never answers outlives 0.9 T of a 2 s shutdown: it is
    cancelled then, and its client gets a 503, not a closed socket. Only a request that
    is safe to send again (here: with an Idempotency-Key) is told to retry."""
    reached, release = asyncio.Event(), asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        reached.set()
        await release.wait()
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", never)
    runner, receiver_url = await local_site(receiver)
    home = tmp_path / "home"
    (home / ".hydraissue").mkdir(parents=True)
    (home / ".hydraissue" / "config.yaml").write_text(
        "shutdown_timeout_seconds: 2\nwebhooks:\n  allow_private_targets: true\n"
    )
    server = await start_server(tmp_path / "data", home, tmp_path / "server.log")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{server.url}/api/v1/webhooks",
                json={"url": f"{receiver_url}/hook", "events": ["*"]},
                headers=AUTH,
            ) as resp:
                assert resp.status == 201, await resp.text()
                hook = (await resp.json())["id"]

            headers = {**AUTH, "Idempotency-Key": key} if key else AUTH

            async def ping() -> tuple[int, str | None, str]:
                async with session.post(
                    f"{server.url}/api/v1/webhooks/{hook}/ping", headers=headers
                ) as resp:
                    return resp.status, resp.headers.get("Retry-After"), await resp.text()

            pinging = asyncio.create_task(ping())
            await asyncio.wait_for(reached.wait(), 5)  # the ping waits on the receiver
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            status, retry_after, text = await asyncio.wait_for(pinging, 5)
        code = await asyncio.to_thread(server.proc.wait, 5)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        stop(server, signal.SIGKILL)
        await runner.cleanup()
    assert (status, retry_after) == (503, retry), server.output()
    assert ("send the request again" if key else "it may have been saved") in text
    assert code == 0 and elapsed < 2.5, (code, elapsed)
    assert "did not finish in time: cancelled, answered 503" in server.output()
