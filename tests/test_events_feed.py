"""``GET /api/v1/events``: the committed-event stream as JSON pages and as SSE."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from tests.conftest import AUTH, ClientFactory
from web.app import create_app
from web.feed import HUB

Client = TestClient[Any, web.Application]
SSE = {**AUTH, "Accept": "text/event-stream"}


async def create(client: Client, title: str, **extra: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/issues", json={"title": title, **extra}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


async def comment(client: Client, issue_id: int, text: str) -> None:
    resp = await client.post(
        f"/api/v1/issues/{issue_id}/comments", json={"text": text}, headers=AUTH
    )
    assert resp.status == 201


async def page(client: Client, **params: Any) -> dict[str, Any]:
    resp = await client.get("/api/v1/events", params=params, headers=AUTH)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


class Stream:
    """Reads SSE frames from a streaming response."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.comments: list[str] = []

    async def frame(self, timeout: float = 5.0) -> dict[str, str] | None:
        """The next event frame (comments are collected), or None at the end; raises
        TimeoutError when none comes within ``timeout`` seconds."""
        return await asyncio.wait_for(self._frame(), timeout)

    async def _frame(self) -> dict[str, str] | None:
        fields: dict[str, str] = {}
        while True:
            line = await self.resp.content.readline()
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if text == "":
                if fields:
                    return fields
                continue
            if text.startswith(":"):
                self.comments.append(text[1:].strip())
                continue
            name, _, value = text.partition(": ")
            fields[name] = value

    async def frames(self, count: int) -> list[dict[str, str]]:
        out = []
        for _ in range(count):
            frame = await self.frame()
            assert frame is not None, f"stream ended after {len(out)} frames"
            out.append(frame)
        return out


# -- JSON pages -----------------------------------------------------------------------


async def test_pages_walk_the_stream_in_position_order(client: Client) -> None:
    one = await create(client, "one")
    await comment(client, one["id"], "c1")
    two = await create(client, "two")
    first = await page(client, after=0, limit=2)
    assert [e["pos"] for e in first["events"]] == [1, 2]
    assert first["next"] == 2
    event = first["events"][0]
    assert set(event) == {"pos", "issue_id", "seq", "type", "at", "actor", "data", "v"}
    assert (event["issue_id"], event["seq"], event["type"]) == (one["id"], 1, "issue.created")
    rest = await page(client, after=first["next"])
    assert [(e["issue_id"], e["type"]) for e in rest["events"]] == [(two["id"], "issue.created")]
    assert rest["next"] == 3
    assert await page(client, after=3) == {"events": [], "next": 3}


async def test_filters_and_next_moves_past_skipped_events(client: Client) -> None:
    a = await create(client, "a", project="alpha")
    b = await create(client, "b", project="beta")
    for n in range(3):
        await comment(client, a["id"], f"a{n}")
        await comment(client, b["id"], f"b{n}")
    only_b = await page(client, issue_id=b["id"], type="comment.added", limit=2)
    assert [e["data"]["text"] for e in only_b["events"]] == ["b0", "b1"]
    after = await page(client, issue_id=b["id"], type="comment.added", after=only_b["next"])
    assert [e["data"]["text"] for e in after["events"]] == ["b2"]
    assert after["next"] == 8  # the last position looked at, past a's last comment
    alpha = await page(client, project="alpha")
    assert {e["issue_id"] for e in alpha["events"]} == {a["id"]}
    created = await page(client, type="issue.created,issue.deleted")
    assert [e["issue_id"] for e in created["events"]] == [a["id"], b["id"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"type": "issue.made"}, "type"),
        ({"issue_id": "01x"}, "issue_id"),
        ({"afer": "3"}, "afer"),
        ({"After": "3"}, "After"),
    ],
)
async def test_bad_parameters_are_named(client: Client, params: dict[str, str], field: str) -> None:
    resp = await client.get("/api/v1/events", params=params, headers=AUTH)
    assert resp.status == 400
    body = await resp.json()
    assert set(body) == {"error", "code", "detail"}
    assert body["error"].startswith(f"{field}:")


async def test_the_feed_needs_the_api_token(client: Client) -> None:
    assert (await client.get("/api/v1/events")).status == 401
    assert (
        await client.get("/api/v1/events", headers={"Accept": "text/event-stream"})
    ).status == 401


async def test_meta_never_leaves_the_server(client: Client) -> None:
    resp = await client.post(
        "/api/v1/issues", json={"title": "k"}, headers={**AUTH, "Idempotency-Key": "secret-key"}
    )
    assert resp.status == 201
    body = await (await client.get("/api/v1/events", headers=AUTH)).text()
    assert "secret-key" not in body and "meta" not in body
    history = await (await client.get("/api/v1/issues/1/events", headers=AUTH)).text()
    assert "secret-key" not in history


# -- Server-Sent Events ----------------------------------------------------------------


async def read_frames(client: Client, count: int, **params: Any) -> list[dict[str, str]]:
    resp = await client.get("/api/v1/events", params=params, headers=SSE)
    assert resp.status == 200
    try:
        return await Stream(resp).frames(count)
    finally:
        resp.close()


async def test_sse_sends_history_after_a_position_then_live_events(client: Client) -> None:
    first = await create(client, "before")
    resp = await client.get("/api/v1/events", params={"after": 0}, headers=SSE)
    stream = Stream(resp)
    history = await stream.frames(1)
    assert history[0]["id"] == "1" and history[0]["event"] == "issue.created"
    await comment(client, first["id"], "live")
    live = await stream.frames(1)
    assert live[0]["id"] == "2" and live[0]["event"] == "comment.added"
    assert '"text":"live"' in live[0]["data"]
    resp.close()


async def test_sse_without_a_position_starts_now(client: Client) -> None:
    await create(client, "old")
    resp = await client.get("/api/v1/events", headers=SSE)
    stream = Stream(resp)
    await asyncio.sleep(0.05)  # let the handler register before the next commit
    await create(client, "new")
    frame = await stream.frame()
    assert frame is not None and frame["id"] == "2"
    resp.close()


async def test_last_event_id_resumes_without_gap_or_duplicate(client: Client) -> None:
    issue = await create(client, "x")
    for n in range(4):
        await comment(client, issue["id"], f"c{n}")
    frames = await read_frames(client, 3, after=0)
    assert [f["id"] for f in frames] == ["1", "2", "3"]
    resp = await client.get("/api/v1/events", headers={**SSE, "Last-Event-ID": frames[-1]["id"]})
    resumed = await Stream(resp).frames(2)
    assert [f["id"] for f in resumed] == ["4", "5"]
    resp.close()


async def test_sse_filters_like_the_json_pages(client: Client) -> None:
    a = await create(client, "a")
    b = await create(client, "b")
    await comment(client, a["id"], "for a")
    await comment(client, b["id"], "for b")
    frames = await read_frames(client, 1, after=0, issue_id=b["id"], type="comment.added")
    assert frames[0]["id"] == "4" and "for b" in frames[0]["data"]


async def test_sse_sends_a_keepalive_comment(aiohttp_client: ClientFactory, config: Config) -> None:
    client = await aiohttp_client(create_app(config, feed_keepalive=0.05))
    resp = await client.get("/api/v1/events", headers=SSE)
    stream = Stream(resp)
    with pytest.raises(TimeoutError):
        await stream.frame(timeout=0.3)  # no events: only comments arrive
    assert "keep-alive" in stream.comments
    resp.close()


async def test_a_client_that_falls_too_far_behind_is_cut_off(client: Client) -> None:
    client.app[HUB].client_buffer = 2
    resp = await client.get("/api/v1/events", headers=SSE)
    stream = Stream(resp)
    await asyncio.sleep(0.05)
    form = FormData()
    form.add_field("title", "three files")
    for name in ("a.txt", "b.txt", "c.txt"):
        form.add_field("attachments", name.encode(), filename=name, content_type="text/plain")
    report = await client.post("/report", data=form, headers={"Accept": "application/json"})
    assert report.status == 201, await report.text()
    # one commit of four events is more than the client may have pending: it ends
    assert await stream.frame() is None
    assert len(client.app[HUB].clients) == 0
    resumed = await read_frames(client, 4, after=0)
    assert [f["event"] for f in resumed] == ["issue.created"] + ["attachment.added"] * 3


async def test_a_client_whose_socket_backs_up_is_cut_off(client: Client) -> None:
    client.app[HUB].max_backlog = -1  # as if its socket were full: any backlog is too much
    resp = await client.get("/api/v1/events", headers=SSE)
    stream = Stream(resp)
    await asyncio.sleep(0.05)
    await create(client, "never sent")
    assert await stream.frame() is None
    assert len(client.app[HUB].clients) == 0


async def test_many_clients_share_one_fan_out(client: Client) -> None:
    streams = []
    for _ in range(20):
        resp = await client.get("/api/v1/events", headers=SSE)
        streams.append((resp, Stream(resp)))
    await asyncio.sleep(0.05)
    assert len(client.app[HUB].clients) == 20
    await create(client, "to everyone")
    for resp, stream in streams:
        frame = await stream.frame()
        assert frame is not None and frame["id"] == "1"
        resp.close()
    await asyncio.sleep(0.05)


async def test_sse_resumes_across_a_server_restart(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    first = await aiohttp_client(create_app(config))
    issue = await create(first, "before the restart")
    await comment(first, issue["id"], "one")
    seen = await read_frames(first, 2, after=0)
    await comment(first, issue["id"], "missed while away")
    await first.close()

    second = await aiohttp_client(create_app(config))
    await comment(second, issue["id"], "after the restart")
    resp = await second.get("/api/v1/events", headers={**SSE, "Last-Event-ID": seen[-1]["id"]})
    stream = Stream(resp)
    frames = await stream.frames(2)
    assert [f["id"] for f in frames] == ["3", "4"]
    assert "missed while away" in frames[0]["data"]
    assert "after the restart" in frames[1]["data"]
    await comment(second, issue["id"], "live again")
    live = await stream.frame()
    assert live is not None and live["id"] == "5"
    resp.close()
