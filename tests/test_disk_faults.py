"""A disk that refuses a write: the client hears 503, nothing is left behind, the log
stays readable; and what a crash leaves (temp files) is cleared at start-up.

The fault is injected at the operating-system boundary (``os.fsync`` inside
``events.fsio``); the storage code under test is the real one.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

import events.fsio
from events.logs import parse_log
from tests.conftest import settled


def _failing_fsync(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_failed_append_is_503_and_leaves_no_torn_record(
    client: TestClient[Any, Any],
    auth: dict[str, str],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await client.post("/api/v1/issues", json={"title": "before"}, headers=auth)
    assert created.status == 201
    log_path = data_dir / "events" / "1.yaml"
    size_before = log_path.stat().st_size

    with monkeypatch.context() as patch:
        patch.setattr(events.fsio.os, "fsync", _failing_fsync)
        failed = await client.post(
            "/api/v1/issues/1/comments", json={"author": "a", "text": "lost"}, headers=auth
        )
        assert failed.status == 503
        body = await failed.json()
        assert set(body) == {"error", "code", "detail"} and body["code"] == 503

    # The half-written record was cut back: the file is exactly as before.
    assert log_path.stat().st_size == size_before
    issue = await (await client.get("/api/v1/issues/1", headers=auth)).json()
    assert issue["comments"] == []

    # The next write lands after the last good record and reads back.
    ok = await client.post(
        "/api/v1/issues/1/comments", json={"author": "a", "text": "kept"}, headers=auth
    )
    assert ok.status == 201
    logged = parse_log(1, log_path.read_bytes()).events
    assert [e.type for e in logged] == ["issue.created", "comment.added"]
    assert logged[-1].data["text"] == "kept"


def _refuse(code: int) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    return refuse


@pytest.mark.parametrize(
    ("target", "code"),
    [("os.fsync", errno.ENOSPC), ("os.replace", errno.EROFS)],
    ids=["receiving-the-file-disk-full", "placing-the-file-read-only"],
)
@pytest.mark.parametrize("route", ["report", "api"])
async def test_an_upload_the_disk_refuses_is_503_and_leaves_nothing(
    client: TestClient[Any, Any],
    auth: dict[str, str],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    code: int,
    route: str,
) -> None:
    created = await client.post("/api/v1/issues", json={"title": "target"}, headers=auth)
    assert created.status == 201
    await settled(client)  # background writes done before the disk "fills"
    form = FormData()
    if route == "report":
        url, field, headers = "/report", "attachments", {"Accept": "application/json"}
        form.add_field("title", "with a file")
    else:
        url, field, headers = "/api/v1/issues/1/attachments", "file", auth
    form.add_field(field, b"x" * 5000, filename="notes.txt", content_type="text/plain")
    with monkeypatch.context() as patch:
        patch.setattr(f"hydraissue.uploads.{target}", _refuse(code))
        resp = await client.post(url, data=form, headers=headers)
        assert resp.status == 503, await resp.text()
        body = await resp.json()
        assert set(body) == {"error", "code", "detail"} and body["code"] == 503
        assert body["detail"]["reason"] == os.strerror(code)
    uploads = data_dir / "uploads"
    assert [p for p in uploads.rglob("*") if p.is_file()] == []
    assert [p.name for p in uploads.iterdir()] == [".incoming"]
    listed = await (await client.get("/api/v1/issues", headers=auth)).json()
    assert [i["title"] for i in listed] == ["target"]
    assert listed[0]["attachments"] == []


async def test_the_html_form_gets_a_503_page_when_the_disk_refuses(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    form = FormData()
    form.add_field("title", "with a file")
    form.add_field("attachments", b"x" * 10, filename="a.txt", content_type="text/plain")
    with monkeypatch.context() as patch:
        patch.setattr("hydraissue.uploads.os.fsync", _refuse(errno.ENOSPC))
        resp = await client.post("/report", data=form)
    assert resp.status == 503
    assert resp.content_type == "text/html"
    assert "Traceback" not in await resp.text()


async def test_stale_temp_files_are_removed_at_start_up(
    aiohttp_client: Any, config: Any, data_dir: Path
) -> None:
    from web.app import create_app

    first = await aiohttp_client(create_app(config))
    created = await first.post(
        "/api/v1/issues", json={"title": "t"}, headers={"Authorization": "Bearer test-api-token"}
    )
    assert created.status == 201
    await first.close()
    stale = [
        data_dir / "issues" / ".1.yaml.1a2b3c4d.tmp",
        data_dir / ".issues.yaml.5e6f7a8b.tmp",
        data_dir / "subscribers" / ".issue-files.yaml.9c0d1e2f.tmp",
        data_dir / "uploads" / ".incoming" / "0123456789ab.part",
    ]
    for path in stale:
        path.write_bytes(b"left by a crash")
    await aiohttp_client(create_app(config))
    assert [p for p in stale if p.exists()] == []
