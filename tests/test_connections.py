"""Connections against a real ``hydraissue serve``: a client trickling its headers or
its body is cut off, an idle keep-alive connection is closed, connections beyond
``max_connections`` get a 503, floods are one line, a malformed request one INFO line."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Server, start_server, stop


async def serve(tmp_path: Path, config: str) -> Server:
    home = tmp_path / "home"
    (home / ".hydraissue").mkdir(parents=True)
    (home / ".hydraissue" / "config.yaml").write_text(config)
    return await start_server(tmp_path / "data", home, tmp_path / "server.log")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    running = await serve(
        tmp_path,
        "header_timeout_seconds: 1\nbody_timeout_seconds: 1\nkeepalive_timeout_seconds: 2\n"
        "max_connections: 8\n",
    )
    yield running
    stop(running, signal.SIGTERM)


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def trickle(writer: asyncio.StreamWriter, data: bytes, pause: float) -> None:
    """A byte at a time until the server closes the connection."""
    for byte in data:
        if writer.is_closing():
            return
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(pause)


async def test_a_client_trickling_its_headers_is_cut_off(server: Server) -> None:
    reader, writer = await connect(server)
    started = time.monotonic()
    sender = asyncio.create_task(
        trickle(writer, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100, 0.2)
    )
    answer = await read_until_closed(reader, 5)
    elapsed = time.monotonic() - started
    sender.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.9 < elapsed < 3, elapsed


async def test_a_client_trickling_its_body_is_cut_off(server: Server) -> None:
    reader, writer = await connect(server)
    head = (
        b"POST /api/v1/issues HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-api-token\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    )
    writer.write(head)
    await writer.drain()
    started = time.monotonic()
    sender = asyncio.create_task(trickle(writer, b'{"title": "' + b"a" * 480 + b'"}', 0.2))
    answer = await read_until_closed(reader, 6)
    elapsed = time.monotonic() - started
    sender.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"too slowly" in answer
    assert elapsed < 4, elapsed


async def test_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    rest = await read_until_closed(reader, 5)  # the body, then the server's close
    writer.close()
    assert b'"service"' in rest
    assert 1.5 < time.monotonic() - started < 4


async def hold(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection the server accepted and answered, left open. A 503 is retried: the
    start-up probe's connection can still count against the cap for a moment."""
    deadline = time.monotonic() + 5
    while True:
        reader, writer = await connect(server)
        writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if head.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            break
        writer.close()
        await asyncio.sleep(0.05)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
    await asyncio.wait_for(reader.readexactly(length), 5)
    return reader, writer


async def test_connections_over_the_cap_get_a_503_and_are_logged_once(server: Server) -> None:
    held = [await hold(server) for _ in range(8)]  # the cap is reached
    answers = []
    for _ in range(5):
        reader, writer = await connect(server)
        answers.append(await read_until_closed(reader, 5))
        writer.close()
    assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers
    assert all(b"Retry-After: 1" in a for a in answers)
    for _, writer in held:
        writer.close()
    # Room again: the service answers.
    deadline = time.monotonic() + 5
    while True:
        reader, writer = await connect(server)
        writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            answer = await read_until_closed(reader, 5)
        except ConnectionResetError:  # still over the cap: refused before our request was read
            answer = b""
        writer.close()
        if answer.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert stop(server, signal.SIGTERM) == 0
    log = server.output()
    refused = re.search(r"refused (\d+) connections in the last \d+ s", log)
    assert refused is not None and int(refused[1]) >= 5, log
    assert "over max_connections (8)" in log
    assert log.count("over max_connections") == 1


async def test_a_malformed_request_is_one_info_line(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Name: Bearer s3cret-in-garbage\r\n\r\n")
    await writer.drain()
    answer = await read_until_closed(reader, 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.0 400"), answer
    assert stop(server, signal.SIGTERM) == 0
    log = server.output()
    lines = [line for line in log.splitlines() if "bad request from 127.0.0.1" in line]
    assert len(lines) == 1 and " INFO " in lines[0], log
    assert "Traceback" not in log and " ERROR " not in log
    assert "s3cret" not in log
