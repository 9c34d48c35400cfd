"""Attachments: storing, serving safely, the agents' upload endpoint, clean-up and gc.

Files are real files in ``tmp_path``; paths that a client library would normalise
(``..``, ``%2F``) are sent over a raw socket so the server sees them as written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from tests.conftest import ClientFactory, hydraissue_command, settled
from web.app import create_app

BASE = "http://testserver"  # the config fixture's base_url: JSON URLs are absolute


def local(url: str) -> str:
    """An attachment's absolute URL as a path on the test server."""
    assert url.startswith(f"{BASE}/uploads/"), url
    return url.removeprefix(BASE)


Client = TestClient[Any, web.Application]
GENERATED = re.compile(r"^[a-f0-9]{16}(\.[a-z0-9]{1,10})?$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
JSON_ACCEPT = {"Accept": "application/json"}
SCRIPTABLE = {
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
}


def make_png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 60 % 256, y * 80 % 256, 200)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = make_png()
GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
    b"<script>alert(document.domain)</script><rect width='10' height='10'/></svg>"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


# -- helpers ---------------------------------------------------------------------------


async def make_client(aiohttp_client: ClientFactory, config: Config, **changes: Any) -> Client:
    return await aiohttp_client(create_app(dataclasses.replace(config, **changes)))


def report_body(
    files: Sequence[tuple[str, bytes, str]], title: str = "With files", reporter: str = ""
) -> FormData:
    form = FormData(quote_fields=False, default_to_multipart=True)
    form.add_field("title", title)
    form.add_field("reporter", reporter)
    for filename, data, content_type in files:
        form.add_field("attachments", data, filename=filename, content_type=content_type)
    return form


async def report(
    client: Client, files: Sequence[tuple[str, bytes, str]], **kwargs: str
) -> dict[str, Any]:
    """Submit through /report as a script would and return the created issue."""
    resp = await client.post("/report", data=report_body(files, **kwargs), headers=JSON_ACCEPT)
    assert resp.status == 201, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


async def api_issue(client: Client, auth: dict[str, str], issue_id: int) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/issues/{issue_id}", headers=auth)
    assert resp.status == 200, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


async def raw_get(client: Client, target: str) -> tuple[int, bytes]:
    """GET exactly ``target`` (no client-side normalisation); status and whole response."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


def on_disk(data_dir: Path) -> list[str]:
    root = data_dir / "uploads"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- storing ---------------------------------------------------------------------------


async def test_report_stores_files_under_generated_names_with_metadata(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    files = [
        ("Screen Shot 2024-05-01 at 10.00.png", PNG, "image/png"),
        ("crash.txt", b"Traceback: boom\n", "text/plain"),
        ("manual.pdf", PDF, "application/pdf"),
    ]
    created = await report(client, files, reporter="Ana")
    issue_id = created["id"]
    issue = await api_issue(client, auth, issue_id)
    attachments = issue["attachments"]
    assert [a["name"] for a in attachments] == [f[0] for f in files]
    assert [a["size"] for a in attachments] == [len(f[1]) for f in files]
    assert [a["content_type"] for a in attachments] == [
        "image/png",
        "text/plain",
        "application/pdf",
    ]
    folder = data_dir / "uploads" / str(issue_id)
    for attachment, (name, data, _) in zip(attachments, files, strict=True):
        assert GENERATED.match(attachment["filename"]), attachment["filename"]
        assert attachment["filename"] != name
        assert attachment["url"] == f"{BASE}/uploads/{issue_id}/{attachment['filename']}"
        assert TIMESTAMP.match(attachment["at"])
        assert (folder / attachment["filename"]).read_bytes() == data
    assert attachments[0]["filename"].endswith(".png")
    assert sorted(p.name for p in folder.iterdir()) == sorted(a["filename"] for a in attachments)
    assert list((data_dir / "uploads" / ".incoming").iterdir()) == []
    # the JSON answer of the report already lists them
    assert [a["filename"] for a in created["attachments"]] == [a["filename"] for a in attachments]


async def test_each_attachment_is_recorded_by_an_event(
    client: Client, auth: dict[str, str]
) -> None:
    issue = await report(client, [("a.png", PNG, "image/png"), ("b.txt", b"b", "text/plain")])
    resp = await client.get(f"/api/v1/issues/{issue['id']}/events", headers=auth)
    events = await resp.json()
    added = [e for e in events if e["type"] == "attachment.added"]
    assert len(added) == 2
    stored = (await api_issue(client, auth, issue["id"]))["attachments"]
    for event, attachment in zip(added, stored, strict=True):
        assert event["data"]["name"] == attachment["name"]
        assert event["data"]["filename"] == attachment["filename"]
        assert event["data"]["size"] == attachment["size"]
        assert event["data"]["content_type"] == attachment["content_type"]
        assert event["actor"]["kind"] == "public"
    assert events[0]["type"] == "issue.created"


@pytest.mark.parametrize(
    ("sent_name", "shown_name"),
    [
        ("../../events/1.yaml", "1.yaml"),
        ("C:\\Users\\me\\evil.png", "evil.png"),
        ("/etc/passwd", "passwd"),
    ],
)
async def test_a_path_in_the_file_name_never_leaves_the_issue_folder(
    client: Client, auth: dict[str, str], data_dir: Path, sent_name: str, shown_name: str
) -> None:
    issue = await report(client, [(sent_name, b"data", "application/octet-stream")])
    attachment = (await api_issue(client, auth, issue["id"]))["attachments"][0]
    assert attachment["name"] == shown_name
    assert GENERATED.match(attachment["filename"])
    assert on_disk(data_dir) == [f"{issue['id']}/{attachment['filename']}"]


# -- serving ---------------------------------------------------------------------------


async def fetch_attachment(
    client: Client, auth: dict[str, str], name: str, data: bytes, claimed: str
) -> tuple[dict[str, Any], Any, bytes]:
    issue = await report(client, [(name, data, claimed)])
    attachment = (await api_issue(client, auth, issue["id"]))["attachments"][0]
    resp = await client.get(local(attachment["url"]))
    assert resp.status == 200
    return attachment, resp, await resp.read()


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("shot.png", PNG, "image/png"),
        ("anim.gif", GIF, "image/gif"),
        ("p.jpg", JPEG_HEAD, "image/jpeg"),
    ],
)
async def test_a_real_raster_image_is_served_inline(
    client: Client, auth: dict[str, str], name: str, data: bytes, content_type: str
) -> None:
    attachment, resp, body = await fetch_attachment(client, auth, name, data, content_type)
    assert attachment["content_type"] == content_type
    assert body == data
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Content-Disposition"].startswith("inline")


@pytest.mark.parametrize(
    ("name", "data", "claimed"),
    [
        ("page.html", HTML, "text/html"),
        ("page.htm", HTML, "text/html"),
        ("image.svg", SVG, "image/svg+xml"),
        ("page.xhtml", HTML, "application/xhtml+xml"),
        ("fake.png", HTML, "image/png"),  # says PNG, is HTML
        ("fake.gif", SVG, "image/gif"),
        ("run.js", b"alert(1)", "text/javascript"),
        ("noext", HTML, "text/html"),
    ],
)
async def test_scriptable_uploads_are_downloads_never_pages(
    client: Client, auth: dict[str, str], name: str, data: bytes, claimed: str
) -> None:
    attachment, resp, body = await fetch_attachment(client, auth, name, data, claimed)
    served = resp.headers["Content-Type"].split(";")[0].strip().lower()
    assert served not in SCRIPTABLE
    assert not served.startswith("image/")
    assert attachment["content_type"] not in SCRIPTABLE
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    csp = resp.headers["Content-Security-Policy"]
    assert "sandbox" in csp.replace(";", " ").split()
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith("attachment")
    assert body == data  # still downloadable as it was sent


async def test_download_names_are_safe_in_the_header(client: Client, auth: dict[str, str]) -> None:
    name = "résumé (final); v=2.txt"
    attachment, resp, _ = await fetch_attachment(client, auth, name, b"cv", "text/plain")
    assert attachment["name"] == name
    disposition = resp.headers["Content-Disposition"]
    assert disposition.isascii()
    assert disposition.startswith('attachment; filename="')
    fallback = re.match(r'attachment; filename="([^"]*)"; ', disposition)
    assert fallback, disposition
    assert fallback.group(1) == "r_sum_ _final__ v_2.txt"
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%28final%29%3B%20v%3D2.txt" in disposition


async def test_pages_and_uploads_have_distinct_policies(
    client: Client, auth: dict[str, str]
) -> None:
    _, resp, _ = await fetch_attachment(client, auth, "p.html", HTML, "text/html")
    assert "script-src" not in resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


# -- 404s ------------------------------------------------------------------------------


async def test_bad_upload_paths_are_404(client: Client, auth: dict[str, str]) -> None:
    first = await report(client, [("a.png", PNG, "image/png")], title="first")
    second = await report(client, [("b.png", PNG, "image/png")], title="second")
    one, two = first["id"], second["id"]
    name = (await api_issue(client, auth, one))["attachments"][0]["filename"]
    other = (await api_issue(client, auth, two))["attachments"][0]["filename"]
    stem = name.split(".")[0]
    assert (await raw_get(client, f"/uploads/{one}/{name}"))[0] == 200
    bad = [
        f"/uploads/{one}/{'0' * 16}.png",  # well-formed, not stored
        f"/uploads/{one}/{name.upper()}",
        f"/uploads/{one}/{stem}",
        f"/uploads/{one}/{name}x",
        f"/uploads/{one}/{other}",  # another issue's file
        f"/uploads/{two}/{name}",
        f"/uploads/999/{name}",
        f"/uploads/abc/{name}",
        f"/uploads/-1/{name}",
        f"/uploads/{'9' * 30}/{name}",
        f"/uploads/{one}/..",
        f"/uploads/{one}/%2e%2e",
        f"/uploads/{one}/%2E%2E%2F%2E%2E%2Fevents%2F{one}.yaml",
        f"/uploads/{one}/..%2F..%2Fevents%2F{one}.yaml",
        f"/uploads/{one}/..%2f{name}",
        f"/uploads/{one}%2F{name}",
        f"/uploads/{one}/{name}%2F",
        f"/uploads/{one}/{name}%00",
        f"/uploads/{one}/%2e%2e%5c%2e%2e%5cevents%5c{one}.yaml",
        f"/uploads/{one}/../../events/{one}.yaml",
        f"/uploads/../events/{one}.yaml",
        f"/uploads/{one}/.incoming",
        "/uploads/.incoming/x.part",
    ]
    for target in bad:
        status, raw = await raw_get(client, target)
        assert status == 404, f"{target} -> {status}"
        assert b"issue.created" not in raw and PNG not in raw


async def test_uploads_of_a_deleted_issue_are_gone(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    keep = await report(client, [("keep.png", PNG, "image/png")], title="keep")
    issue = await report(client, [("a.png", PNG, "image/png"), ("b.txt", b"b", "text/plain")])
    attachments = (await api_issue(client, auth, issue["id"]))["attachments"]
    folder = data_dir / "uploads" / str(issue["id"])
    assert folder.is_dir()
    resp = await client.delete(f"/api/v1/issues/{issue['id']}", headers=auth)
    assert resp.status == 204
    await settled(client)  # the clean-up is a background subscriber
    assert not folder.exists()
    for attachment in attachments:
        assert (await client.get(local(attachment["url"]))).status == 404
    assert (await client.get(f"/issues/{issue['id']}")).status == 404
    kept = (await api_issue(client, auth, keep["id"]))["attachments"][0]
    assert (await client.get(local(kept["url"]))).status == 200


async def test_an_upload_404_is_a_page_for_browsers(client: Client) -> None:
    resp = await client.get("/uploads/1/0123456789abcdef.png")
    assert resp.status == 404
    assert resp.content_type == "text/html"


# -- the agents' endpoint: POST /api/v1/issues/{id}/attachments ------------------------


def api_file(
    name: str, data: bytes, content_type: str = "application/octet-stream", field: str = "file"
) -> FormData:
    form = FormData(quote_fields=False, default_to_multipart=True)
    form.add_field(field, data, filename=name, content_type=content_type)
    return form


async def api_create(client: Client, auth: dict[str, str]) -> int:
    resp = await client.post("/api/v1/issues", json={"title": "agent issue"}, headers=auth)
    assert resp.status == 201
    issue_id: int = (await resp.json())["id"]
    return issue_id


async def test_api_attachment_upload_returns_201_with_the_attachment(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    issue_id = await api_create(client, auth)
    resp = await client.post(
        f"/api/v1/issues/{issue_id}/attachments",
        data=api_file("trace.png", PNG, "image/png"),
        headers=auth,
    )
    assert resp.status == 201, await resp.text()
    attachment = await resp.json()
    assert attachment["name"] == "trace.png"
    assert attachment["size"] == len(PNG)
    assert attachment["content_type"] == "image/png"
    assert GENERATED.match(attachment["filename"])
    assert attachment["url"] == f"{BASE}/uploads/{issue_id}/{attachment['filename']}"
    assert (data_dir / "uploads" / str(issue_id) / attachment["filename"]).read_bytes() == PNG
    issue = await api_issue(client, auth, issue_id)
    assert [a["filename"] for a in issue["attachments"]] == [attachment["filename"]]
    events = await (await client.get(f"/api/v1/issues/{issue_id}/events", headers=auth)).json()
    assert events[-1]["type"] == "attachment.added"
    assert events[-1]["actor"]["kind"] == "api"
    served = await client.get(local(attachment["url"]))
    assert served.status == 200 and await served.read() == PNG


async def test_api_attachment_upload_needs_the_token(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    issue_id = await api_create(client, auth)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = await client.post(
            f"/api/v1/issues/{issue_id}/attachments",
            data=api_file("x.png", PNG, "image/png"),
            headers=headers,
        )
        assert resp.status == 401
        assert "WWW-Authenticate" in resp.headers
    assert on_disk(data_dir) == []


async def test_api_attachment_to_a_missing_issue_is_404_and_leaves_nothing(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    await api_create(client, auth)  # the route exists and issue 1 is real
    ok = await client.post(
        "/api/v1/issues/1/attachments", data=api_file("x.txt", b"x", "text/plain"), headers=auth
    )
    assert ok.status == 201, await ok.text()
    resp = await client.post(
        "/api/v1/issues/42/attachments", data=api_file("x.txt", b"x", "text/plain"), headers=auth
    )
    assert resp.status == 404
    assert (await resp.json())["code"] == 404
    assert not (data_dir / "uploads" / "42").exists()
    assert list((data_dir / "uploads" / ".incoming").iterdir()) == []


async def test_api_attachment_over_the_limit_is_413_and_leaves_nothing(
    aiohttp_client: ClientFactory, config: Config, auth: dict[str, str], data_dir: Path
) -> None:
    client = await make_client(aiohttp_client, config, upload_max_file_bytes=1000)
    issue_id = await api_create(client, auth)
    resp = await client.post(
        f"/api/v1/issues/{issue_id}/attachments",
        data=api_file("big.bin", b"x" * 5000),
        headers=auth,
    )
    assert resp.status == 413, await resp.text()
    assert (await resp.json())["code"] == 413
    assert on_disk(data_dir) == []
    assert (await api_issue(client, auth, issue_id))["attachments"] == []


async def test_api_attachment_without_the_file_field_is_400(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    issue_id = await api_create(client, auth)
    resp = await client.post(
        f"/api/v1/issues/{issue_id}/attachments",
        data=api_file("x.txt", b"x", field="attachments"),
        headers=auth,
    )
    assert resp.status == 400, await resp.text()
    assert on_disk(data_dir) == []


async def test_api_attached_html_is_still_served_as_a_download(
    client: Client, auth: dict[str, str]
) -> None:
    issue_id = await api_create(client, auth)
    resp = await client.post(
        f"/api/v1/issues/{issue_id}/attachments",
        data=api_file("report.html", HTML, "text/html"),
        headers=auth,
    )
    assert resp.status == 201, await resp.text()
    served = await client.get(local((await resp.json())["url"]))
    assert served.headers["Content-Type"].split(";")[0] not in SCRIPTABLE
    assert served.headers["Content-Disposition"].startswith("attachment")


# -- hydraissue gc-uploads -------------------------------------------------------------


async def test_gc_uploads_removes_orphans_and_keeps_live_folders(
    client: Client, auth: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    live = await report(client, [("live.png", PNG, "image/png")], title="live")
    gone = await report(client, [("gone.png", PNG, "image/png")], title="gone")
    resp = await client.delete(f"/api/v1/issues/{gone['id']}", headers=auth)
    assert resp.status == 204
    live_file = (await api_issue(client, auth, live["id"]))["attachments"][0]["filename"]
    await client.close()  # the server holds the data dir lock; gc runs with it stopped

    uploads = data_dir / "uploads"
    leftovers = {
        uploads / str(gone["id"]) / "0123456789abcdef.png",  # deleted issue, folder came back
        uploads / "999" / "fedcba9876543210.png",  # an id that never existed
        uploads / "scratch" / "notes.txt",  # not an id at all
    }
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"orphan")
    stale = uploads / ".incoming" / "abcdef.part"
    stale.write_bytes(b"half")

    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAISSUE_")}
    env["HOME"] = str(tmp_path)  # no ~/.hydraissue/config.yaml, and no tokens anywhere
    command = [*hydraissue_command(), "gc-uploads", "--data-dir", str(data_dir)]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for folder in (str(gone["id"]), "999", "scratch"):
        assert str(uploads / folder) in out, out
        assert not (uploads / folder).exists()
    assert str(stale) in out
    assert not stale.exists()
    assert "removed 4" in out
    assert (uploads / str(live["id"]) / live_file).read_bytes() == PNG
    assert (uploads / ".incoming").is_dir()

    again = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 0, again.stderr
    assert "removed 0" in again.stdout
    assert (uploads / str(live["id"]) / live_file).exists()
