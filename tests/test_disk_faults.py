"""A disk that refuses a write: the client hears 503, the log stays readable.

The fault is injected at the operating-system boundary (``os.fsync`` inside
``events.fsio``); the storage code under test is the real one.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import events.fsio
from events.logs import parse_log


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
