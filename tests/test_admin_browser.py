"""The admin dashboard in a real browser (Debian's Chromium via Playwright), against
the real ``hydraissue serve`` (the `server` and `browser` fixtures of conftest)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import (
    ALL_PAYLOADS,
    BROWSER_ADMIN_TOKEN,
    BROWSER_API_TOKEN,
    IMG,
    PHONE,
    SCREENSHOTS,
    SCRIPT,
    XSS_HOOKS,
    BrowserServer,
    make_png,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def admin(browser: Any, server: BrowserServer) -> Iterator[Any]:
    """A logged-in admin's page (desktop width), with the XSS tripwires installed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(XSS_HOOKS)
    page = context.new_page()
    page.goto(f"{server.url}/admin")
    assert "/login" in page.url  # not logged in yet: sent to the form
    page.get_by_label("Admin Token").fill(BROWSER_ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/admin")
    try:
        yield page
    finally:
        assert not page.evaluate("window.__xss || false"), page.evaluate("window.__xssWhy")
        context.close()


def proposed(server: BrowserServer, title: str, project: str = "kiosk") -> int:
    issue = server.api("POST", "/issues", {"title": title, "project": project})
    server.api("PUT", f"/issues/{issue['id']}/plan", {"plan": "1. Do **it**", "status": "proposed"})
    return int(issue["id"])


def test_find_an_issue_and_accept_its_plan(admin: Any, server: BrowserServer) -> None:
    wanted = proposed(server, "Lobby kiosk freezes", project="lobby")
    proposed(server, "Other thing", project="elsewhere")
    admin.goto(f"{server.url}/admin")
    admin.get_by_text("Filters", exact=True).click()  # folded away until a filter is set
    admin.get_by_label("Project").select_option("lobby")
    admin.get_by_role("button", name="Filter").click()
    admin.wait_for_url("**project=lobby**")
    admin.get_by_role("link", name="Lobby kiosk freezes").click()
    assert admin.get_by_role("heading", name="Plan awaiting review").is_visible()
    admin.screenshot(path=str(SCREENSHOTS / "admin-issue.png"), full_page=True)
    admin.get_by_role("button", name="Accept plan").click()
    admin.wait_for_url(f"**/admin/issues/{wanted}?done=**")
    assert admin.get_by_text("Plan accepted.").is_visible()
    issue = server.api("GET", f"/issues/{wanted}")
    assert issue["status"] == "accepted"


def test_reject_a_plan_with_a_reason(admin: Any, server: BrowserServer) -> None:
    issue_id = proposed(server, "Reject me")
    admin.goto(f"{server.url}/admin?view=review")
    admin.get_by_role("link", name="Reject me").click()
    admin.get_by_role("button", name="Reject plan").click()  # no reason: the browser stops it
    assert admin.url.endswith(f"/admin/issues/{issue_id}")
    admin.get_by_label("Reason for rejecting").fill("Touches the payment code")
    admin.get_by_role("button", name="Reject plan").click()
    admin.wait_for_url("**?done=**")
    assert admin.get_by_text("Plan rejected: Touches the payment code").is_visible()
    assert server.api("GET", f"/issues/{issue_id}")["status"] == "rejected"


def test_a_forbidden_move_says_why(admin: Any, server: BrowserServer) -> None:
    issue = server.api("POST", "/issues", {"title": "Closed behind my back"})
    admin.goto(f"{server.url}/admin/board")
    card = admin.locator(f"article[data-id='{issue['id']}']")
    card.get_by_label(f"Move HYDRA-{issue['id']} to").select_option("groomed")
    server.api("PATCH", f"/issues/{issue['id']}", {"status": "done"})  # meanwhile
    card.get_by_role("button", name="Move").click()
    admin.wait_for_url("**/admin/board?**")
    assert admin.get_by_text("done and closed never go back", exact=False).is_visible()
    admin.screenshot(path=str(SCREENSHOTS / "admin-board.png"), full_page=False)


def test_bulk_change_priority(admin: Any, server: BrowserServer) -> None:
    ids = [
        server.api("POST", "/issues", {"title": f"Bulk {n}", "project": "bulk"})["id"]
        for n in range(3)
    ]
    admin.goto(f"{server.url}/admin?project=bulk")
    for issue_id in ids:
        admin.get_by_label(f"Select HYDRA-{issue_id}").check()
    admin.locator("#bulk-field").select_option("priority")
    admin.locator("#bulk-value").select_option("critical")
    admin.get_by_role("button", name="Apply to selected").click()
    admin.wait_for_url("**bulk_done=**")
    assert admin.get_by_text("priority set to critical on 3 issue(s).").is_visible()
    assert {server.api("GET", f"/issues/{i}")["priority"] for i in ids} == {"critical"}
    admin.screenshot(path=str(SCREENSHOTS / "admin-list.png"), full_page=False)


def test_the_changed_notice_when_the_api_changes_the_open_issue(
    admin: Any, server: BrowserServer
) -> None:
    issue = server.api("POST", "/issues", {"title": "Watch me"})
    admin.goto(f"{server.url}/admin/issues/{issue['id']}")
    admin.locator("html[data-live=open]").wait_for(state="attached")  # the stream is on
    server.api("POST", f"/issues/{issue['id']}/comments", {"author": "nim", "text": "groomed"})
    notice = admin.locator(".live")
    notice.wait_for(state="visible", timeout=5000)
    assert "changed" in notice.inner_text()
    notice.get_by_role("link", name="Reload").click()
    admin.wait_for_load_state("load")
    assert admin.locator(".comment").filter(has_text="groomed").is_visible()


def test_xss_in_every_field_never_runs(admin: Any, server: BrowserServer) -> None:
    issue = server.api(
        "POST",
        "/issues",
        {
            "title": ALL_PAYLOADS,
            "description": ALL_PAYLOADS,
            "project": ALL_PAYLOADS,
            "reporter": ALL_PAYLOADS,
            "custom_fields": {ALL_PAYLOADS: ALL_PAYLOADS},
        },
    )
    issue_id = issue["id"]
    server.api(
        "POST", f"/issues/{issue_id}/comments", {"author": ALL_PAYLOADS, "text": ALL_PAYLOADS}
    )
    server.api(
        "POST", f"/issues/{issue_id}/nim-actions", {"name": ALL_PAYLOADS, "action": ALL_PAYLOADS}
    )
    server.api("PUT", f"/issues/{issue_id}/plan", {"plan": ALL_PAYLOADS, "status": "proposed"})
    attach(server, issue_id, f"{SCRIPT}{IMG}.png", make_png())
    attach(server, issue_id, f"{SCRIPT}notes.txt", b"plain text")
    hook = {
        "url": f"https://93.184.216.34/{SCRIPT}",
        "events": ["issue.deleted"],
    }  # never sent here
    server.api("POST", "/webhooks", {**hook, "description": ALL_PAYLOADS})
    pages = ["/admin", "/admin?view=review", "/admin/board", f"/admin/issues/{issue_id}"]
    for path in [*pages, "/admin/webhooks", "/admin/nims", "/admin/stats"]:
        admin.goto(f"{server.url}{path}")
        admin.wait_for_load_state("load")
        assert not admin.evaluate("window.__xss || false"), (
            path,
            admin.evaluate("window.__xssWhy"),
        )


def attach(server: BrowserServer, issue_id: int, filename: str, data: bytes) -> None:
    """A file through the API (multipart), under the name given."""
    boundary = "----hydraissue-test-boundary"
    quoted = filename.replace('"', "%22")
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{quoted}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{server.url}/api/v1/issues/{issue_id}/attachments",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {BROWSER_API_TOKEN}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201


def test_the_phone_view(browser: Any, server: BrowserServer) -> None:
    proposed(server, "Review on the phone")
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.get_by_label("Admin Token").fill(BROWSER_ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/admin")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the list scrolls sideways on a phone ({width}px)"
    page.screenshot(path=str(SCREENSHOTS / "admin-phone.png"), full_page=False)
    page.goto(f"{server.url}/admin?view=review")
    page.get_by_role("link", name="Review on the phone").click()
    assert page.get_by_role("button", name="Accept plan").is_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the plan review scrolls sideways on a phone ({width}px)"
    page.screenshot(path=str(SCREENSHOTS / "admin-phone-review.png"), full_page=True)
    context.close()


def test_the_charts(admin: Any, server: BrowserServer) -> None:
    issue_id = proposed(server, "Charted", project="charts")
    admin.goto(f"{server.url}/admin/issues/{issue_id}")
    admin.get_by_role("button", name="Accept plan").click()
    admin.wait_for_url("**?done=**")
    admin.get_by_role("link", name="Stats").click()
    admin.wait_for_url("**/admin/stats")
    charts = admin.locator("svg[role=img]")
    assert charts.count() >= 4
    assert charts.first.is_visible()
    assert "charts" in admin.content()  # the project is in the by-project chart
    admin.screenshot(path=str(SCREENSHOTS / "admin-stats.png"), full_page=True)
