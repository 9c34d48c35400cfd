"""A disk that is full (ENOSPC) or read-only (EROFS) at start-up: the server starts,
serves reads, refuses writes with 503, and says so in health and the log.

The disk is a real one: a small tmpfs mounted for the test (needs root; skipped with
the reason otherwise), filled with a file, or remounted read-only.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import AUTH, Server, start_server, stop


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs to fill ({done.stderr.strip() or 'not root'}); "
            "run as root (or in a container with CAP_SYS_ADMIN) to test a full disk"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    with pytest.raises(OSError):
        (disk / "probe").write_bytes(b"x" * 8192)


async def populate(data_dir: Path, home: Path, log: Path) -> list[int]:
    server = await start_server(data_dir, home, log)
    ids = []
    async with aiohttp.ClientSession() as session:
        for n in range(30):
            async with session.post(
                f"{server.url}/api/v1/issues", json={"title": f"kept {n}"}, headers=AUTH
            ) as resp:
                assert resp.status == 201
                ids.append((await resp.json())["id"])
    assert stop(server, signal.SIGTERM) == 0
    return ids


async def check_read_only(server: Server, ids: list[int], reason: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/api/v1/health") as resp:
            health: dict[str, Any] = await resp.json()
        assert health["status"] == "degraded"
        assert reason in health["extra"]["storage"]
        assert "writes answer 503" in health["extra"]["storage"]
        for issue_id in ids:
            async with session.get(f"{server.url}/api/v1/issues/{issue_id}", headers=AUTH) as resp:
                assert resp.status == 200
        async with session.get(f"{server.url}/api/v1/issues", headers=AUTH) as resp:
            assert resp.status == 200
            assert len(await resp.json()) == len(ids)
        async with session.post(
            f"{server.url}/api/v1/issues", json={"title": "refused"}, headers=AUTH
        ) as resp:
            assert resp.status == 503
            assert reason in (await resp.json())["error"]
        async with session.post(
            f"{server.url}/api/v1/issues/{ids[0]}/comments",
            json={"author": "a", "text": "refused"},
            headers=AUTH,
        ) as resp:
            assert resp.status == 503
    assert stop(server, signal.SIGTERM) == 0
    output = server.output()
    assert "ERROR hydraissue.service: start-up: the data dir's disk refused a write" in output
    assert reason in output


async def test_a_full_disk_at_start_up_serves_reads_and_refuses_writes(
    small_disk: Path, tmp_path: Path
) -> None:
    data_dir, home, log = small_disk / "data", tmp_path / "home", tmp_path / "server.log"
    ids = await populate(data_dir, home, log)
    # Start-up must write: the position index is rebuilt (as after losing it).
    (data_dir / "positions.idx").unlink()
    fill(small_disk)
    server = await start_server(data_dir, home, log)
    await check_read_only(server, ids, "No space left on device")
    # Room again: a restart serves writes.
    (small_disk / "filler").unlink()
    server = await start_server(data_dir, home, log)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.url}/api/v1/issues", json={"title": "after"}, headers=AUTH
        ) as resp:
            assert resp.status == 201
        async with session.get(f"{server.url}/api/v1/health") as resp:
            assert (await resp.json())["status"] == "ok"
    assert stop(server, signal.SIGTERM) == 0


async def test_a_read_only_disk_at_start_up_serves_reads_and_refuses_writes(
    small_disk: Path, tmp_path: Path
) -> None:
    data_dir, home, log = small_disk / "data", tmp_path / "home", tmp_path / "server.log"
    ids = await populate(data_dir, home, log)
    os.sync()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    server = await start_server(data_dir, home, log)
    await check_read_only(server, ids, "Read-only file system")
