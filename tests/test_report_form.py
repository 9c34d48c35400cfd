"""The public report form: GET and POST /report, validation, honeypot and rate limit.

Everything goes through the real app on a real data dir; HTML is checked with a small
DOM built from the standard library's parser, so "next to the field" means inside the
same ``.field`` block, not just somewhere on the page.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from tests.conftest import ClientFactory
from web.app import create_app

Client = TestClient[Any, web.Application]

# The Quest headset app's body, byte for byte: three fields the form does not know,
# one of them empty.
HEADSET_BODY = (
    "title=Controller+drift&description=Left+stick+drifts+after+5+min"
    "&project=VR+Arena&reporter=Ana+K.&head=H-07&district=&venue=Hall+B"
)
FORM_CT = {"Content-Type": "application/x-www-form-urlencoded"}
JSON_ACCEPT = {"Accept": "application/json"}

# -- a tiny DOM ------------------------------------------------------------------------

VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass(eq=False)
class Node:
    tag: str
    attrs: dict[str, str | None]
    parent: Node | None = None
    children: list[Node | str] = field(default_factory=list)

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Elements by tag and attributes; ``class_`` matches one class among several."""
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag) and all(n._has(k, v) for k, v in attrs.items())
        ]

    def _has(self, key: str, value: str) -> bool:
        if key == "class_":
            return value in self.classes()
        return self.attrs.get(key.rstrip("_")) == value

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'} {attrs}> in the page"
        return found[0]

    def by_id(self, ident: str) -> Node:
        return self.find(id=ident)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def closest(self, css_class: str) -> Node:
        node: Node | None = self
        while node is not None:
            if css_class in node.classes():
                return node
            node = node.parent
        raise AssertionError(f"<{self.tag} {self.attrs}> is not inside .{css_class}")


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, dict(attrs), self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse_html(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def assert_no_active_markup(doc: Node, allowed_scripts: Sequence[str] = ()) -> None:
    """No script element (except the named static ones), no on* handler, no js: URL."""
    for node in doc.iter():
        if node.tag == "script":
            assert node.attrs.get("src") in allowed_scripts, f"unexpected script {node.attrs}"
            assert not node.text().strip(), "inline script in the page"
        for name, value in node.attrs.items():
            assert not name.startswith("on"), f"event handler {name}={value!r} on <{node.tag}>"
            if name in ("href", "src", "action", "formaction", "srcset", "data"):
                scheme = re.sub(r"[\s\x00-\x1f]", "", value or "").lower()
                assert not scheme.startswith(("javascript:", "data:", "vbscript:")), value
        assert node.tag not in ("iframe", "object", "embed", "base", "svg", "math"), node.tag
        if node.tag == "meta":
            assert set(node.attrs) <= {"charset", "name", "content"}, node.attrs


# -- helpers ---------------------------------------------------------------------------


async def make_client(aiohttp_client: ClientFactory, config: Config, **changes: Any) -> Client:
    return await aiohttp_client(create_app(dataclasses.replace(config, **changes)))


def multipart(
    fields: Sequence[tuple[str, str]], files: Sequence[tuple[str, bytes, str]] = ()
) -> FormData:
    """A multipart body in the order given; files as (name, bytes, content type)."""
    form = FormData(quote_fields=False, default_to_multipart=True)
    for name, value in fields:
        form.add_field(name, value)
    for filename, data, content_type in files:
        form.add_field("attachments", data, filename=filename, content_type=content_type)
    return form


async def total(client: Client, auth: dict[str, str]) -> int:
    resp = await client.get("/api/v1/issues", headers=auth)
    assert resp.status == 200
    return int(resp.headers["X-Total-Count"])


async def api_issue(client: Client, auth: dict[str, str], issue_id: int) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/issues/{issue_id}", headers=auth)
    assert resp.status == 200, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


async def events_of(client: Client, auth: dict[str, str], issue_id: int) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/issues/{issue_id}/events", headers=auth)
    assert resp.status == 200, await resp.text()
    events: list[dict[str, Any]] = await resp.json()
    return events


def issue_id_from(resp_location: str) -> int:
    match = re.fullmatch(r"/issues/(\d+)\?reported=1", resp_location)
    assert match, f"redirect to {resp_location!r}, expected /issues/{{id}}"
    return int(match.group(1))


def incoming_and_folders(data_dir: Path) -> list[Path]:
    """Everything under uploads/: issue folders and half-written files alike."""
    root = data_dir / "uploads"
    return sorted(p for p in root.rglob("*") if p != root / ".incoming") if root.exists() else []


def field_block(doc: Node, ident: str) -> Node:
    return doc.by_id(ident).closest("field")


def field_message(doc: Node, ident: str) -> str:
    messages = [n.text().strip() for n in field_block(doc, ident).find_all(class_="msg")]
    assert messages, f"no message next to #{ident}"
    return " ".join(messages)


def input_value(doc: Node, name: str) -> str | None:
    nodes = [n for n in doc.iter() if n.attrs.get("name") == name]
    assert nodes, f"no field named {name!r}"
    node = nodes[0]
    if node.tag == "textarea":
        return node.text().removeprefix("\n")
    if node.tag == "select":
        selected = [o for o in node.find_all("option") if "selected" in o.attrs]
        return selected[0].attrs.get("value") if selected else None
    return node.attrs.get("value")


# -- GET / and /report -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/report"])
async def test_form_page_has_every_contract_field(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.content_type == "text/html"
    doc = parse_html(await resp.text())
    form = doc.find("form")
    assert form.attrs["method"] == "post"
    assert form.attrs["action"] == "/report"
    assert form.attrs["enctype"] == "multipart/form-data"
    names = {n.attrs.get("name"): n for n in form.iter() if n.attrs.get("name")}
    assert names["title"].tag == "input"
    assert names["description"].tag == "textarea"
    assert names["project"].tag == "input"
    assert names["project"].attrs["list"] == "projects"
    assert names["category"].tag == "select"
    options = [o.attrs["value"] for o in names["category"].find_all("option")]
    assert {"bug", "feature", "improvement", "question", "unclassified"} <= set(options)
    assert names["reporter"].tag == "input"
    assert names["custom_fields"].tag == "textarea"
    assert names["custom_fields"].parent is not None
    assert form.find("details").find("summary").text().strip().startswith("Custom fields")
    attachments = names["attachments"]
    assert attachments.attrs["type"] == "file"
    assert "multiple" in attachments.attrs
    honeypot = names["website"]
    assert honeypot.tag == "input"
    assert honeypot.attrs.get("tabindex") == "-1"
    assert honeypot.closest("hp").attrs.get("aria-hidden") == "true"
    # every input has a label pointing at it (phones read them out)
    labelled = {n.attrs.get("for") for n in form.find_all("label")}
    for name in ("title", "description", "project", "category", "reporter", "attachments"):
        assert name in labelled, f"no <label for={name}>"
    assert doc.find("meta", name="viewport")
    assert_no_active_markup(doc, allowed_scripts=["/static/report.js"])


async def test_form_states_the_upload_limits(aiohttp_client: ClientFactory, config: Config) -> None:
    client = await make_client(
        aiohttp_client,
        config,
        upload_max_file_bytes=2 * 1024 * 1024,
        upload_max_files=3,
        upload_max_request_bytes=5 * 1024 * 1024,
    )
    doc = parse_html(await (await client.get("/report")).text())
    hint = field_block(doc, "attachments").text()
    assert "3 files" in hint and "2 MB" in hint and "5 MB" in hint
    form = doc.find("form")
    assert form.attrs["data-max-file"] == str(2 * 1024 * 1024)
    assert form.attrs["data-max-files"] == "3"


async def test_query_project_prefills_and_known_projects_are_suggested(
    client: Client, auth: dict[str, str]
) -> None:
    for project in ("VR Arena", "Kiosk", "VR Arena"):
        resp = await client.post(
            "/api/v1/issues", json={"title": "t", "project": project}, headers=auth
        )
        assert resp.status == 201
    resp = await client.get("/report", params={"project": "Kiosk"})
    doc = parse_html(await resp.text())
    assert doc.by_id("project").attrs["value"] == "Kiosk"
    suggestions = [o.attrs["value"] for o in doc.by_id("projects").find_all("option")]
    assert suggestions == ["Kiosk", "VR Arena"]
    # without the parameter nothing is pre-filled
    doc = parse_html(await (await client.get("/")).text())
    assert doc.by_id("project").attrs.get("value") == ""


async def test_query_project_is_escaped(client: Client) -> None:
    payload = '"><script>alert(1)</script><img src=x onerror=alert(1)>'
    resp = await client.get("/report", params={"project": payload})
    html = await resp.text()
    assert resp.status == 200
    assert "<script>alert" not in html
    doc = parse_html(html)
    assert doc.by_id("project").attrs["value"] == payload
    assert_no_active_markup(doc, allowed_scripts=["/static/report.js"])


async def test_form_page_has_the_strict_security_headers(client: Client) -> None:
    resp = await client.get("/report")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "form-action 'self'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


# -- POST /report: success -------------------------------------------------------------


async def test_urlencoded_post_redirects_a_browser_to_the_issue(
    client: Client, auth: dict[str, str]
) -> None:
    resp = await client.post(
        "/report",
        data={
            "title": "  Screen flickers  ",
            "description": "After **ten** minutes.",
            "project": "Kiosk",
            "category": "bug",
            "reporter": "sam@example.org",
            "custom_fields": '{"device": "Quest 3", "build": 812}',
            "website": "",
        },
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    issue_id = issue_id_from(resp.headers["Location"])
    issue = await api_issue(client, auth, issue_id)
    assert issue["title"] == "Screen flickers"
    assert issue["description"] == "After **ten** minutes."
    assert issue["project"] == "Kiosk"
    assert issue["category"] == "bug"
    assert issue["reporter"] == "sam@example.org"
    assert issue["status"] == "open"
    assert issue["custom_fields"] == {"device": "Quest 3", "build": 812}
    assert "website" not in issue["custom_fields"]
    page = await client.get(resp.headers["Location"])
    assert page.status == 200


async def test_multipart_post_without_files_creates_the_issue(
    client: Client, auth: dict[str, str]
) -> None:
    body = multipart(
        [
            ("title", "Multipart report"),
            ("description", "d"),
            ("project", ""),
            ("category", "feature"),
            ("reporter", ""),
            ("custom_fields", ""),
            ("website", ""),
        ]
    )
    resp = await client.post("/report", data=body, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    issue = await api_issue(client, auth, issue_id_from(resp.headers["Location"]))
    assert issue["title"] == "Multipart report"
    assert issue["category"] == "feature"
    assert issue["project"] is None and issue["reporter"] is None
    assert issue["custom_fields"] == {}
    assert issue["attachments"] == []


async def test_a_browser_sending_an_empty_file_input_is_fine(
    client: Client, auth: dict[str, str]
) -> None:
    body = multipart([("title", "No file chosen")], [("", b"", "application/octet-stream")])
    resp = await client.post("/report", data=body, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    issue = await api_issue(client, auth, issue_id_from(resp.headers["Location"]))
    assert issue["attachments"] == []


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_json_client_gets_201_with_id_and_url(
    client: Client, auth: dict[str, str], encoding: str
) -> None:
    fields = [("title", "From a script"), ("project", "Bots"), ("reporter", "cron")]
    data: Any = dict(fields) if encoding == "urlencoded" else multipart(fields)
    resp = await client.post("/report", data=data, headers=JSON_ACCEPT, allow_redirects=False)
    assert resp.status == 201, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert isinstance(body["id"], int)
    assert body["url"] == f"http://testserver/issues/{body['id']}"
    assert body["title"] == "From a script"
    assert resp.headers["Location"] == f"/issues/{body['id']}"
    issue = await api_issue(client, auth, body["id"])
    assert issue["project"] == "Bots"


async def test_headset_app_exact_body_keeps_every_extra_field(
    client: Client, auth: dict[str, str]
) -> None:
    resp = await client.post("/report", data=HEADSET_BODY, headers=FORM_CT, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    issue_id = issue_id_from(resp.headers["Location"])
    issue = await api_issue(client, auth, issue_id)
    assert issue["title"] == "Controller drift"
    assert issue["description"] == "Left stick drifts after 5 min"
    assert issue["project"] == "VR Arena"
    assert issue["reporter"] == "Ana K."
    assert issue["custom_fields"] == {"head": "H-07", "district": "", "venue": "Hall B"}
    events = await events_of(client, auth, issue_id)
    assert events[0]["type"] == "issue.created"
    assert events[0]["actor"] == {"kind": "public", "name": "Ana K."}
    assert all(e["actor"]["kind"] == "public" for e in events)


async def test_headset_app_with_json_accept(client: Client, auth: dict[str, str]) -> None:
    resp = await client.post(
        "/report", data=HEADSET_BODY, headers={**FORM_CT, **JSON_ACCEPT}, allow_redirects=False
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["custom_fields"] == {"head": "H-07", "district": "", "venue": "Hall B"}
    assert body["reporter"] == "Ana K."


async def test_headset_app_fields_can_all_be_empty_but_the_title(
    client: Client, auth: dict[str, str]
) -> None:
    body = "title=Crash&description=&project=&reporter=&head=&district=&venue="
    resp = await client.post("/report", data=body, headers=FORM_CT, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    issue_id = issue_id_from(resp.headers["Location"])
    issue = await api_issue(client, auth, issue_id)
    assert issue["custom_fields"] == {"head": "", "district": "", "venue": ""}
    assert issue["reporter"] is None and issue["project"] is None
    events = await events_of(client, auth, issue_id)
    assert events[0]["actor"]["kind"] == "public"


async def test_extras_and_json_custom_fields_are_merged(
    client: Client, auth: dict[str, str]
) -> None:
    resp = await client.post(
        "/report",
        data={"title": "t", "custom_fields": '{"device": "Quest 3"}', "venue": "Hall B"},
        headers=JSON_ACCEPT,
    )
    assert resp.status == 201
    issue = await api_issue(client, auth, (await resp.json())["id"])
    assert issue["custom_fields"] == {"device": "Quest 3", "venue": "Hall B"}


# -- POST /report: invalid input -------------------------------------------------------


async def test_missing_title_returns_the_form_with_everything_typed(
    client: Client, auth: dict[str, str]
) -> None:
    typed = {
        "title": "   ",
        "description": "It <b>broke</b>\nsecond line",
        "project": "VR Arena",
        "category": "question",
        "reporter": "Ana K.",
        "custom_fields": '{"device": "Quest 3"}',
        "head": "H-07",
        "district": "",
        "venue": 'Hall "B"',
    }
    resp = await client.post("/report", data=typed, allow_redirects=False)
    assert resp.status == 400
    assert resp.content_type == "text/html"
    doc = parse_html(await resp.text())
    assert "short title" in field_message(doc, "title")
    assert "invalid" in field_block(doc, "title").classes()
    assert doc.by_id("title").attrs.get("aria-invalid") == "true"
    assert doc.find(role="alert")
    assert input_value(doc, "description") == typed["description"]
    assert input_value(doc, "project") == "VR Arena"
    assert input_value(doc, "category") == "question"
    assert input_value(doc, "reporter") == "Ana K."
    assert input_value(doc, "custom_fields") == typed["custom_fields"]
    hidden = {
        n.attrs["name"]: n.attrs["value"]
        for n in doc.find("form").find_all("input", type="hidden")
        if n.attrs["name"] != "form_token"
    }
    assert hidden == {"head": "H-07", "district": "", "venue": 'Hall "B"'}
    # no other field is flagged
    for ident in ("description", "project", "category", "reporter", "custom_fields"):
        assert "invalid" not in field_block(doc, ident).classes()
    assert await total(client, auth) == 0


async def test_resubmitting_the_returned_form_keeps_the_extras(
    client: Client, auth: dict[str, str]
) -> None:
    body = HEADSET_BODY.replace("title=Controller+drift", "title=")
    resp = await client.post("/report", data=body, headers=FORM_CT)
    assert resp.status == 400
    doc = parse_html(await resp.text())
    # the browser would now send every named field of the form back, title filled in
    fields = {
        n.attrs["name"]: input_value(doc, n.attrs["name"]) or ""
        for n in doc.find("form").iter()
        if n.attrs.get("name") and n.attrs.get("type") != "file"
    }
    fields["title"] = "Controller drift"
    resp = await client.post("/report", data=fields, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    issue = await api_issue(client, auth, issue_id_from(resp.headers["Location"]))
    assert issue["custom_fields"] == {"head": "H-07", "district": "", "venue": "Hall B"}
    assert issue["reporter"] == "Ana K."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("[1, 2]", "JSON object"),
        ('"just text"', "JSON object"),
        ("42", "JSON object"),
        ("{oops", "must be JSON"),
        ('{"a": 1 "b": 2}', "must be JSON"),
    ],
)
async def test_bad_custom_fields_come_back_with_a_message(
    client: Client, auth: dict[str, str], raw: str, expected: str
) -> None:
    typed = {"title": "Has a title", "description": "desc", "reporter": "me", "custom_fields": raw}
    resp = await client.post("/report", data=typed)
    assert resp.status == 400
    doc = parse_html(await resp.text())
    assert expected in field_message(doc, "custom_fields")
    details = doc.by_id("custom_fields").closest("field")
    assert details.tag == "details" and "open" in details.attrs
    assert input_value(doc, "custom_fields") == raw
    assert input_value(doc, "title") == "Has a title"
    assert input_value(doc, "description") == "desc"
    assert input_value(doc, "reporter") == "me"
    assert await total(client, auth) == 0


async def test_several_errors_at_once_each_next_to_its_field(client: Client) -> None:
    resp = await client.post(
        "/report", data={"title": "", "category": "nonsense", "custom_fields": "[]"}
    )
    assert resp.status == 400
    doc = parse_html(await resp.text())
    assert "short title" in field_message(doc, "title")
    assert "bug" in field_message(doc, "category")  # names the allowed values
    assert "JSON object" in field_message(doc, "custom_fields")


async def test_invalid_input_for_a_json_client_is_a_json_400(client: Client) -> None:
    resp = await client.post(
        "/report", data={"title": "", "custom_fields": "[]"}, headers=JSON_ACCEPT
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == 400
    assert set(body["detail"]["fields"]) == {"title", "custom_fields"}


async def test_returned_form_escapes_what_was_typed(client: Client) -> None:
    payload = '"><script>alert(1)</script><img src=x onerror=alert(1)>'
    typed = {
        "title": "",
        "description": f"</textarea>{payload}",
        "project": payload,
        "reporter": payload,
        "custom_fields": f"</textarea>{payload}",
        payload: payload,  # an extra field whose name is the payload too
    }
    resp = await client.post("/report", data=typed)
    assert resp.status == 400
    html = await resp.text()
    assert "<script>alert" not in html
    doc = parse_html(html)
    assert_no_active_markup(doc, allowed_scripts=["/static/report.js"])
    assert input_value(doc, "project") == payload
    assert input_value(doc, "description") == typed["description"]
    assert input_value(doc, payload) == payload


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"title=x"),
        ("application/json", b'{"title": "x"}'),
        ("multipart/form-data; boundary=zzz", b"--zzz\r\ngarbage without headers"),
        ("multipart/form-data", b"no boundary at all"),
    ],
)
async def test_odd_bodies_are_a_4xx_never_a_500(
    client: Client, auth: dict[str, str], content_type: str, body: bytes
) -> None:
    resp = await client.post("/report", data=body, headers={"Content-Type": content_type})
    assert 400 <= resp.status < 500, await resp.text()
    assert await total(client, auth) == 0


async def test_an_oversized_urlencoded_form_is_413_not_500(
    client: Client, auth: dict[str, str]
) -> None:
    body = io.BytesIO(b"title=t&description=" + b"x" * (2 * 1024 * 1024))
    resp = await client.post("/report", data=body, headers=FORM_CT)
    assert resp.status == 413
    assert await total(client, auth) == 0


# -- uploads over the limits -----------------------------------------------------------

PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a2b1e1"
    "fa0000000049454e44ae426082"
)


async def test_a_file_over_the_limit_is_413_with_the_form_and_nothing_on_disk(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path, auth: dict[str, str]
) -> None:
    client = await make_client(aiohttp_client, config, upload_max_file_bytes=1000)
    # the order a browser sends the form in: the file input comes before custom fields
    body = multipart(
        [
            ("title", "Big screenshot"),
            ("description", "see attached"),
            ("project", "Kiosk"),
            ("category", "bug"),
            ("reporter", "Ana"),
        ],
        [("small.png", PNG_1X1, "image/png"), ("big.bin", b"x" * 5000, "image/png")],
    )
    body.add_field("custom_fields", '{"device": "Quest 3"}')
    body.add_field("website", "")
    resp = await client.post("/report", data=body, allow_redirects=False)
    assert resp.status == 413
    assert resp.content_type == "text/html"
    doc = parse_html(await resp.text())
    message = field_message(doc, "attachments")
    assert "larger than" in message and "1000 bytes" in message
    assert input_value(doc, "title") == "Big screenshot"
    assert input_value(doc, "description") == "see attached"
    assert input_value(doc, "project") == "Kiosk"
    assert input_value(doc, "category") == "bug"
    assert input_value(doc, "reporter") == "Ana"
    assert await total(client, auth) == 0
    assert incoming_and_folders(data_dir) == []
    assert list((data_dir / "uploads" / ".incoming").iterdir()) == []


async def test_a_file_over_the_limit_keeps_fields_typed_after_the_file_input(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path
) -> None:
    """Browsers send custom_fields after the attachments; it must survive a 413 too."""
    client = await make_client(aiohttp_client, config, upload_max_file_bytes=1000)
    body = multipart([("title", "Big")], [("big.bin", b"x" * 5000, "application/octet-stream")])
    body.add_field("custom_fields", '{"device": "Quest 3"}')
    body.add_field("venue", "Hall B")
    resp = await client.post("/report", data=body)
    assert resp.status == 413
    doc = parse_html(await resp.text())
    assert input_value(doc, "custom_fields") == '{"device": "Quest 3"}'
    assert input_value(doc, "venue") == "Hall B"
    assert incoming_and_folders(data_dir) == []


async def test_too_many_files_is_413_and_nothing_on_disk(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path, auth: dict[str, str]
) -> None:
    client = await make_client(aiohttp_client, config, upload_max_files=2)
    files = [(f"f{i}.png", PNG_1X1, "image/png") for i in range(3)]
    resp = await client.post("/report", data=multipart([("title", "Three files")], files))
    assert resp.status == 413
    doc = parse_html(await resp.text())
    assert "too many files" in field_message(doc, "attachments")
    assert input_value(doc, "title") == "Three files"
    assert await total(client, auth) == 0
    assert incoming_and_folders(data_dir) == []


async def test_files_over_the_request_total_are_413(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path, auth: dict[str, str]
) -> None:
    client = await make_client(
        aiohttp_client, config, upload_max_file_bytes=1000, upload_max_request_bytes=1500
    )
    files = [("a.bin", b"a" * 900, "text/plain"), ("b.bin", b"b" * 900, "text/plain")]
    resp = await client.post("/report", data=multipart([("title", "Two")], files))
    assert resp.status == 413
    assert "attachments total" in field_message(parse_html(await resp.text()), "attachments")
    assert await total(client, auth) == 0
    assert incoming_and_folders(data_dir) == []


async def test_a_body_far_over_the_limit_gets_a_friendly_413_page(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path, auth: dict[str, str]
) -> None:
    """Content-Length above the request ceiling: still 413 and a page leading back."""
    client = await make_client(
        aiohttp_client, config, upload_max_file_bytes=1000, upload_max_request_bytes=1000
    )
    body = multipart([("title", "Huge")])
    huge = io.BytesIO(b"z" * (1100 * 1024))  # raw bytes this big make aiohttp warn
    body.add_field("attachments", huge, filename="huge.bin", content_type="text/plain")
    resp = await client.post("/report", data=body)
    assert resp.status == 413
    assert resp.content_type == "text/html"
    doc = parse_html(await resp.text())
    assert doc.find("a", href="/report") or doc.find("form")
    assert await total(client, auth) == 0
    assert incoming_and_folders(data_dir) == []


async def test_too_large_for_a_json_client_is_a_json_413(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path
) -> None:
    client = await make_client(aiohttp_client, config, upload_max_file_bytes=1000)
    body = multipart([("title", "Big")], [("big.bin", b"x" * 2000, "text/plain")])
    resp = await client.post("/report", data=body, headers=JSON_ACCEPT)
    assert resp.status == 413
    payload = await resp.json()
    assert payload["code"] == 413 and payload["detail"]["limit"] == 1000
    assert incoming_and_folders(data_dir) == []


async def test_a_failed_validation_discards_the_received_files(
    client: Client, data_dir: Path, auth: dict[str, str]
) -> None:
    body = multipart([("title", "")], [("shot.png", PNG_1X1, "image/png")])
    resp = await client.post("/report", data=body)
    assert resp.status == 400
    assert incoming_and_folders(data_dir) == []
    assert await total(client, auth) == 0


# -- abuse: honeypot and rate limit ----------------------------------------------------


async def test_honeypot_gets_the_normal_redirect_and_creates_nothing(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    resp = await client.post(
        "/report",
        data={"title": "Cheap pills", "description": "buy", "website": "http://spam.example"},
        allow_redirects=False,
    )
    assert resp.status == 303
    followed = await client.get(resp.headers["Location"])
    assert followed.status == 200
    assert await total(client, auth) == 0
    logs = list((data_dir / "events").glob("*")) if (data_dir / "events").exists() else []
    assert [p for p in logs if p.stat().st_size] == []  # empty logs are preallocated ids


async def test_honeypot_with_files_leaves_nothing_on_disk(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    body = multipart([("title", "spam"), ("website", "x")], [("a.png", PNG_1X1, "image/png")])
    resp = await client.post("/report", data=body, allow_redirects=False)
    assert resp.status == 303
    assert await total(client, auth) == 0
    assert incoming_and_folders(data_dir) == []


async def test_honeypot_for_a_json_client_looks_like_success(
    client: Client, auth: dict[str, str]
) -> None:
    resp = await client.post("/report", data={"title": "spam", "website": "x"}, headers=JSON_ACCEPT)
    assert resp.status == 201
    assert await total(client, auth) == 0


async def test_whitespace_in_the_honeypot_is_not_spam(client: Client, auth: dict[str, str]) -> None:
    resp = await client.post(
        "/report", data={"title": "real", "website": " "}, allow_redirects=False
    )
    assert resp.status == 303
    assert await total(client, auth) == 1


async def test_rate_limit_returns_429_with_retry_after(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str]
) -> None:
    client = await make_client(aiohttp_client, config, report_rate_limit=2, report_rate_burst=2)
    for n in range(2):
        resp = await client.post("/report", data={"title": f"r{n}"}, allow_redirects=False)
        assert resp.status == 303
    resp = await client.post("/report", data={"title": "r3"}, allow_redirects=False)
    assert resp.status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.content_type == "text/html"
    doc = parse_html(await resp.text())
    assert "slow down" in doc.find("h1").text().lower()
    assert doc.find("a", href="/report")
    resp = await client.post("/report", data={"title": "r4"}, headers=JSON_ACCEPT)
    assert resp.status == 429
    assert resp.content_type == "application/json"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    body = await resp.json()
    assert body["code"] == 429 and body["detail"]["retry_after"] >= 1
    assert await total(client, auth) == 2
    # the form itself and the API stay reachable
    assert (await client.get("/report")).status == 200


async def test_rate_limit_applies_to_the_honeypot_too(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await make_client(aiohttp_client, config, report_rate_limit=1, report_rate_burst=1)
    resp = await client.post("/report", data={"title": "s", "website": "x"}, allow_redirects=False)
    assert resp.status == 303
    resp = await client.post("/report", data={"title": "s", "website": "x"}, allow_redirects=False)
    assert resp.status == 429


async def test_trusted_proxy_forwarded_for_counts_clients_separately(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await make_client(
        aiohttp_client,
        config,
        report_rate_limit=1,
        report_rate_burst=1,
        trusted_proxies=("127.0.0.1",),
    )

    async def post(forwarded: str) -> int:
        resp = await client.post(
            "/report",
            data={"title": "t"},
            headers={"X-Forwarded-For": forwarded},
            allow_redirects=False,
        )
        return resp.status

    assert await post("203.0.113.1") == 303
    assert await post("203.0.113.2") == 303
    assert await post("203.0.113.1") == 429
    # a client cannot dodge the limit by prepending its own fake hop
    assert await post("198.51.100.7, 203.0.113.2") == 429


async def test_forwarded_for_is_ignored_without_trusted_proxies(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await make_client(aiohttp_client, config, report_rate_limit=1, report_rate_burst=1)
    for forwarded, expected in (("203.0.113.1", 303), ("203.0.113.2", 429)):
        resp = await client.post(
            "/report",
            data={"title": "t"},
            headers={"X-Forwarded-For": forwarded},
            allow_redirects=False,
        )
        assert resp.status == expected


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await make_client(
        aiohttp_client,
        config,
        report_rate_limit=1,
        report_rate_burst=1,
        trusted_proxies=("10.0.0.0/8",),
    )
    statuses = []
    for forwarded in ("203.0.113.1", "203.0.113.2"):
        resp = await client.post(
            "/report",
            data={"title": "t"},
            headers={"X-Forwarded-For": forwarded},
            allow_redirects=False,
        )
        statuses.append(resp.status)
    assert statuses == [303, 429]
