"""The admin dashboard over HTTP: who gets in, the checks on every change, the human
gate, and the triage actions (through the same service path as the API)."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from hydraissue.sessions import LoginThrottle
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, API_TOKEN, AUTH, ClientFactory, admin_move
from web.app import create_app
from web.keys import LOGIN_THROTTLE

Client = TestClient[Any, web.Application]
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/issues", json={"title": "t", **fields}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def api_patch(client: Client, issue_id: int, body: dict[str, Any], expect: int = 200) -> Any:
    resp = await client.patch(f"/api/v1/issues/{issue_id}", json=body, headers=AUTH)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def log_in(client: Client, token: str = ADMIN_TOKEN, next_path: str = "") -> Any:
    data = {"token": token, **({"next": next_path} if next_path else {})}
    return await client.post("/login", data=data, allow_redirects=False)


async def logged_in(client: Client) -> str:
    """Log in; the session cookie stays in the client's jar. Returns the CSRF token."""
    resp = await log_in(client)
    assert resp.status == 303, await resp.text()
    return await csrf_of(client, "/admin")


async def csrf_of(client: Client, path: str) -> str:
    page = await client.get(path)
    assert page.status == 200, await page.text()
    found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert found, "no CSRF token in the page"
    return found.group(1)


def etag_in(page: str) -> str:
    found = re.search(r'name="etag" value="([^"]+)"', page)
    assert found
    return html.unescape(found.group(1))


# -- who gets in ---------------------------------------------------------------------------

ADMIN_GETS = ["/admin", "/admin?view=review", "/admin/issues/1", "/admin/issues/1/delete"]
ADMIN_POSTS = [
    ("/admin/issues/1/status", {"status": "groomed"}),
    ("/admin/issues/1/accept", {}),
    ("/admin/issues/1/reject", {"reason": "no"}),
    ("/admin/issues/1/comment", {"text": "hi"}),
    ("/admin/issues/1/edit", {"title": "new"}),
    ("/admin/issues/1/delete", {"confirm": "yes"}),
    ("/admin/bulk", {"id": "1", "field": "priority", "value": "high"}),
]


@pytest.mark.parametrize("path", ADMIN_GETS)
async def test_pages_without_a_session_go_to_the_login_form(client: Client, path: str) -> None:
    await create(client)
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/login?next=/admin")
    # a wrong cookie, and the api token, are no better
    client.session.cookie_jar.update_cookies({"admin_session": "forged"})
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 303
    client.session.cookie_jar.clear()
    resp = await client.get(path, headers=AUTH, allow_redirects=False)
    assert resp.status == 401
    resp = await client.get(path, headers=ADMIN_AUTH, allow_redirects=False)
    assert resp.status == 200


@pytest.mark.parametrize(("path", "data"), ADMIN_POSTS)
async def test_no_action_without_the_admin(client: Client, path: str, data: dict[str, str]) -> None:
    issue = await create(client)
    for headers in ({}, AUTH, {"Authorization": "Bearer wrong"}):
        resp = await client.post(path, data=data, headers=headers, allow_redirects=False)
        assert resp.status in (303, 401), (headers, resp.status)
    client.session.cookie_jar.update_cookies({"admin_session": "forged"})
    resp = await client.post(path, data=data, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    after = await (await client.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)).json()
    assert after == issue  # nothing changed


async def test_login_then_the_dashboard(client: Client) -> None:
    resp = await client.get("/login")
    page = await resp.text()
    assert 'name="token"' in page and "Admin Token" in page and 'name="next"' in page
    assert 'type="password"' in page
    resp = await log_in(client, "wrong")
    assert resp.status == 401 and "Invalid token" in await resp.text()
    resp = await log_in(client, API_TOKEN)  # the api token is not the admin's
    assert resp.status == 401
    resp = await log_in(client)
    assert resp.status == 303 and resp.headers["Location"] == "/admin"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("admin_session=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000"):
        assert attribute in cookie
    assert "Secure" not in cookie  # base_url is http here
    assert ADMIN_TOKEN not in cookie
    assert (await client.get("/admin")).status == 200
    # already logged in: the form sends you on
    resp = await client.get("/login", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/admin"


async def test_secure_cookie_when_the_site_is_https(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    from dataclasses import replace

    client = await aiohttp_client(create_app(replace(config, base_url="https://issues.example")))
    resp = await client.post(
        "/login", data={"token": ADMIN_TOKEN}, headers={"Origin": "https://issues.example"}
    )
    assert "Secure" in resp.history[0].headers["Set-Cookie"] if resp.history else True


@pytest.mark.parametrize(
    ("sent", "lands"),
    [
        ("/admin/issues/3?x=1", "/admin/issues/3?x=1"),
        ("//evil.example/admin", "/admin"),
        ("https://evil.example/", "/admin"),
        ("/\\evil.example", "/admin"),
        ("/%0d%0aSet-Cookie:x", "/%0d%0aSet-Cookie:x"),
        ("javascript:alert(1)", "/admin"),
        ("/ admin", "/admin"),
    ],
)
async def test_next_only_goes_to_a_path_on_this_site(client: Client, sent: str, lands: str) -> None:
    resp = await log_in(client, next_path=sent)
    assert resp.status == 303
    assert resp.headers["Location"] == lands


async def test_each_login_is_a_new_session_and_logout_ends_it(client: Client) -> None:
    await logged_in(client)
    first = client.session.cookie_jar.filter_cookies(client.make_url("/"))["admin_session"].value
    await logged_in(client)
    second = client.session.cookie_jar.filter_cookies(client.make_url("/"))["admin_session"].value
    assert first != second
    # the first session ended with the second login
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"admin_session": first})
    assert (await client.get("/admin", allow_redirects=False)).status == 303
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"admin_session": second})
    csrf = await csrf_of(client, "/admin")
    resp = await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert "admin_session=" in resp.headers["Set-Cookie"]
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"admin_session": second})
    assert (await client.get("/admin", allow_redirects=False)).status == 303


async def test_sessions_survive_a_restart_and_end_when_the_token_changes(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path
) -> None:
    from dataclasses import replace

    first = await aiohttp_client(create_app(config))
    await logged_in(first)
    cookie = first.session.cookie_jar.filter_cookies(first.make_url("/"))["admin_session"].value
    await first.close()
    stored = (data_dir / "sessions.yaml").read_text()
    assert cookie not in stored and ADMIN_TOKEN not in stored  # hashes only
    assert (data_dir / "sessions.yaml").stat().st_mode & 0o077 == 0
    second = await aiohttp_client(create_app(config))
    second.session.cookie_jar.update_cookies({"admin_session": cookie})
    assert (await second.get("/admin", allow_redirects=False)).status == 200
    await second.close()
    third = await aiohttp_client(create_app(replace(config, admin_token="a-new-admin-token")))
    third.session.cookie_jar.update_cookies({"admin_session": cookie})
    assert (await third.get("/admin", allow_redirects=False)).status == 303


async def test_an_expired_session_is_refused(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path
) -> None:
    from dataclasses import replace

    client = await aiohttp_client(create_app(replace(config, admin_session_days=0)))
    resp = await log_in(client)
    assert resp.status == 303
    time.sleep(0.01)
    assert (await client.get("/admin", allow_redirects=False)).status == 303


# -- checks on every change ----------------------------------------------------------------


async def test_changes_need_the_forms_csrf_token(client: Client) -> None:
    issue = await create(client)
    csrf = await logged_in(client)
    path = f"/admin/issues/{issue['id']}/comment"
    for data in ({"text": "x"}, {"text": "x", "csrf": "wrong"}):
        resp = await client.post(path, data=data, allow_redirects=False)
        assert resp.status == 403, await resp.text()
    resp = await client.post(path, data={"text": "x", "csrf": csrf}, allow_redirects=False)
    assert resp.status == 303
    after = await (await client.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)).json()
    assert [c["text"] for c in after["comments"]] == ["x"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},
    ],
)
async def test_changes_from_another_site_are_refused(
    client: Client, headers: dict[str, str]
) -> None:
    issue = await create(client)
    csrf = await logged_in(client)
    path = f"/admin/issues/{issue['id']}/comment"
    resp = await client.post(path, data={"text": "x", "csrf": csrf}, headers=headers)
    assert resp.status == 403
    resp = await client.post("/login", data={"token": ADMIN_TOKEN}, headers=headers)
    assert resp.status == 403
    same = {"Origin": str(client.make_url("")).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    resp = await client.post(
        path, data={"text": "x", "csrf": csrf}, headers=same, allow_redirects=False
    )
    assert resp.status == 303


async def test_nothing_changes_on_get(client: Client) -> None:
    issue = await create(client)
    await logged_in(client)
    before = await (await client.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)).json()
    for path in ("/admin/issues/1/status?status=closed", "/admin/issues/1/delete?confirm=yes"):
        resp = await client.get(path)
        assert resp.status in (200, 405)
    after = await (await client.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)).json()
    assert after == before


async def test_failed_logins_are_throttled_per_address(client: Client) -> None:
    throttle = client.app[LOGIN_THROTTLE]
    throttle.free, throttle.limit, throttle.unit = 2, 4, 0.05  # the real rule, faster
    started = time.monotonic()
    for _ in range(2):
        assert (await log_in(client, "guess")).status == 401
    quick = time.monotonic() - started
    for _ in range(2):
        assert (await log_in(client, "guess")).status == 401
    assert time.monotonic() - started - quick >= 0.05 + 0.1  # the waits grew
    refused = await log_in(client, "guess")
    assert refused.status == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Too many failed logins" in await refused.text()
    assert (await log_in(client)).status == 429  # even the right token, from there
    # another address is not locked out
    assert throttle.retry_after("192.0.2.7") == 0


def test_the_throttle_forgets_and_bounds_itself() -> None:
    throttle = LoginThrottle(free=1, limit=3, window=10.0, max_clients=2)
    for n in range(3):
        throttle.failed("a", now=float(n))
    assert throttle.retry_after("a", now=3.0) > 0
    assert throttle.retry_after("a", now=20.0) == 0  # the window passed
    assert throttle.delay("b", now=0.0) == 0.0
    throttle.failed("b", now=0.0)
    throttle.failed("c", now=0.0)
    throttle.failed("d", now=0.0)
    assert len(throttle._failures) <= 2
    throttle.failed("e", now=0.0)
    throttle.succeeded("e")
    assert throttle.delay("e", now=0.0) == 0.0


async def test_security_headers_on_admin_pages(client: Client) -> None:
    await logged_in(client)
    for path in ("/admin", "/login"):
        resp = await client.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert " style=" not in await resp.text() and "<script>" not in await resp.text()


# -- the human gate ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["accepted", "rejected"])
async def test_agents_cannot_approve_or_reject(client: Client, status: str) -> None:
    issue = await create(client)
    await api_patch(client, issue["id"], {"status": "proposed"})
    body = await api_patch(client, issue["id"], {"status": status}, expect=403)
    assert body["code"] == 403 and "admin" in body["error"]
    assert body["detail"] == {"current": "proposed", "requested": status, "gate": "admin"}
    resp = await client.put(
        f"/api/v1/issues/{issue['id']}/plan", json={"plan": "p", "status": status}, headers=AUTH
    )
    assert resp.status == 403


async def test_implementing_only_from_accepted_and_done_from_anywhere(client: Client) -> None:
    issue = await create(client)
    for status in ("open", "groomed", "planning", "proposed"):
        await api_patch(client, issue["id"], {"status": status})
        refused = await api_patch(client, issue["id"], {"status": "implementing"}, expect=403)
        assert "accepted" in refused["error"]
    await admin_move(client, issue["id"], "rejected")
    await api_patch(client, issue["id"], {"status": "groomed"}, expect=403)
    await admin_move(client, issue["id"], "groomed")
    await api_patch(client, issue["id"], {"status": "proposed"})
    await admin_move(client, issue["id"], "accepted")
    await api_patch(client, issue["id"], {"status": "implementing"})
    other = await create(client)
    assert (await api_patch(client, other["id"], {"status": "resolved"}))["status"] == "done"


async def test_a_deployment_may_let_agents_approve(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    from dataclasses import replace

    client = await aiohttp_client(create_app(replace(config, lifecycle_agents_may_approve=True)))
    issue = await create(client)
    assert (await api_patch(client, issue["id"], {"status": "accepted"}))["status"] == "accepted"


async def test_admin_actions_are_the_admins_in_the_events(client: Client) -> None:
    issue = await create(client, title="Plan me")
    await api_patch(client, issue["id"], {"status": "proposed", "plan": "Do it"})
    csrf = await logged_in(client)
    page = await (await client.get(f"/admin/issues/{issue['id']}")).text()
    assert "Plan awaiting review" in page and "Accept plan" in page
    resp = await client.post(
        f"/admin/issues/{issue['id']}/accept",
        data={"csrf": csrf, "etag": etag_in(page)},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"].startswith(f"/admin/issues/{issue['id']}?")
    feed = await (await client.get(f"/api/v1/events?issue_id={issue['id']}", headers=AUTH)).json()
    last = feed["events"][-1]
    assert last["actor"] == {"kind": "admin", "name": None}
    assert last["data"]["changes"] == {"status": "accepted"}


async def test_reject_asks_for_a_reason_and_keeps_it_as_a_comment(client: Client) -> None:
    issue = await create(client)
    await api_patch(client, issue["id"], {"status": "proposed", "plan": "Do it"})
    csrf = await logged_in(client)
    path = f"/admin/issues/{issue['id']}/reject"
    resp = await client.post(path, data={"csrf": csrf, "reason": "  "})
    assert resp.status == 400
    resp = await client.post(path, data={"csrf": csrf, "reason": "Too broad"})
    assert resp.status == 200  # followed to the issue's page
    after = await (await client.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)).json()
    assert after["status"] == "rejected"
    assert [(c["author"], c["text"]) for c in after["comments"]] == [
        ("admin", "Plan rejected: Too broad")
    ]


async def test_a_refused_move_shows_the_reason(client: Client) -> None:
    issue = await create(client)
    await api_patch(client, issue["id"], {"status": "done"})
    csrf = await logged_in(client)
    page = await (await client.get(f"/admin/issues/{issue['id']}")).text()
    offered = re.findall(
        r"<option>(\w+)</option>", page.split('id="move"')[1].split("</select>")[0]
    )
    assert offered == ["closed"]  # only the moves the lifecycle allows
    resp = await client.post(
        f"/admin/issues/{issue['id']}/status", data={"csrf": csrf, "status": "open"}
    )
    assert resp.status == 409
    assert "done and closed never go back" in await resp.text()


async def test_the_second_of_two_admins_is_told_the_issue_changed(client: Client) -> None:
    issue = await create(client, title="Original")
    csrf = await logged_in(client)
    page = await (await client.get(f"/admin/issues/{issue['id']}")).text()
    etag = etag_in(page)
    path = f"/admin/issues/{issue['id']}/edit"
    first = await client.post(
        path, data={"csrf": csrf, "etag": etag, "title": "First"}, allow_redirects=False
    )
    assert first.status == 303
    second = await client.post(path, data={"csrf": csrf, "etag": etag, "title": "Second"})
    assert second.status == 412
    assert "changed since you opened it" in await second.text()
    after = await (await client.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)).json()
    assert after["title"] == "First"


async def test_edit_fields_and_custom_fields_as_json(client: Client) -> None:
    issue = await create(client)
    csrf = await logged_in(client)
    path = f"/admin/issues/{issue['id']}/edit"
    bad = await client.post(path, data={"csrf": csrf, "custom_fields": "{nope"})
    assert bad.status == 400 and "custom_fields" in await bad.text()
    resp = await client.post(
        path,
        data={
            "csrf": csrf,
            "title": "Renamed",
            "priority": "high",
            "category": "bug",
            "project": "",
            "description": "now *with* text",
            "custom_fields": '{"device": "Quest 3", "n": 2}',
        },
        allow_redirects=False,
    )
    assert resp.status == 303
    after = await (await client.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)).json()
    assert (after["title"], after["priority"], after["category"], after["project"]) == (
        "Renamed",
        "high",
        "bug",
        None,
    )
    assert after["custom_fields"] == {"device": "Quest 3", "n": 2}


async def test_delete_asks_first(client: Client) -> None:
    issue = await create(client)
    csrf = await logged_in(client)
    confirm = await client.get(f"/admin/issues/{issue['id']}/delete")
    assert "Delete HYDRA-1?" in await confirm.text()
    path = f"/admin/issues/{issue['id']}/delete"
    resp = await client.post(path, data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].endswith("/delete")
    resp = await client.post(path, data={"csrf": csrf, "confirm": "yes"}, allow_redirects=False)
    assert resp.status == 303
    assert (await client.get(f"/api/v1/issues/{issue['id']}", headers=AUTH)).status == 404


async def test_bulk_changes_with_a_summary_of_refusals(client: Client) -> None:
    a, b, c = [await create(client, title=f"bulk {n}") for n in range(3)]
    await api_patch(client, c["id"], {"status": "done"})
    csrf = await logged_in(client)
    ids = [str(a["id"]), str(b["id"]), str(c["id"])]
    form = [("csrf", csrf), ("field", "priority"), ("value", "critical")] + [("id", i) for i in ids]
    resp = await client.post("/admin/bulk", data=form)
    assert resp.status == 200
    assert "priority set to critical on 3 issue(s)" in html.unescape(await resp.text())
    form = [("csrf", csrf), ("field", "status"), ("value", "groomed")] + [("id", i) for i in ids]
    resp = await client.post("/admin/bulk", data=form)
    text = html.unescape(await resp.text())
    assert "on 2 issue(s)" in text and f"Refused: HYDRA-{c['id']}" in text


async def test_the_list_filters_counts_and_review_queue(client: Client) -> None:
    await create(client, title="Login fails", project="alpha", category="bug")
    planned = await create(client, title="Needs a plan", project="beta")
    await api_patch(client, planned["id"], {"status": "proposed", "plan": "p"})
    await logged_in(client)
    page = await (await client.get("/admin")).text()
    assert "HYDRA-1" in page and "HYDRA-2" in page and "plan to review" in page
    assert re.search(r"open</span> <strong>1</strong>", page)
    page = await (await client.get("/admin?project=alpha&status=open&status=groomed")).text()
    assert "Login fails" in page and "Needs a plan" not in page
    assert '<a href="/admin?status=open" class="count status-open on">' in page
    assert '<a href="/admin?status=done" class="count status-done">' in page
    page = await (await client.get("/admin?view=review")).text()
    assert "Needs a plan" in page and "Login fails" not in page
    page = await (await client.get("/admin?q=login")).text()
    assert "Login fails" in page and "Needs a plan" not in page
    resp = await client.get("/admin?Status=open")
    assert resp.status == 400 and "Status" in await resp.text()


async def test_the_list_pages_keep_the_filter(client: Client) -> None:
    for n in range(5):
        await create(client, title=f"bug {n}", category="bug")
    await logged_in(client)
    page = await (await client.get("/admin?category=bug&limit=2")).text()
    assert 'href="/admin?category=bug&amp;limit=2&amp;sort=-updated&amp;offset=2"' in page
    page = await (await client.get("/admin?category=bug&limit=2&offset=2")).text()
    assert 'href="/admin?category=bug&amp;limit=2&amp;sort=-updated&amp;offset=0"' in page
    assert 'href="/admin?category=bug&amp;limit=2&amp;sort=-updated&amp;offset=4"' in page
    page = await (await client.get("/admin?category=bug&limit=2&offset=4")).text()
    assert "offset=6" not in page


async def test_list_rows_without_a_project_or_priority_show_a_dash(client: Client) -> None:
    """As a character reference: a row of ASCII alone is kept at a byte a character."""
    await create(client, title="No project")
    await logged_in(client)
    page = await (await client.get("/admin")).text()
    row = page[page.index('<tr data-id="1">') :]
    row = row[: row.index("</tr>")]
    assert '<td dir="auto">&#8212;</td>' in row and "<td>&#8212;</td>" in row
    assert row.isascii()


async def test_a_listed_row_shows_the_issues_new_state(client: Client) -> None:
    """Rows are kept per issue: a change (a new seq) renders the row again."""
    issue = await create(client, title="Before")
    await logged_in(client)

    def row_of(page: str) -> str:
        row = page[page.index(f'<tr data-id="{issue["id"]}">') :]
        return row[: row.index("</tr>")]

    row = row_of(await (await client.get("/admin")).text())
    assert "Before" in row and "status-open" in row
    await api_patch(client, issue["id"], {"status": "groomed", "title": "After"})
    row = row_of(await (await client.get("/admin")).text())
    assert "After" in row and "status-groomed" in row and "Before" not in row


async def test_a_list_page_of_ascii_issues_is_ascii(client: Client) -> None:
    """Its range, page links and title too: one other character made the whole page
    two bytes a character, transcoded for every answer."""
    for n in range(3):
        await create(client, title=f"bug {n}")
    await logged_in(client)
    page = await (await client.get("/admin?limit=1&offset=1")).text()
    assert "2&#8211;2 shown" in page and "&larr; Previous" in page and "Next page &rarr;" in page
    assert page.isascii()


async def test_user_text_is_escaped_in_admin_pages(client: Client) -> None:
    issue = await create(
        client,
        title=XSS,
        description=XSS,
        reporter=XSS,
        project=XSS,
        custom_fields={XSS: XSS},
    )
    await client.post(
        f"/api/v1/issues/{issue['id']}/comments", json={"author": XSS, "text": XSS}, headers=AUTH
    )
    await client.post(
        f"/api/v1/issues/{issue['id']}/nim-actions",
        json={"name": XSS, "action": XSS},
        headers=AUTH,
    )
    await api_patch(client, issue["id"], {"status": "proposed", "plan": XSS})
    await logged_in(client)
    for path in ("/admin", f"/admin/issues/{issue['id']}", "/admin?view=review"):
        page = await (await client.get(path)).text()
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert" in page  # shown as text


async def test_the_board_moves_cards_where_the_lifecycle_allows(client: Client) -> None:
    card = await create(client, title="On the board")
    finished = await create(client, title="Finished")
    await api_patch(client, finished["id"], {"status": "done"})
    csrf = await logged_in(client)
    page = await (await client.get("/admin/board")).text()
    for status in ("open", "groomed", "proposed", "done", "closed"):
        assert f'data-status="{status}"' in page
    assert 'data-moves="closed"' in page  # the done card may only close
    resp = await client.post(
        f"/admin/issues/{card['id']}/status",
        data={"csrf": csrf, "status": "groomed", "back": "board"},
    )
    assert resp.status == 200 and resp.url.path == "/admin/board"
    assert "HYDRA-1 moved to groomed" in await resp.text()
    resp = await client.post(
        f"/admin/issues/{finished['id']}/status",
        data={"csrf": csrf, "status": "open", "back": "board"},
    )
    assert "HYDRA-2 not moved" in html.unescape(await resp.text())
    assert (await client.get("/admin/board?status=open")).status == 400


async def test_the_runbooks_admin_script_example_works(client: Client) -> None:
    """docs/runbook.md: a script accepts a plan with the admin token, JSON back."""
    runbook = (Path(__file__).resolve().parents[1] / "docs" / "runbook.md").read_text()
    example = runbook.split("### The human gate")[1].split("```bash")[1].split("```")[0]
    assert '-H "Authorization: Bearer $ADMIN_TOKEN"' in example
    data = dict([re.search(r"-d (\w+)=(\w+)", example).groups()])  # type: ignore[union-attr]
    path = re.search(r"http://localhost:8080(\S+)", example).group(1)  # type: ignore[union-attr]
    issue = await create(client)
    await api_patch(client, issue["id"], {"status": "proposed", "plan": "p"})
    resp = await client.post(path, data=data, headers=ADMIN_AUTH)
    assert resp.status == 200
    assert (await resp.json())["status"] == "accepted"
