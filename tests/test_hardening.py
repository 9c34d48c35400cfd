"""Regression tests for the hardening fixes: each names the failure it guards against.

One log per issue and nothing else under events/, keys rebuilt from events, scoped
idempotency keys on every POST (multipart too), strong If-Match,
 order-blind custom fields, tolerant evolve, bad
bodies as 400s, part limits, forwarded-for with several header lines, links from the
client's host, strict list numbers, one-line CLI failures and null public URLs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from events.codec import dump_item
from events.model import Actor, Event
from hydraissue.cli import main
from hydraissue.commands import CreateIssue
from hydraissue.config import Config
from hydraissue.evolve import evolve
from hydraissue.service import IssueService
from tests.conftest import API_TOKEN, AUTH, ClientFactory, guarded_site
from web.app import create_app
from web.keys import SERVICE

Client = TestClient[Any, web.Application]
JSON_ACCEPT = {"Accept": "application/json"}
FORM_CT = {"Content-Type": "application/x-www-form-urlencoded"}
BOUNDARY = "hardening-boundary-7d1f"
MULTIPART_CT = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(parts: list[tuple[str, bytes, str | None]]) -> bytes:
    """A multipart/form-data body by hand: (name, value, part Content-Type or None)."""
    out = bytearray()
    for name, value, ctype in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"\r\n'.encode()
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + value + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


async def assert_json_error(resp: Any, status: int, field: str | None = None) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error", "code", "detail"}
    assert body["code"] == status
    if field is not None:
        assert body["detail"]["field"] == field, body
        assert body["error"].startswith(f"{field}:"), body
    return body


async def create(client: Client, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/issues", json={"title": "Hardened", **fields}, headers=auth)
    assert resp.status == 201, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


# -- 1. every file under events/ is an issue: no placeholder logs -----------------------


async def test_concurrent_creates_leave_one_log_per_issue_and_nothing_else(
    tmp_path: Path,
) -> None:
    service = IssueService(tmp_path / "data")
    await service.start()
    try:
        outcomes = await asyncio.gather(
            *(service.handle(CreateIssue(title=f"load {n}"), Actor("api")) for n in range(300))
        )
        created = sorted(o.issue.id for o in outcomes)
        assert created == list(range(1, 301))
        logs = sorted(p.name for p in (tmp_path / "data" / "events").iterdir())
        assert logs == sorted(f"{i}.yaml" for i in created)
        assert all(p.stat().st_size > 0 for p in (tmp_path / "data" / "events").iterdir())
        positions = sorted(o.events[0].pos for o in outcomes)
        assert positions == list(range(1, 301))  # commit order, no gaps
    finally:
        await service.stop()


async def test_empty_logs_left_by_an_older_build_are_removed(tmp_path: Path) -> None:
    """The previous build preallocated empty logs; they are not issues."""
    data_dir = tmp_path / "data"
    (data_dir / "events").mkdir(parents=True)
    (data_dir / "events" / "1.yaml").write_bytes(dump_item(_created_event(1)))
    for issue_id in range(2, 258):
        (data_dir / "events" / f"{issue_id}.yaml").touch()
    service = IssueService(data_dir)
    await service.start()
    try:
        assert service.read_model.count() == 1
        assert sorted(p.name for p in (data_dir / "events").iterdir()) == ["1.yaml"]
        made = await service.handle(CreateIssue(title="next"), Actor("api"))
        assert made.issue.id == 2
    finally:
        await service.stop()


# -- 2. idempotency records are derived from the events they came with ------------------


@pytest.mark.parametrize("damage", ["torn keys, no index", "keys lost, index current"])
async def test_keys_survive_a_lost_or_torn_key_snapshot(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str], damage: str
) -> None:
    client = await aiohttp_client(create_app(config))
    key = {"Idempotency-Key": "snap-1"}
    first = await client.post("/api/v1/issues", json={"title": "once"}, headers={**auth, **key})
    assert first.status == 201
    made = await first.json()
    await client.close()
    keys = config.data_path / "idempotency.yaml"
    if damage == "torn keys, no index":
        keys.write_bytes(keys.read_bytes()[:-7])  # torn, as by a crash mid-write
        (config.data_path / "issues.yaml").unlink()  # and no index: fold the logs again
    else:
        keys.unlink()

    again = await aiohttp_client(create_app(config))
    retry = await again.post("/api/v1/issues", json={"title": "once"}, headers={**auth, **key})
    assert retry.status == 201
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert (await retry.json())["id"] == made["id"]
    assert (await again.get("/api/v1/issues", headers=auth)).headers["X-Total-Count"] == "1"


# -- 3. idempotency keys: on multipart too, scoped per area -----------------------------


async def test_a_keyed_multipart_report_sent_twice_creates_one_issue(
    client: Client, auth: dict[str, str]
) -> None:
    body = multipart([("title", b"Uploaded", None)])
    headers = {"Content-Type": MULTIPART_CT, "Idempotency-Key": "k-1", **JSON_ACCEPT}
    first = await client.post("/report", data=body, headers=headers)
    assert first.status == 201, await first.text()
    second = await client.post("/report", data=body, headers=headers)
    assert second.status == 201
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert (await second.json())["id"] == (await first.json())["id"]
    other = multipart([("title", b"Something else", None)])
    reused = await client.post("/report", data=other, headers=headers)
    await assert_json_error(reused, 422)
    listed = await client.get("/api/v1/issues", headers=auth)
    assert listed.headers["X-Total-Count"] == "1"


async def test_a_keyed_browser_report_sent_twice_redirects_to_one_issue(
    client: Client, auth: dict[str, str]
) -> None:
    """The HTML path answers 303; its retry must find the first result too."""
    headers = {**FORM_CT, "Idempotency-Key": "form-1"}
    first = await client.post("/report", data="title=Twice", headers=headers, allow_redirects=False)
    assert first.status == 303
    second = await client.post(
        "/report", data="title=Twice", headers=headers, allow_redirects=False
    )
    assert second.status == 303
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    listed = await client.get("/api/v1/issues", headers=auth)
    assert listed.headers["X-Total-Count"] == "1"


async def test_a_keyed_comment_and_nim_action_replay_their_first_answer(
    client: Client, auth: dict[str, str]
) -> None:
    issue = await create(client, auth)
    url = f"/api/v1/issues/{issue['id']}"
    for path, body in (
        ("comments", {"author": "a", "text": "once"}),
        ("nim-actions", {"name": "nebula", "action": "groomed"}),
    ):
        key = {"Idempotency-Key": f"k-{path}"}
        first = await client.post(f"{url}/{path}", json=body, headers={**auth, **key})
        assert first.status == 201
        # something else happens in between: the replay still names the first result
        await client.post(f"{url}/comments", json={"text": "other"}, headers=auth)
        again = await client.post(f"{url}/{path}", json=body, headers={**auth, **key})
        assert again.status == 201
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert await again.json() == await first.json()
    final = await (await client.get(url, headers=auth)).json()
    assert [c["text"] for c in final["comments"]] == ["once", "other", "other"]
    assert len(final["nim_actions"]) == 1


async def test_idempotency_keys_are_scoped_per_area(client: Client, auth: dict[str, str]) -> None:
    key = {"Idempotency-Key": "shared-key"}
    public = await client.post(
        "/report", data="title=From+the+form", headers={**FORM_CT, **JSON_ACCEPT, **key}
    )
    assert public.status == 201, await public.text()
    public_id = (await public.json())["id"]

    first = await client.post(
        "/api/v1/issues", json={"title": "From the API"}, headers={**auth, **key}
    )
    assert first.status == 201, await first.text()
    assert "Idempotent-Replayed" not in first.headers
    made = await first.json()
    assert made["id"] != public_id
    assert made["title"] == "From the API"

    again = await client.post(
        "/api/v1/issues", json={"title": "From the API"}, headers={**auth, **key}
    )
    assert again.status == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (await again.json())["id"] == made["id"]
    assert again.headers["Location"] == f"/api/v1/issues/{made['id']}"
    total = await client.get("/api/v1/issues", headers=auth)
    assert total.headers["X-Total-Count"] == "2"


# -- 4. If-Match is strong, If-None-Match weak ----------------------------------------


async def test_weak_if_match_fails_and_weak_if_none_match_hits(
    client: Client, auth: dict[str, str]
) -> None:
    issue = await create(client, auth)
    got = await client.get(f"/api/v1/issues/{issue['id']}", headers=auth)
    etag = got.headers["ETag"]
    assert not etag.startswith("W/")

    patched = await client.patch(
        f"/api/v1/issues/{issue['id']}",
        json={"priority": "high"},
        headers={**auth, "If-Match": f"W/{etag}"},
    )
    body = await assert_json_error(patched, 412)
    assert body["detail"]["etag"] == etag
    after = await (await client.get(f"/api/v1/issues/{issue['id']}", headers=auth)).json()
    assert after["priority"] is None

    cached = await client.get(
        f"/api/v1/issues/{issue['id']}", headers={**auth, "If-None-Match": f"W/{etag}"}
    )
    assert cached.status == 304
    assert cached.headers["ETag"] == etag


# -- 5. custom_fields compare by value, not key order ---------------------------------


async def test_reordered_custom_fields_write_no_event(client: Client, auth: dict[str, str]) -> None:
    issue = await create(client, auth, custom_fields={"head": "H-07", "venue": "Hall B", "n": 3})
    url = f"/api/v1/issues/{issue['id']}"
    etag = (await client.get(url, headers=auth)).headers["ETag"]
    events_before = await (await client.get(f"{url}/events", headers=auth)).json()
    assert len(events_before) == 1

    resp = await client.patch(
        url, json={"custom_fields": {"n": 3, "venue": "Hall B", "head": "H-07"}}, headers=auth
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["ETag"] == etag
    events_after = await (await client.get(f"{url}/events", headers=auth)).json()
    assert len(events_after) == 1
    assert (await client.get(url, headers=auth)).headers["ETag"] == etag


# -- 6. evolve ignores fields it does not know ----------------------------------------


def test_evolve_ignores_an_unknown_updated_field() -> None:
    created = Event(
        issue_id=1,
        seq=1,
        pos=1,
        type="issue.created",
        at="2024-05-01T10:00:00Z",
        actor=Actor("api"),
        data={"title": "Old build", "description": ""},
    )
    updated = Event(
        issue_id=1,
        seq=2,
        pos=2,
        type="issue.updated",
        at="2024-05-01T11:00:00Z",
        actor=Actor("api"),
        data={"changes": {"status": "groomed", "from_the_future": 1}, "previous": {}},
    )
    state = evolve(evolve(None, created), updated)
    assert state.status == "groomed"
    assert state.seq == 2
    assert state.updated_at == "2024-05-01T11:00:00Z"
    assert state.title == "Old build"
    assert not hasattr(state, "from_the_future")


# -- 7. bad bodies are 400s, odd charsets fall back to UTF-8 --------------------------


async def test_content_encoding_gzip_with_a_plain_body_is_a_400(
    client: Client, auth: dict[str, str]
) -> None:
    # aiohttp drops the connection after a body it could not decode: do not reuse it.
    headers = {**auth, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    resp = await client.post(
        "/api/v1/issues",
        data=b'{"title": "not gzip at all"}',
        headers={**headers, "Connection": "close"},
    )
    body = await assert_json_error(resp, 400)
    assert "could not be read" in body["error"]
    assert client.app[SERVICE].read_model.count() == 0
    health = await client.get("/api/v1/health")  # a new connection is served as usual
    assert health.status == 200


async def test_real_gzip_body_is_still_accepted(client: Client, auth: dict[str, str]) -> None:
    resp = await client.post(
        "/api/v1/issues",
        data=gzip.compress(b'{"title": "zipped"}'),
        headers={**auth, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["title"] == "zipped"


async def test_urlencoded_report_with_invalid_utf8_is_a_400(client: Client) -> None:
    resp = await client.post("/report", data=b"title=\xff\xfe", headers={**FORM_CT, **JSON_ACCEPT})
    await assert_json_error(resp, 400, "body")


async def test_multipart_text_with_an_unknown_charset_is_read_as_utf8(
    client: Client, auth: dict[str, str]
) -> None:
    title = "Café crème ✓"
    body = multipart(
        [
            ("title", title.encode(), "text/plain; charset=bogus"),
            ("description", "naïve".encode(), "text/plain; charset=bogus"),
        ]
    )
    resp = await client.post(
        "/report", data=body, headers={"Content-Type": MULTIPART_CT, **JSON_ACCEPT}
    )
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert made["title"] == title
    assert made["description"] == "naïve"
    stored = await (await client.get(f"/api/v1/issues/{made['id']}", headers=auth)).json()
    assert stored["title"] == title


# -- 8. too many multipart parts ------------------------------------------------------

MANY_PARTS = multipart(
    [("title", b"Many parts", None)] + [(f"extra{i}", b"x", None) for i in range(149)]
)


async def test_too_many_parts_shows_the_form_with_413(client: Client, auth: dict[str, str]) -> None:
    resp = await client.post("/report", data=MANY_PARTS, headers={"Content-Type": MULTIPART_CT})
    assert resp.status == 413
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<form method="post" action="/report"' in page
    assert "too many parts (at most 100)" in page
    assert 'value="Many parts"' in page  # what was typed is kept
    listed = await client.get("/api/v1/issues", headers=auth)
    assert listed.headers["X-Total-Count"] == "0"


async def test_too_many_parts_is_a_json_413(client: Client) -> None:
    resp = await client.post(
        "/report", data=MANY_PARTS, headers={"Content-Type": MULTIPART_CT, **JSON_ACCEPT}
    )
    body = await assert_json_error(resp, 413)
    assert "too many parts" in body["error"]


# -- 9. X-Forwarded-For across several header lines -----------------------------------


async def test_forged_first_forwarded_line_does_not_pick_the_rate_limit_key(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    cfg = dataclasses.replace(
        config, trusted_proxies=("127.0.0.1",), report_rate_limit=1, report_rate_burst=1
    )
    client = await aiohttp_client(create_app(cfg))

    async def report(first: str, last: str) -> Any:
        headers = CIMultiDict(
            [
                ("X-Forwarded-For", first),  # written by the client
                ("X-Forwarded-For", last),  # appended by the trusted proxy
                ("Accept", "application/json"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ]
        )
        return await client.post("/report", data="title=Rate+limited", headers=headers)

    first = await report("198.51.100.1", "203.0.113.7")
    assert first.status == 201, await first.text()
    second = await report("198.51.100.2", "203.0.113.7")
    body = await assert_json_error(second, 429)
    assert int(second.headers["Retry-After"]) >= 1
    assert body["detail"]["retry_after"] >= 1
    # Another real client behind the same proxy still gets through.
    other = await report("203.0.113.7", "192.0.2.55")
    assert other.status == 201, await other.text()


# -- 10. links use the host the client used -------------------------------------------


async def test_link_header_uses_the_client_host_without_base_url(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    cfg = dataclasses.replace(config, base_url="", listen="0.0.0.0:8080")
    client = await aiohttp_client(create_app(cfg))
    await create(client, auth)
    await create(client, auth)
    resp = await client.get("/api/v1/issues?limit=1", headers=auth)
    assert resp.status == 200
    link = resp.headers["Link"]
    origin = f"http://{client.host}:{client.port}"
    assert link.startswith(f"<{origin}/api/v1/issues?"), link
    assert "0.0.0.0" not in link
    assert "offset=1" in link and 'rel="next"' in link


# -- 11. list numbers are plain ASCII digits ------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("limit", "+5"), ("limit", "1_0"), ("offset", "٣"), ("offset", "9" * 5000)],
    ids=["plus", "underscore", "arabic-indic", "5000-nines"],
)
async def test_list_numbers_must_be_ascii_digits(
    client: Client, auth: dict[str, str], field: str, value: str
) -> None:
    resp = await client.get("/api/v1/issues", params={field: value}, headers=auth)
    await assert_json_error(resp, 400, field)


# -- 12. CLI: one line for a bad data dir or a damaged log ----------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _created_event(issue_id: int) -> Event:
    return Event(
        issue_id=issue_id,
        seq=1,
        pos=issue_id,
        type="issue.created",
        at="2024-05-01T10:00:00Z",
        actor=Actor("api"),
        data={"title": f"Issue {issue_id}", "description": ""},
    )


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HYDRAISSUE_DATA_DIR", "HYDRAISSUE_LISTEN"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HYDRAISSUE_API_TOKEN", "a")
    monkeypatch.setenv("HYDRAISSUE_ADMIN_TOKEN", "b")


def _serve(data_dir: Path) -> int:
    return main(["serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{_free_port()}"])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.usefixtures("cli_env")
def test_serve_on_an_unusable_data_dir_blames_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "events").mkdir(parents=True)
    (data_dir / "events" / "1.yaml").write_bytes(dump_item(_created_event(1)))
    (data_dir / "issues.yaml").mkdir()
    assert _serve(data_dir) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"hydraissue: cannot use the data dir {data_dir}"), line
    assert "cannot listen" not in line
    assert "issues.yaml" in line


async def test_a_duplicated_seq_takes_out_only_its_issue(
    aiohttp_client: ClientFactory,
    config: Config,
    auth: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = config.data_path
    (data_dir / "events").mkdir(parents=True)
    line = dump_item(_created_event(1))
    (data_dir / "events" / "1.yaml").write_bytes(line + line)  # two lines with seq 1
    (data_dir / "events" / "2.yaml").write_bytes(dump_item(_created_event(2)))

    client = await aiohttp_client(create_app(config))
    damaged = await client.get("/api/v1/issues/1", headers=auth)
    body = await assert_json_error(damaged, 503)
    assert "HYDRA-1 is unavailable" in body["error"]
    assert "seq 1 where 2 was expected" in body["detail"]["reason"]
    assert (await client.get("/api/v1/issues/2", headers=auth)).status == 200
    health = await (await client.get("/api/v1/health")).json()
    assert health["status"] == "degraded"
    assert "HYDRA-1" in health["extra"]["unavailable"]
    await client.close()

    code = await asyncio.to_thread(main, ["verify", "--data-dir", str(data_dir)])
    out, _ = capsys.readouterr()
    assert code == 1
    problems = [p for p in out.splitlines() if p.startswith("  - ")]
    assert any("seq 1 where 2 was expected" in p for p in problems), out
    assert not any("issue 2" in p or "issues/2.yaml" in p for p in problems), out
    assert os.path.getsize(data_dir / "events" / "1.yaml") == 2 * len(line)  # untouched


# -- 13. no public view, no public URL ------------------------------------------------


async def test_report_url_is_null_without_the_public_view(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(config, public_view=False)))
    resp = await client.post("/report", data="title=Private", headers={**FORM_CT, **JSON_ACCEPT})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert "url" in body and body["url"] is None
    assert body["title"] == "Private"


async def test_report_url_is_set_with_the_public_view(client: Client) -> None:
    resp = await client.post("/report", data="title=Public", headers={**FORM_CT, **JSON_ACCEPT})
    assert resp.status == 201
    body = await resp.json()
    assert body["url"] == f"http://testserver/issues/{body['id']}"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/issues/1", "/api/v1/issues", "/admin", "/metrics"],
)
async def test_a_token_that_is_not_utf8_is_refused_not_a_500(
    config: Config, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not UTF-8 in ``Authorization`` (the lane's and every route's
    token check): a 401, without a traceback in the log."""
    config = dataclasses.replace(config, metrics_token="metrics-token")
    runner, base = await guarded_site(create_app(config))
    try:
        host, port = base.removeprefix("http://").split(":")
        status, body = await asyncio.to_thread(_raw_get, host, int(port), path.encode())
        assert status == 401, body
        assert b"Traceback" not in body
        assert "Traceback" not in caplog.text and "UnicodeEncodeError" not in caplog.text
    finally:
        await runner.cleanup()


def _raw_get(host: str, port: int, path: bytes) -> tuple[int, bytes]:
    return _raw(
        host,
        port,
        b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
        b"Authorization: Bearer \xff\xfe\r\n" + CLOSE,
    )


async def test_headers_that_are_not_utf8_get_4xx_and_leave_other_writes_alone(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``Idempotency-Key`` of undecodable bytes is a 400 (it would be committed with
    the event: encoding it failed the whole commit batch, 503 for every write in it),
    an admin cookie of such bytes is no session (it was a 500); writes go on."""
    runner, base = await guarded_site(create_app(config))
    try:
        host, port = base.removeprefix("http://").split(":")
        body = b'{"title":"x"}'
        keyed = (
            b"POST /api/v1/issues HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + API_TOKEN.encode()
            + b"\r\nIdempotency-Key: \xff\xfe\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )
        status, answer = await asyncio.to_thread(_raw, host, int(port), keyed)
        assert status == 400 and b"Idempotency-Key" in answer, answer
        cookie = b"GET /admin HTTP/1.1\r\nHost: x\r\nCookie: admin_session=\xff\xfe\r\n"
        status, _ = await asyncio.to_thread(_raw, host, int(port), cookie + CLOSE)
        assert status == 303  # to the login form, as without a session
        async with (
            aiohttp.ClientSession(base) as session,
            session.post("/api/v1/issues", json={"title": "y"}, headers=AUTH) as resp,
        ):
            assert resp.status == 201
        assert "Traceback" not in caplog.text
    finally:
        await runner.cleanup()


CLOSE = b"Connection: close\r\n\r\n"


def _raw(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body
