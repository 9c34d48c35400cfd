"""Public intake, second pass: strict answers for programs, fair limits, every file
arriving, one report per submit, nothing lost, and defences that do not tell.

All through the real app on a real data dir (``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from tests.conftest import ClientFactory, settled
from tests.test_report_form import (
    JSON_ACCEPT,
    PNG_1X1,
    api_issue,
    input_value,
    issue_id_from,
    parse_html,
    total,
)
from web.app import create_app

Client = TestClient[Any, web.Application]
HTML = {"Accept": "text/html,application/xhtml+xml"}  # what a browser's form post asks for
BASE = "http://testserver"


async def make(aiohttp_client: ClientFactory, config: Config, **changes: Any) -> Client:
    return await aiohttp_client(create_app(dataclasses.replace(config, **changes)))


async def form_token(client: Client) -> str:
    doc = parse_html(await (await client.get("/report")).text())
    token = input_value(doc, "form_token")
    assert token
    return token


def form(fields: dict[str, str], files: list[tuple[str, bytes]] = ()) -> FormData:  # type: ignore[assignment]
    data = FormData(quote_fields=False, default_to_multipart=True)
    for name, value in fields.items():
        data.add_field(name, value)
    for filename, content in files:
        data.add_field("attachments", content, filename=filename, content_type="text/plain")
    return data


def upload_form() -> FormData:
    data = FormData()
    data.add_field("file", b"y", filename="y.txt", content_type="text/plain")
    return data


# -- 1. strict and helpful for programs ------------------------------------------------

API_GETS = [
    "/api/v1/health",
    "/api/v1/runbook",
    "/api/v1/issues",
    "/api/v1/issues/1",
    "/api/v1/issues/1/events",
    "/api/v1/events",
    "/api/v1/webhooks",
    "/api/v1/nims",
    "/api/v1/stats",
    "/api/v1/reports/quality",
]


@pytest.mark.parametrize("path", API_GETS)
@pytest.mark.parametrize("param", ["Stage", "stages", "state"])
async def test_unknown_query_parameters_are_a_400_naming_them(
    client: Client, auth: dict[str, str], path: str, param: str
) -> None:
    await client.post("/api/v1/issues", json={"title": "t"}, headers=auth)
    resp = await client.get(path, params={param: "groomable"}, headers=auth)
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert set(body) == {"error", "code", "detail"}
    assert body["detail"]["field"] == param and param in body["error"]
    assert isinstance(body["detail"]["allowed"], list)
    if path == "/api/v1/issues":
        assert "stage" in body["detail"]["allowed"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/issues"),
        ("PATCH", "/api/v1/issues/1"),
        ("DELETE", "/api/v1/issues/1"),
        ("POST", "/api/v1/issues/1/comments"),
        ("POST", "/api/v1/webhooks"),
    ],
)
async def test_writes_refuse_unknown_query_parameters_too(
    client: Client, auth: dict[str, str], method: str, path: str
) -> None:
    await client.post("/api/v1/issues", json={"title": "t"}, headers=auth)
    resp = await client.request(method, f"{path}?dry_run=1", json={"title": "x"}, headers=auth)
    assert resp.status == 400
    assert (await resp.json())["detail"] == {"field": "dry_run", "allowed": []}
    assert (await client.get("/api/v1/issues/1", headers=auth)).status == 200


async def test_attachment_urls_in_json_are_absolute(client: Client, auth: dict[str, str]) -> None:
    resp = await client.post(
        "/report", data=form({"title": "with file"}, [("log.txt", b"x")]), headers=JSON_ACCEPT
    )
    assert resp.status == 201
    body = await resp.json()
    assert body["url"] == f"{BASE}/issues/{body['id']}"
    assert body["attachments"][0]["url"].startswith(f"{BASE}/uploads/{body['id']}/")
    for path in (f"/api/v1/issues/{body['id']}", "/api/v1/issues"):
        got = await (await client.get(path, headers=auth)).json()
        issue = got[0] if isinstance(got, list) else got
        assert issue["attachments"][0]["url"] == body["attachments"][0]["url"]
    added = await client.post(
        f"/api/v1/issues/{body['id']}/attachments",
        data=upload_form(),
        headers=auth,
    )
    assert (await added.json())["url"].startswith(f"{BASE}/uploads/")


async def test_html_405_pages_carry_allow(client: Client) -> None:
    resp = await client.put("/report")
    assert resp.status == 405
    assert resp.content_type == "text/html"
    assert "POST" in resp.headers["Allow"] and "GET" in resp.headers["Allow"]


async def test_ids_have_one_canonical_form(client: Client, auth: dict[str, str]) -> None:
    resp = await client.post(
        "/report", data=form({"title": "one"}, [("a.txt", b"a")]), headers=JSON_ACCEPT
    )
    filename = (await resp.json())["attachments"][0]["filename"]
    assert (await client.get("/issues/1")).status == 200
    for path in ("/issues/01", "/issues/001", f"/uploads/01/{filename}"):
        assert (await client.get(path)).status == 404, path
    assert (await client.get(f"/uploads/1/{filename}")).status == 200
    assert (await client.get("/api/v1/issues/01", headers=auth)).status == 404


async def test_numbers_are_kept_exactly_or_refused(client: Client, auth: dict[str, str]) -> None:
    exact = 2**60 + 1
    resp = await client.post(
        "/api/v1/issues",
        data=f'{{"title": "n", "custom_fields": {{"n": {exact}, "f": 1e20}}}}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert resp.status == 201
    assert (await resp.text()).count(str(exact)) == 1
    for big in (2**64, -(2**63) - 1, 10**30):
        resp = await client.post(
            "/api/v1/issues",
            data=f'{{"title": "n", "custom_fields": {{"n": {big}}}}}',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert resp.status == 400, big
        assert "too large to keep exactly" in (await resp.json())["error"]
    resp = await client.post(
        "/report", data={"title": "n", "custom_fields": f'{{"n": {10**30}}}'}, headers=JSON_ACCEPT
    )
    assert resp.status == 400
    assert await total(client, auth) == 1


async def test_the_status_error_lists_resolved(client: Client, auth: dict[str, str]) -> None:
    await client.post("/api/v1/issues", json={"title": "t"}, headers=auth)
    resp = await client.patch("/api/v1/issues/1", json={"status": "finished"}, headers=auth)
    body = await resp.json()
    assert resp.status == 400 and "resolved" in body["error"]
    assert "resolved" in body["detail"]["allowed"]


LONG = "Controller drift " * 40  # 680 characters


@pytest.mark.parametrize("accept", [JSON_ACCEPT, {}], ids=["json", "form-post"])
async def test_a_machine_report_with_a_long_title_is_kept_whole(
    client: Client, auth: dict[str, str], accept: dict[str, str]
) -> None:
    resp = await client.post(
        "/report",
        data={"title": LONG, "description": "seen on H-07"},
        headers=accept,
        allow_redirects=False,
    )
    assert resp.status in (201, 303), await resp.text()
    issue = await api_issue(client, auth, 1)
    assert len(issue["title"]) == 500 and issue["title"].endswith("…")
    assert LONG.strip().startswith(issue["title"][:-1])
    assert issue["description"] == f"{LONG.strip()}\n\nseen on H-07"


async def test_a_person_with_a_long_title_gets_the_message(
    client: Client, auth: dict[str, str]
) -> None:
    resp = await client.post("/report", data={"title": LONG}, headers=HTML)
    assert resp.status == 400
    doc = parse_html(await resp.text())
    assert "too long" in doc.by_id("title").closest("field").text()
    assert await total(client, auth) == 0


# -- 2. fair limits --------------------------------------------------------------------


async def test_failed_submissions_do_not_use_up_the_limit(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    client = await make(aiohttp_client, config, report_rate_limit=1, report_rate_burst=2)
    for _ in range(5):
        assert (await client.post("/report", data={"title": ""})).status == 400
    for n in range(2):
        resp = await client.post("/report", data={"title": f"r{n}"}, allow_redirects=False)
        assert resp.status == 303
    resp = await client.post("/report", data={"title": "r3"}, headers=JSON_ACCEPT)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    body = await resp.json()
    assert set(body) == {"error", "code", "detail"} and body["detail"]["retry_after"] >= 1
    assert await total(client, auth) == 2


async def test_a_429_re_shows_the_form_with_everything_typed(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    client = await make(aiohttp_client, config, report_rate_limit=1, report_rate_burst=1)
    assert (await client.post("/report", data={"title": "first"}, allow_redirects=False)).status
    token = await form_token(client)
    typed = {"title": "Second", "description": "more", "venue": "Hall B", "form_token": token}
    resp = await client.post("/report", data=form(typed, [("shot.txt", b"s")]), headers=HTML)
    assert resp.status == 429
    wait = int(resp.headers["Retry-After"])
    doc = parse_html(await resp.text())
    assert input_value(doc, "title") == "Second"
    assert input_value(doc, "description") == "more"
    assert input_value(doc, "venue") == "Hall B"
    assert input_value(doc, "form_token") == token
    assert doc.by_id("wait-seconds").text() == str(wait)
    assert "kept: shot.txt" in doc.by_id("kept-files").text()
    assert await total(client, auth) == 1


async def test_exempt_networks_are_never_limited(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    client = await make(
        aiohttp_client,
        config,
        report_rate_limit=1,
        report_rate_burst=1,
        report_rate_limit_exempt=("127.0.0.0/8",),
    )
    for n in range(4):
        resp = await client.post("/report", data={"title": f"kiosk {n}"}, allow_redirects=False)
        assert resp.status == 303
    assert await total(client, auth) == 4


async def test_ipv6_clients_are_counted_per_64(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await make(
        aiohttp_client,
        config,
        report_rate_limit=1,
        report_rate_burst=1,
        trusted_proxies=("127.0.0.1",),
    )

    async def post(address: str) -> int:
        resp = await client.post(
            "/report",
            data={"title": "t"},
            headers={"X-Forwarded-For": address},
            allow_redirects=False,
        )
        return resp.status

    assert await post("2001:db8:1:2::1") == 303
    assert await post("2001:db8:1:2:ffff::9") == 429  # the same /64
    assert await post("2001:db8:1:3::1") == 303  # another /64
    assert await post("::ffff:203.0.113.5") == 303
    assert await post("203.0.113.5") == 429  # mapped IPv4 is that IPv4


# -- 3. every file arrives -------------------------------------------------------------


def raw_multipart(disposition: str, content: bytes, title: str = "Named oddly") -> bytes:
    boundary = "xYzZY"
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\n{title}\r\n'
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


MULTIPART = {"Content-Type": "multipart/form-data; boundary=xYzZY", **JSON_ACCEPT}


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('form-data; name="attachments"; filename="notes;v=2;final.txt"', "notes;v=2;final.txt"),
        ("form-data; name=attachments; filename=notes;v=2;final.txt", "notes;v=2;final.txt"),
        ('form-data; name="attachments"; filename="say %22hi%22.txt"', 'say "hi".txt'),
        ('form-data; name="attachments"; filename="say \\"hi\\".txt"', 'say "hi".txt'),
        ('form-data; name="attachments"; filename="a%0D%0Ab.txt"', "ab.txt"),
        ('form-data; name="attachments"; filename="تقرير.txt"', "تقرير.txt"),
        (
            'form-data; name="attachments"; filename="x.txt"; '
            "filename*=UTF-8''%E2%82%AC%20rates.txt",
            "€ rates.txt",
        ),
    ],
)
async def test_file_names_browsers_send_are_read(
    client: Client, auth: dict[str, str], disposition: str, name: str
) -> None:
    content = b"0123456789" * 30_000  # 300 KB: a file, not a text field
    resp = await client.post("/report", data=raw_multipart(disposition, content), headers=MULTIPART)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["custom_fields"] == {}
    assert [(a["name"], a["size"]) for a in body["attachments"]] == [(name, len(content))]


@pytest.mark.parametrize(
    ("disposition", "problem"),
    [
        ('form-data; filename="x.txt"', "no name"),
        ('attachment; name="attachments"; filename="x.txt"', "expected form-data"),
        ('form-data; name="attachments"; filename="never closed', "not closed"),
        ("form-data; name=\"attachments\"; filename*=latin9''x", "filename*"),
    ],
)
async def test_a_part_that_cannot_be_named_is_a_400_saying_why(
    client: Client, auth: dict[str, str], data_dir: Path, disposition: str, problem: str
) -> None:
    resp = await client.post("/report", data=raw_multipart(disposition, b"x"), headers=MULTIPART)
    assert resp.status == 400
    body = await resp.json()
    assert problem in body["error"] and "part 2" in body["error"]
    assert body["detail"]["part"] == 2
    assert await total(client, auth) == 0
    assert list((data_dir / "uploads" / ".incoming").iterdir()) == []


# -- 4. defences that do not tell ------------------------------------------------------


async def test_the_honeypot_answer_looks_like_a_real_one(
    client: Client, auth: dict[str, str]
) -> None:
    real = await client.post("/report", data={"title": "real"}, allow_redirects=False)
    fake = await client.post(
        "/report", data={"title": "spam", "website": "x"}, allow_redirects=False
    )
    assert fake.status == real.status == 303
    assert set(fake.headers) == set(real.headers)
    assert re.fullmatch(r"/issues/\d+\?reported=1", fake.headers["Location"])
    page = await client.get(fake.headers["Location"])
    assert page.status == 200
    doc = parse_html(await page.text())
    assert doc.find("h1").text() == "spam"
    assert "Thank you!" in doc.find(class_="notice").text()
    real_json = await client.post("/report", data={"title": "r2"}, headers=JSON_ACCEPT)
    fake_json = await client.post(
        "/report", data={"title": "s2", "website": "x"}, headers=JSON_ACCEPT
    )
    assert fake_json.status == real_json.status == 201
    assert set(fake_json.headers) == set(real_json.headers)
    real_body, fake_body = await real_json.json(), await fake_json.json()
    assert set(fake_body) == set(real_body)
    assert fake_body["url"] == f"{BASE}/issues/{fake_body['id']}"
    assert await total(client, auth) == 2
    # nobody else sees it, and the API never has it
    assert (await client.get(f"/api/v1/issues/{fake_body['id']}", headers=auth)).status == 404


async def test_idempotency_keys_of_public_clients_are_per_address(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    client = await make(aiohttp_client, config, trusted_proxies=("127.0.0.1",))

    async def post(address: str, title: str) -> Any:
        return await client.post(
            "/report",
            data={"title": title},
            headers={"X-Forwarded-For": address, "Idempotency-Key": "k1", **JSON_ACCEPT},
        )

    first = await post("203.0.113.1", "from one")
    other = await post("203.0.113.2", "from two")  # same key, another client: its own report
    assert first.status == other.status == 201
    assert (await other.json())["title"] == "from two"
    again = await post("203.0.113.1", "from one")  # the keyed retry: the first result
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await first.json())["id"]
    assert await total(client, auth) == 2


# -- 5. one report per submit, nothing lost --------------------------------------------


async def test_the_form_token_makes_one_report_of_a_double_tap(
    client: Client, auth: dict[str, str]
) -> None:
    token = await form_token(client)
    typed = {"title": "Tapped twice", "form_token": token}
    answers = await asyncio.gather(
        *(client.post("/report", data=typed, allow_redirects=False) for _ in range(3))
    )
    assert [a.status for a in answers] == [303, 303, 303]
    assert len({a.headers["Location"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 2
    # back and resubmit, even with something changed: still the first result
    again = await client.post("/report", data={**typed, "title": "edited"}, allow_redirects=False)
    assert again.headers["Location"] == answers[0].headers["Location"]
    assert await total(client, auth) == 1


async def test_files_are_kept_after_a_refused_submit(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    token = await form_token(client)
    resp = await client.post(
        "/report",
        data=form(
            {"title": "", "form_token": token}, [("screen.txt", b"screen"), ("log.txt", b"log")]
        ),
    )
    assert resp.status == 400
    doc = parse_html(await resp.text())
    kept = doc.by_id("kept-files")
    assert "kept: screen.txt" in kept.text() and "kept: log.txt" in kept.text()
    assert input_value(doc, "form_token") == token
    boxes = [n.attrs["name"] for n in kept.find_all("input", type="checkbox")]
    remove_log = next(
        name for name, li in zip(boxes, kept.find_all("li"), strict=True) if "log" in li.text()
    )
    resp = await client.post(
        "/report",
        data=form({"title": "Now with a title", "form_token": token, remove_log or "": "1"}),
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    issue = await api_issue(client, auth, issue_id_from(resp.headers["Location"]))
    assert [a["name"] for a in issue["attachments"]] == ["screen.txt"]
    assert issue["custom_fields"] == {}
    await settled(client)
    assert not list((data_dir / "uploads" / ".staged").glob("*/*"))


async def test_a_413_on_one_file_keeps_the_others(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    client = await make(aiohttp_client, config, upload_max_file_bytes=1000)
    token = await form_token(client)
    files = [("small.png", PNG_1X1), ("big.bin", b"x" * 5000)]
    resp = await client.post("/report", data=form({"title": "t", "form_token": token}, files))
    assert resp.status == 413
    doc = parse_html(await resp.text())
    assert "kept: small.png" in doc.by_id("kept-files").text()
    resp = await client.post(
        "/report", data=form({"title": "t", "form_token": token}), allow_redirects=False
    )
    assert resp.status == 303
    issue = await api_issue(client, auth, 1)
    assert [a["name"] for a in issue["attachments"]] == ["small.png"]


# -- 6. bounded cost, forgiving custom fields ------------------------------------------


async def test_public_limits_bound_a_report(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    client = await make(
        aiohttp_client,
        config,
        report_max_description=100,
        report_max_custom_fields=2,
        report_max_extra_fields=1,
        report_max_custom_fields_bytes=64,
    )
    cases = [
        ({"title": "t", "description": "x" * 101}, "description"),
        ({"title": "t", "custom_fields": '{"a": 1, "b": 2, "c": 3}'}, "custom_fields"),
        ({"title": "t", "x": "1", "y": "2"}, "custom_fields"),
        ({"title": "t", "custom_fields": '{"a": "' + "x" * 80 + '"}'}, "custom_fields"),
    ]
    for fields, field in cases:
        resp = await client.post("/report", data=fields, headers=JSON_ACCEPT)
        assert resp.status == 400, fields
        assert field in (await resp.json())["detail"]["fields"]
    assert await total(client, auth) == 0


async def test_phone_typed_custom_fields_are_forgiven(client: Client, auth: dict[str, str]) -> None:
    resp = await client.post(
        "/report",
        data={"title": "t", "custom_fields": "{“device”: “Quest 3”, “build”: 812,}"},
        headers=JSON_ACCEPT,
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["custom_fields"] == {"device": "Quest 3", "build": 812}
    resp = await client.post(
        "/report", data={"title": "t", "custom_fields": '{"device" "Quest 3"}'}, headers=HTML
    )
    message = parse_html(await resp.text()).by_id("custom-fields-error").text()
    assert "character 11" in message and '“"”' in message
