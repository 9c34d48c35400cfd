"""The public issue view: what it shows, what it hides, and that nothing in it runs."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from tests.conftest import ClientFactory
from tests.test_report_form import Node, assert_no_active_markup, parse_html
from tests.test_uploads import PNG
from web.app import create_app

Client = TestClient[Any, web.Application]
JSON_ACCEPT = {"Accept": "application/json"}
PLAN_SECRET = "PLAN-SECRET-7f3a: rewrite the controller driver"
NIM_NAME = "nim-agent-SECRET-41"
NIM_ACTION = "NIM-ACTION-SECRET-9c1"

DESCRIPTION = """Steps:

1. Open the **arena** app
2. Wait *ten* minutes

The `drift` starts. See [the docs](https://example.com/docs).

| a | b |
|---|---|
| 1 | 2 |
"""


async def submit(
    client: Client,
    fields: dict[str, str],
    files: list[tuple[str, bytes, str]] | None = None,
) -> dict[str, Any]:
    form = FormData(quote_fields=False, default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    for filename, data, content_type in files or []:
        form.add_field("attachments", data, filename=filename, content_type=content_type)
    resp = await client.post("/report", data=form, headers=JSON_ACCEPT)
    assert resp.status == 201, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


async def api(
    client: Client, auth: dict[str, str], method: str, path: str, body: Any, status: int
) -> dict[str, Any]:
    resp = await client.request(method, f"/api/v1/issues{path}", json=body, headers=auth)
    assert resp.status == status, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def page(client: Client, issue_id: int) -> tuple[str, Node]:
    resp = await client.get(f"/issues/{issue_id}")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/html"
    html = await resp.text()
    return html, parse_html(html)


async def full_issue(client: Client, auth: dict[str, str]) -> dict[str, Any]:
    issue = await submit(
        client,
        {
            "title": "Left controller drifts",
            "description": DESCRIPTION,
            "project": "VR Arena",
            "category": "bug",
            "reporter": "Ana K.",
            "custom_fields": orjson.dumps(
                {"device": "Quest 3", "build": 812, "nested": {"a": [1, 2]}, "ok": True}
            ).decode(),
            "venue": "Hall B",
        },
        [
            ("controller.png", PNG, "image/png"),
            ("log.txt", b"E/Input: drift\n", "text/plain"),
        ],
    )
    issue_id = issue["id"]
    await api(client, auth, "PATCH", f"/{issue_id}", {"priority": "high"}, 200)
    await api(client, auth, "PUT", f"/{issue_id}/plan", {"plan": PLAN_SECRET}, 200)
    await api(
        client,
        auth,
        "POST",
        f"/{issue_id}/nim-actions",
        {"name": NIM_NAME, "action": NIM_ACTION},
        201,
    )
    await api(
        client,
        auth,
        "POST",
        f"/{issue_id}/comments",
        {"author": "Support", "text": "We **reproduced** it."},
        201,
    )
    resp = await client.get(f"/api/v1/issues/{issue_id}", headers=auth)
    stored: dict[str, Any] = await resp.json()
    assert stored["plan"] == PLAN_SECRET and stored["nim_actions"]
    return stored


def texts(nodes: list[Node]) -> list[str]:
    return [n.text().strip() for n in nodes]


# -- what the page shows ---------------------------------------------------------------


async def test_public_view_shows_the_issue(client: Client, auth: dict[str, str]) -> None:
    issue = await full_issue(client, auth)
    _, doc = await page(client, issue["id"])
    article = doc.find("article")
    assert article.find("h1").text() == "Left controller drifts"
    assert article.find(class_="key").text() == f"HYDRA-{issue['id']}"
    assert f"HYDRA-{issue['id']}" in doc.find("title").text()
    badges = texts(article.find_all(class_="badge"))
    assert "open" in badges
    assert "bug" in badges
    assert "high" in badges
    assert "VR Arena" in badges
    times = [t.attrs["datetime"] for t in article.find_all("time")]
    assert issue["created_at"] in times
    assert issue["updated_at"] in times  # it was changed after it was reported
    dates = article.find(class_="dates")
    assert dates.find("time").attrs["datetime"] == issue["created_at"]
    day = issue["created_at"][8:10].lstrip("0")
    assert f"Reported {day} " in dates.text() and " UTC" in dates.text()


async def test_description_is_rendered_as_markdown(client: Client, auth: dict[str, str]) -> None:
    issue = await full_issue(client, auth)
    html, doc = await page(client, issue["id"])
    md = doc.find("section", class_="md")
    assert texts(md.find_all("strong")) == ["arena"]
    assert texts(md.find_all("em")) == ["ten"]
    assert len(md.find("ol").find_all("li")) == 2
    assert texts(md.find_all("code")) == ["drift"]
    link = md.find("a")
    assert link.attrs["href"] == "https://example.com/docs"
    assert set((link.attrs.get("rel") or "").split()) >= {"noopener", "noreferrer", "nofollow"}
    assert md.find("table").find_all("td")
    assert "**arena**" not in html


async def test_custom_fields_are_key_value_pairs(client: Client, auth: dict[str, str]) -> None:
    issue = await full_issue(client, auth)
    _, doc = await page(client, issue["id"])
    kv = doc.find("dl", class_="kv")
    pairs = dict(zip(texts(kv.find_all("dt")), texts(kv.find_all("dd")), strict=True))
    assert pairs == {
        "device": "Quest 3",
        "build": "812",
        "nested": '{"a":[1,2]}',
        "ok": "true",
        "venue": "Hall B",
    }


async def test_attachments_images_as_thumbnails_others_as_links(
    client: Client, auth: dict[str, str]
) -> None:
    issue = await full_issue(client, auth)
    png, txt = issue["attachments"]
    # JSON has absolute URLs (from base_url); the page links the same paths on its origin
    assert png["url"] == f"http://testserver/uploads/{issue['id']}/{png['filename']}"
    png_path, txt_path = (a["url"].removeprefix("http://testserver") for a in (png, txt))
    _, doc = await page(client, issue["id"])
    thumbs = doc.find(class_="thumbs").find_all("img")
    assert [(i.attrs["src"], i.attrs["alt"]) for i in thumbs] == [(png_path, "controller.png")]
    files = doc.find("ul", class_="files")
    link = files.find("a")
    assert link.attrs["href"] == txt_path
    assert "download" in link.attrs
    assert link.text() == "log.txt"
    assert not [i for i in doc.find_all("img") if i.attrs.get("src") == txt_path]
    # the thumbnail really loads from the page's own origin
    resp = await client.get(thumbs[0].attrs["src"] or "")
    assert resp.status == 200 and resp.content_type == "image/png"


async def test_comments_are_shown_rendered(client: Client, auth: dict[str, str]) -> None:
    issue = await full_issue(client, auth)
    _, doc = await page(client, issue["id"])
    comment = doc.find(class_="comment")
    assert comment.find("strong").text() == "Support"
    assert comment.find(class_="md").find("strong").text() == "reproduced"
    assert comment.find("time").attrs["datetime"] == issue["comments"][0]["created_at"]


async def test_plan_and_nim_actions_are_never_public(client: Client, auth: dict[str, str]) -> None:
    issue = await full_issue(client, auth)
    html, _ = await page(client, issue["id"])
    for secret in (PLAN_SECRET, "PLAN-SECRET", NIM_NAME, NIM_ACTION, "nim-agent", "NIM-ACTION"):
        assert secret not in html


async def test_a_file_claiming_to_be_png_is_not_a_thumbnail(
    client: Client, auth: dict[str, str]
) -> None:
    html_bytes = b"<html><script>alert(1)</script></html>"
    issue = await submit(client, {"title": "fake"}, [("photo.png", html_bytes, "image/png")])
    _, doc = await page(client, issue["id"])
    assert doc.find_all("img") == []
    link = doc.find("ul", class_="files").find("a")
    assert link.text() == "photo.png"
    resp = await client.get(link.attrs["href"] or "")
    assert resp.headers["Content-Disposition"].startswith("attachment")


async def test_a_minimal_issue_has_no_empty_sections(client: Client) -> None:
    issue = await submit(client, {"title": "Just a title"})
    _, doc = await page(client, issue["id"])
    headings = texts(doc.find_all("h2"))
    assert headings == []
    assert doc.find_all("section") == []
    assert "priority not set" in texts(doc.find_all(class_="badge"))


async def test_the_page_has_the_strict_security_headers(client: Client) -> None:
    issue = await submit(client, {"title": "headers"})
    resp = await client.get(f"/issues/{issue['id']}")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "object-src 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"


# -- when there is no page -------------------------------------------------------------


async def test_unknown_and_deleted_issues_are_404(client: Client, auth: dict[str, str]) -> None:
    issue = await submit(client, {"title": "to be deleted"})
    resp = await client.delete(f"/api/v1/issues/{issue['id']}", headers=auth)
    assert resp.status == 204
    for path in (
        f"/issues/{issue['id']}",
        "/issues/999",
        "/issues/0",
        "/issues/abc",
        "/issues/-1",
        "/issues/1.0",
        f"/issues/{'9' * 40}",
    ):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert resp.content_type == "text/html"


async def test_public_view_off_means_404(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(config, public_view=False)))
    resp = await client.post("/report", data={"title": "private"}, allow_redirects=False)
    assert resp.status == 303
    location = resp.headers["Location"]
    assert not re.fullmatch(r"/issues/\d+", location), location
    thanks = await client.get(location)
    assert thanks.status == 200
    assert "HYDRA-1" in await thanks.text()
    resp = await client.get("/issues/1")
    assert resp.status == 404
    assert "private" not in await resp.text()
    # the issue exists all the same
    assert (await client.get("/api/v1/issues/1", headers=auth)).status == 200


# -- XSS -------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
JS_LINK = "[x](javascript:alert(1))"
PAYLOADS = [
    SCRIPT,
    IMG,
    JS_LINK,
    '"><svg onload=alert(1)>',
    "'><iframe src=javascript:alert(1)></iframe>",
    '<a href="javascript:alert(1)">a</a>',
    "![i](javascript:alert(1))",
    "[y](JaVaScRiPt:alert(1))",
    "[z](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[w](java&#x09;script:alert(1))",
    "<details open ontoggle=alert(1)>",
    "<style>body{background:url(javascript:alert(1))}</style>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "javascript:alert(1)",
]
EVERYTHING = "\n\n".join(PAYLOADS)


def assert_inert(html: str, doc: Node) -> None:
    lowered = html.lower()
    assert "<script" not in lowered
    assert "<svg" not in lowered and "<iframe" not in lowered and "<style" not in lowered
    assert "<details" not in lowered
    assert_no_active_markup(doc)
    assert not doc.find_all("script")
    # every link and image points somewhere harmless: same site, or http(s)/mailto
    for node in doc.iter():
        for name in ("href", "src"):
            value = node.attrs.get(name)
            if value is None:
                continue
            cleaned = re.sub(r"[\s\x00-\x1f]", "", value)  # what a browser ignores
            scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", cleaned)
            if scheme:
                assert scheme.group(1).lower() in ("http", "https", "mailto"), value


@pytest.mark.parametrize("field", ["title", "description", "project", "reporter"])
async def test_payloads_in_a_form_field_are_inert(client: Client, field: str) -> None:
    value = EVERYTHING if field == "description" else SCRIPT + IMG + JS_LINK
    issue = await submit(client, {"title": "t", field: value})
    html, doc = await page(client, issue["id"])
    assert_inert(html, doc)
    if field == "title":
        assert doc.find("h1").text() == value  # shown, as text
    if field == "project":
        assert value in texts(doc.find_all(class_="badge"))


async def test_payloads_in_custom_field_keys_and_values_are_inert(client: Client) -> None:
    custom = {p: p for p in PAYLOADS}
    extras = {f"x{SCRIPT}": IMG, IMG: JS_LINK}
    issue = await submit(
        client, {"title": "t", "custom_fields": orjson.dumps(custom).decode(), **extras}
    )
    html, doc = await page(client, issue["id"])
    assert_inert(html, doc)
    kv = doc.find("dl", class_="kv")
    keys = texts(kv.find_all("dt"))
    assert f"x{SCRIPT}" in keys and IMG in keys and SCRIPT in keys
    assert JS_LINK in texts(kv.find_all("dd"))


async def test_payloads_in_file_names_are_inert(client: Client) -> None:
    files = [
        (f"{IMG}.png", PNG, "image/png"),
        (f"{SCRIPT}.txt", b"x", "text/plain"),
        ("<b onmouseover=alert(1)>x.txt", b"x", "text/plain"),
        ('" onerror="alert(1).png', PNG, "image/png"),
        ("javascript:alert(1).pdf", b"%PDF-1.4\n", "application/pdf"),
    ]
    issue = await submit(client, {"title": "files"}, files)
    html, doc = await page(client, issue["id"])
    assert_inert(html, doc)
    alts = [i.attrs.get("alt") for i in doc.find(class_="thumbs").find_all("img")]
    assert alts == [f"{IMG}.png", '" onerror="alert(1).png']
    names = texts(doc.find("ul", class_="files").find_all("a"))
    # a "/" in a name counts as a folder and is dropped, so only "script>.txt" is left
    assert names == ["script>.txt", "<b onmouseover=alert(1)>x.txt", "javascript:alert(1).pdf"]


async def test_payloads_in_comments_are_inert(client: Client, auth: dict[str, str]) -> None:
    issue = await submit(client, {"title": "comments"})
    for payload in PAYLOADS:
        await api(
            client,
            auth,
            "POST",
            f"/{issue['id']}/comments",
            {"author": f"{SCRIPT}{IMG}", "text": payload},
            201,
        )
    await api(client, auth, "POST", f"/{issue['id']}/comments", {"text": EVERYTHING}, 201)
    html, doc = await page(client, issue["id"])
    assert_inert(html, doc)
    assert len(doc.find_all(class_="comment")) == len(PAYLOADS) + 1
    assert doc.find(class_="comment").find("strong").text() == f"{SCRIPT}{IMG}"


async def test_payloads_set_later_through_the_api_are_inert(
    client: Client, auth: dict[str, str]
) -> None:
    issue = await submit(client, {"title": "fine"})
    body = {
        "title": SCRIPT + IMG,
        "description": EVERYTHING,
        "project": IMG,
        "custom_fields": {IMG: SCRIPT, "link": "javascript:alert(1)"},
    }
    await api(client, auth, "PATCH", f"/{issue['id']}", body, 200)
    html, doc = await page(client, issue["id"])
    assert_inert(html, doc)
    report_link = [
        a for a in doc.find_all("a") if (a.attrs.get("href") or "").startswith("/report")
    ]
    assert (
        report_link[-1].attrs["href"]
        == "/report?project=%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"
    )


async def test_the_reporter_is_thanked_once_with_the_issue_key(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post("/report", data={"title": "thanks please"}, allow_redirects=False)
    assert resp.status == 303
    landed = await client.get(resp.headers["Location"])
    assert landed.status == 200
    text = await landed.text()
    assert "Thank you! Your report is <strong>HYDRA-1</strong>" in text
    plain = await (await client.get("/issues/1")).text()
    assert "Thank you!" not in plain
