"""``hydraissue backup`` beside a live server under writes, and ``hydraissue restore``.

Real servers (``hydraissue serve`` processes), real archives, real data dirs in
``tmp_path``: the backup is cut at one committed position, restores into a dir that
verifies and answers every issue acknowledged before the backup started, refuses what
is unsafe, and writes nothing into the data dir it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import FormData

from tests.conftest import AUTH, BIN, make_png, server_env, start_server, stop

PNG = make_png(32, 24)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], env=server_env(home), capture_output=True, text=True, timeout=120
    )


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns)."""
    out: dict[str, tuple[int, int]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            out[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return out


def events_in(logs: dict[str, bytes]) -> set[tuple[int, int, int]]:
    """(issue, seq, pos) of every event line in the given log files."""
    found: set[tuple[int, int, int]] = set()
    for data in logs.values():
        for line in data.splitlines():
            raw = orjson.loads(line[2:])
            found.add((raw["issue_id"], raw["seq"], raw["pos"]))
    return found


def archive_logs(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        manifest_file = tar.extractfile("MANIFEST.json")
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
        logs: dict[str, bytes] = {}
        for member in tar.getmembers():
            if member.name.startswith("events/"):
                handle = tar.extractfile(member)
                assert handle is not None
                logs[member.name] = handle.read()
    return manifest, logs


def attachment_form(name: str, data: bytes) -> FormData:
    form = FormData(quote_fields=False, default_to_multipart=True)
    form.add_field("file", data, filename=name, content_type="image/png")
    return form


async def create(session: aiohttp.ClientSession, url: str, title: str) -> int:
    async with session.post(f"{url}/api/v1/issues", json={"title": title}, headers=AUTH) as resp:
        assert resp.status == 201, await resp.text()
        issue_id: int = (await resp.json())["id"]
        return issue_id


async def comment(session: aiohttp.ClientSession, url: str, issue_id: int, text: str) -> None:
    async with session.post(
        f"{url}/api/v1/issues/{issue_id}/comments",
        json={"author": "tester", "text": text},
        headers=AUTH,
    ) as resp:
        assert resp.status == 201, await resp.text()


async def attach(session: aiohttp.ClientSession, url: str, issue_id: int) -> str:
    async with session.post(
        f"{url}/api/v1/issues/{issue_id}/attachments",
        data=attachment_form("shot.png", PNG),
        headers=AUTH,
    ) as resp:
        assert resp.status == 201, await resp.text()
        filename: str = (await resp.json())["filename"]
        return filename


async def writer(session: aiohttp.ClientSession, url: str, stop_at: asyncio.Event, n: int) -> int:
    """Creates, comments and attachments until told to stop; how many writes it made."""
    writes = 0
    while not stop_at.is_set():
        issue_id = await create(session, url, f"during backup {n}.{writes}")
        await comment(session, url, issue_id, "written while the backup ran")
        if writes % 3 == 0:
            await attach(session, url, issue_id)
        writes += 1
    return writes


async def test_backup_under_writes_restores_every_acknowledged_issue(tmp_path: Path) -> None:
    data_dir, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    server = await start_server(data_dir, home, tmp_path / "server.log")
    acknowledged: dict[int, str] = {}
    attached: dict[int, str] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(25):
                issue_id = await create(session, server.url, f"before backup {n}")
                await comment(session, server.url, issue_id, f"comment {n}")
                acknowledged[issue_id] = f"before backup {n}"
            attached[1] = await attach(session, server.url, 1)
            stop_at = asyncio.Event()
            writers = [
                asyncio.create_task(writer(session, server.url, stop_at, n)) for n in range(4)
            ]
            await asyncio.sleep(0.2)  # the writers are in full swing
            proc = await asyncio.create_subprocess_exec(
                str(BIN),
                "backup",
                str(tmp_path / "snap.tar.gz"),
                "--data-dir",
                str(data_dir),
                env=server_env(home),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            await asyncio.sleep(0.2)  # and writes go on after it
            stop_at.set()
            writes = await asyncio.gather(*writers)
        assert proc.returncode == 0, err.decode()
        assert "written to" in out.decode()
        assert sum(writes) > 0
    finally:
        assert stop(server, signal.SIGTERM) == 0
    assert not list(data_dir.rglob("*.tar.gz*")), "the backup wrote into the data dir"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".snap")] == []

    manifest, logs = archive_logs(tmp_path / "snap.tar.gz")
    position = manifest["position"]
    assert manifest["version"] and manifest["counts"]["issues"] == len(logs)
    # Cut at one committed position: exactly the original's events at or below it.
    original = {f"events/{p.name}": p.read_bytes() for p in (data_dir / "events").glob("*.yaml")}
    everything = events_in(original)
    assert max(pos for _, _, pos in everything) > position, "no write came after the cut"
    assert events_in(logs) == {e for e in everything if e[2] <= position}
    assert manifest["counts"]["events"] == len(events_in(logs))

    restored = tmp_path / "restored"
    done = cli(home, "restore", str(tmp_path / "snap.tar.gz"), "--data-dir", str(restored))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: verified" in done.stdout
    check = cli(home, "verify", "--data-dir", str(restored))
    assert check.returncode == 0, check.stdout + check.stderr

    again = await start_server(restored, home, tmp_path / "restored.log")
    try:
        async with aiohttp.ClientSession() as session:
            for issue_id, title in acknowledged.items():
                url = f"{again.url}/api/v1/issues/{issue_id}"
                async with session.get(url, headers=AUTH) as resp:
                    assert resp.status == 200, (issue_id, await resp.text())
                    issue = await resp.json()
                assert issue["title"] == title
                assert [c["text"] for c in issue["comments"]][:1] == [f"comment {issue_id - 1}"]
            async with session.get(f"{again.url}/uploads/1/{attached[1]}") as resp:
                assert resp.status == 200 and await resp.read() == PNG
    finally:
        assert stop(again, signal.SIGTERM) == 0


async def test_backup_leaves_the_data_dir_as_it_was(tmp_path: Path) -> None:
    data_dir, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    server = await start_server(data_dir, home, tmp_path / "server.log")
    try:
        async with aiohttp.ClientSession() as session:
            issue_id = await create(session, server.url, "kept")
            await attach(session, server.url, issue_id)
    finally:
        assert stop(server, signal.SIGTERM) == 0
    before = tree(data_dir)
    os.chmod(data_dir, 0o555)  # and it needs no write access to it at all
    try:
        done = cli(home, "backup", str(tmp_path / "b.tar.gz"), "--data-dir", str(data_dir))
    finally:
        os.chmod(data_dir, 0o755)
    assert done.returncode == 0, done.stderr
    assert tree(data_dir) == before
    manifest, _ = archive_logs(tmp_path / "b.tar.gz")
    assert manifest["counts"] == {"issues": 1, "events": 2, "uploads": 1, "files": 2}
    inside = cli(home, "backup", str(data_dir / "b.tar.gz"), "--data-dir", str(data_dir))
    assert inside.returncode == 1
    assert inside.stderr.count("\n") == 1 and "inside the data dir" in inside.stderr


# -- restore refuses ---------------------------------------------------------------------


async def small_backup(tmp_path: Path) -> tuple[Path, Path]:
    """An archive of a data dir with two issues (one attachment); and the home."""
    data_dir, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    server = await start_server(data_dir, home, tmp_path / "server.log")
    try:
        async with aiohttp.ClientSession() as session:
            first = await create(session, server.url, "one")
            await create(session, server.url, "two")
            await attach(session, server.url, first)
    finally:
        assert stop(server, signal.SIGTERM) == 0
    archive = tmp_path / "good.tar.gz"
    done = cli(home, "backup", str(archive), "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return archive, home


def rewrite(src: Path, dest: Path, change: dict[str, bytes], extra: list[tarfile.TarInfo]) -> None:
    """A copy of an archive with some members' bytes changed and members added."""
    with tarfile.open(src, "r:gz") as old, tarfile.open(dest, "w:gz") as new:
        for member in old.getmembers():
            handle = old.extractfile(member)
            assert handle is not None
            data = change.get(member.name, handle.read())
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
        for member in extra:
            new.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)


def refused(home: Path, archive: Path, target: Path) -> str:
    done = cli(home, "restore", str(archive), "--data-dir", str(target))
    assert done.returncode == 1, done.stdout
    assert done.stderr.count("\n") == 1, done.stderr
    leftover = [p.name for p in target.iterdir()] if target.exists() else []
    assert leftover in ([], [".lock"]), leftover
    return done.stderr


async def test_restore_refuses_a_non_empty_dir_and_unsafe_archives(tmp_path: Path) -> None:
    archive, home = await small_backup(tmp_path)

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    done = cli(home, "restore", str(archive), "--data-dir", str(busy))
    assert done.returncode == 1 and "is not empty (notes.txt)" in done.stderr
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    with tarfile.open(archive, "r:gz") as tar:
        handle = tar.extractfile("events/1.yaml")
        assert handle is not None
        log = handle.read()
    tampered = tmp_path / "tampered.tar.gz"
    rewrite(archive, tampered, {"events/1.yaml": log.replace(b'"one"', b'"evil"')}, [])
    assert "does not match its checksum" in refused(home, tampered, tmp_path / "t1")

    evil = tarfile.TarInfo("../evil")
    evil.size = 4
    escaping = tmp_path / "escaping.tar.gz"
    rewrite(archive, escaping, {}, [evil])
    assert "'../evil' leaves the data dir" in refused(home, escaping, tmp_path / "t2")
    assert not (tmp_path / "evil").exists()

    link = tarfile.TarInfo("events/9.yaml")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    linked = tmp_path / "linked.tar.gz"
    rewrite(archive, linked, {}, [link])
    assert "is a link" in refused(home, linked, tmp_path / "t3")

    absolute = tarfile.TarInfo("/tmp/hydraissue-absolute")
    absolute.size = 1
    rooted = tmp_path / "rooted.tar.gz"
    rewrite(archive, rooted, {}, [absolute])
    assert "is an absolute path" in refused(home, rooted, tmp_path / "t4")

    unlisted = tarfile.TarInfo("events/99.yaml")
    unlisted.size = 3
    sneaky = tmp_path / "sneaky.tar.gz"
    rewrite(archive, sneaky, {}, [unlisted])
    assert "not in the manifest" in refused(home, sneaky, tmp_path / "t5")

    with contextlib.suppress(FileNotFoundError):
        (tmp_path / "garbage.tar.gz").write_bytes(b"not an archive")
    assert "not a readable tar.gz" in refused(home, tmp_path / "garbage.tar.gz", tmp_path / "t6")

    fine = tmp_path / "fine"
    done = cli(home, "restore", str(archive), "--data-dir", str(fine))
    assert done.returncode == 0, done.stdout + done.stderr
    assert cli(home, "verify", "--data-dir", str(fine)).returncode == 0
