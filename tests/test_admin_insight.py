"""The admin insight pages over HTTP, on real data made through the API: the stats
charts and their text alternatives, the quality report and its downloads, the webhooks
with real deliveries to a local receiver, and the agents' activity and trails."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import html
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from markupsafe import Markup, escape

from hydraissue.config import Config
from hydraissue.delivery import Policy
from projections.insight import stamp, week_starts, weekly
from tests.conftest import ADMIN_TOKEN, AUTH, ClientFactory, admin_move, settled
from web import admin_insight, charts
from web.app import create_app
from web.keys import SERVICE

Client = TestClient[Any, web.Application]
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # a script: HTML back, no CSRF asked
FAST = Policy(timeout=2.0, attempts=3, waits=(0.05, 0.1))


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/issues", json={"title": "t", **fields}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def patch(
    client: Client, issue_id: int, body: dict[str, Any], nim: str | None = None, expect: int = 200
) -> Any:
    headers = {**AUTH, **({"X-Nim-Name": nim} if nim else {})}
    resp = await client.patch(f"/api/v1/issues/{issue_id}", json=body, headers=headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def nim_action(client: Client, issue_id: int, name: str, action: str) -> None:
    resp = await client.post(
        f"/api/v1/issues/{issue_id}/nim-actions",
        json={"name": name, "action": action},
        headers=AUTH,
    )
    assert resp.status == 201, await resp.text()


async def logged_in(client: Client) -> str:
    """Log in with the form; the cookie stays in the jar. Returns the CSRF token."""
    resp = await client.post("/login", data={"token": ADMIN_TOKEN}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    page = await (await client.get("/admin/webhooks")).text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


async def page(client: Client, path: str, status: int = 200) -> str:
    resp = await client.get(path, headers=BEARER)
    text = await resp.text()
    assert resp.status == status, text
    if status == 200:
        csp = resp.headers["Content-Security-Policy"]
        assert "style-src 'self'" in csp and "unsafe-inline" not in csp
        assert "style=" not in text and "<style" not in text  # the CSP would block them
        assert "<script>" not in text  # no inline script (nor a payload) anywhere
    return text


def esc(text: str) -> str:
    """As the templates escape it."""
    return str(escape(text))


def table_rows(text: str, caption: str) -> dict[str, list[str]]:
    """The rows of the data table with this caption: first cell -> the other cells."""
    start = text.index(f'<caption class="sr">{caption}')
    body = text[start : text.index("</table>", start)]
    rows: dict[str, list[str]] = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        ]
        rows[cells[0]] = cells[1:]
    return rows


def svg_desc(text: str, chart_id: str) -> str:
    found = re.search(rf'<desc id="{chart_id}-desc">(.*?)</desc>', text, re.S)
    assert found, f"no chart {chart_id}"
    return html.unescape(found.group(1))


# -- who gets in ------------------------------------------------------------------------

PAGES = [
    "/admin/stats",
    "/admin/reports/quality",
    "/admin/reports/quality.md",
    "/admin/reports/quality.csv",
    "/admin/webhooks",
    "/admin/nims",
    "/admin/nims/scout",
]
ACTIONS = [
    "/admin/webhooks/wh_1/ping",
    "/admin/webhooks/wh_1/active",
    "/admin/webhooks/wh_1/deliveries/whd_1_1/redeliver",
]


@pytest.mark.parametrize("path", PAGES)
async def test_pages_are_the_admins_only(client: Client, path: str) -> None:
    issue = await create(client)
    await nim_action(client, issue["id"], "scout", "groomed")
    await settled(client)  # the agent's trail is written in the background
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"/login?next={quote(path, safe='/')}"
    client.session.cookie_jar.update_cookies({"admin_session": "forged"})
    assert (await client.get(path, allow_redirects=False)).status == 303
    client.session.cookie_jar.clear()
    assert (await client.get(path, headers=AUTH, allow_redirects=False)).status == 401
    assert (await client.get(path, headers=BEARER, allow_redirects=False)).status == 200
    await logged_in(client)
    assert (await client.get(path, allow_redirects=False)).status == 200


@pytest.mark.parametrize("path", ACTIONS)
async def test_actions_are_the_admins_only(client: Client, path: str) -> None:
    for headers in ({}, AUTH, {"Authorization": "Bearer wrong"}):
        resp = await client.post(
            path, data={"active": "false"}, headers=headers, allow_redirects=False
        )
        assert resp.status in (303, 401), (headers, resp.status)
        if resp.status == 303:
            assert resp.headers["Location"].startswith("/login")


# -- /admin/stats -------------------------------------------------------------------------


async def test_stats_charts_with_their_numbers(client: Client) -> None:
    ids = []
    for project, count in (("alpha", 3), (XSS, 2), (None, 1)):
        for _ in range(count):
            fields = {"project": project} if project else {}
            ids.append((await create(client, **fields))["id"])
    await patch(client, ids[0], {"status": "groomed"})
    await patch(client, ids[1], {"status": "done"})
    text = await page(client, "/admin/stats")
    assert text.count("<svg") == 5 and text.count('role="img"') == 5
    for chart in ("by-status", "by-project", "weekly", "acceptance", "stages"):
        assert f'aria-labelledby="{chart}-title {chart}-desc"' in text
    # the numbers, in the chart's description and in the visible table
    assert "open: 4" in svg_desc(text, "by-status") and "done: 1" in svg_desc(text, "by-status")
    statuses = table_rows(text, "Issues by status")
    assert statuses["open"] == ["4"] and statuses["groomed"] == ["1"] and statuses["done"] == ["1"]
    projects = table_rows(text, "Issues by project")
    assert projects == {"Project": ["Issues"], "alpha": ["3"], XSS: ["2"]}
    assert f"{XSS}: 2" in svg_desc(text, "by-project")
    # the project name is text everywhere: never markup
    assert XSS not in text and "&lt;script&gt;alert(" in text
    this_week = week_starts(datetime.now(UTC))[-1].strftime("%Y-%m-%d")
    weeks = table_rows(text, "Issues created and done per week")
    assert weeks[this_week] == ["6", "1"] and len(weeks) == 13  # the header and 12 weeks
    assert f"week of {this_week}: created 6, done 1" in svg_desc(text, "weekly")


async def test_stats_of_one_project(client: Client) -> None:
    await create(client, project="alpha")
    await create(client, project="beta")
    text = await page(client, f"/admin/stats?project={quote(XSS)}", status=400)
    assert "no issue is in the project" in text and XSS not in text
    text = await page(client, "/admin/stats?project=alpha")
    assert table_rows(text, "Issues by status")["open"] == ["1"]
    assert "by-project" not in text  # a project's page has no per-project chart
    assert "<option selected>alpha</option>" in text
    assert (await client.get("/admin/stats?colour=red", headers=BEARER)).status == 400


async def test_plan_acceptance_per_agent_and_time_in_stages(client: Client) -> None:
    """Agents propose plans (saying who they are); the admin accepts or rejects them."""
    decisions = [("planner", "accepted"), ("planner", "accepted"), ("planner", "rejected")]
    decisions.append((XSS, "accepted"))
    for agent, decision in decisions:
        issue = await create(client)
        await patch(client, issue["id"], {"status": "groomed"}, nim=agent)
        await patch(client, issue["id"], {"status": "proposed", "plan": "p"}, nim=agent)
        await admin_move(client, issue["id"], decision)
    done = await create(client)
    await patch(client, done["id"], {"status": "proposed", "plan": "p"}, nim="planner")
    await admin_move(client, done["id"], "accepted")
    await patch(client, done["id"], {"status": "done"}, nim="builder")
    text = await page(client, "/admin/stats")
    agents = table_rows(text, "Plan acceptance rate per agent")
    assert agents["planner"] == ["3", "1", "75%"]
    assert agents[XSS] == ["1", "0", "100%"]
    assert agents["All"] == ["4", "1", "80%"]
    desc = svg_desc(text, "acceptance")
    assert "planner: 75% (3 of 4)" in desc and f"{XSS}: 100% (1 of 1)" in desc
    assert XSS not in text
    stages = table_rows(text, "Time in each stage")
    assert stages["open → groomed"][0] == "4"  # four issues were groomed
    assert stages["proposed → decided"][0] == "5"  # every decision
    assert stages["accepted → done"][0] == "1"
    assert "proposed → decided: 0 h" in svg_desc(text, "stages")


async def test_the_plan_figures_are_kept_and_recomputed_in_the_background(
    client: Client,
) -> None:
    first = await create(client)
    await patch(client, first["id"], {"status": "proposed", "plan": "p"}, nim="planner")
    await admin_move(client, first["id"], "accepted")
    service = client.app[SERVICE]
    cache = client.app[admin_insight.FIGURES]
    text = await page(client, "/admin/stats")
    assert table_rows(text, "Plan acceptance rate per agent")["planner"] == ["1", "0", "100%"]
    computed = cache.figures[None]
    await page(client, "/admin/stats")
    assert cache.figures[None] is computed and not cache.running  # nothing changed
    second = await create(client)
    await patch(client, second["id"], {"status": "proposed", "plan": "p"}, nim="planner")
    await admin_move(client, second["id"], "rejected")
    # young figures are shown as they are, saying that events came since
    text = await page(client, "/admin/stats")
    assert table_rows(text, "Plan acceptance rate per agent")["planner"] == ["1", "0", "100%"]
    assert "events since then are not counted yet" in text and not cache.running
    # older ones too, while a recomputation runs in the background
    computed.made -= admin_insight.FRESH_FOR + 1
    text = await page(client, "/admin/stats")
    assert table_rows(text, "Plan acceptance rate per agent")["planner"] == ["1", "0", "100%"]
    assert cache.running
    await cache.idle()
    text = await page(client, "/admin/stats")
    assert table_rows(text, "Plan acceptance rate per agent")["planner"] == ["1", "1", "50%"]
    assert "not counted yet" not in text
    # and figures too old are recomputed before the page shows them
    await create(client)
    cache.figures[None].made -= admin_insight.STALE_LIMIT + 1
    stale = cache.figures[None]
    await page(client, "/admin/stats")
    assert cache.figures[None] is not stale and cache.figures[None].head == service.head
    # unchanged but old: shown, and computed again for a window that moved on
    old = cache.figures[None]
    old.made -= admin_insight.STALE_LIMIT + 1
    text = await page(client, "/admin/stats")
    assert "not counted yet" not in text and cache.running
    await cache.idle()
    assert cache.figures[None] is not old


def test_weekly_counts_are_binary_searches_in_sorted_times() -> None:
    now = datetime(2026, 3, 12, 15, 0, tzinfo=UTC)  # a Thursday
    starts = week_starts(now)
    assert starts[-1] == datetime(2026, 3, 9, tzinfo=UTC) and starts[0].weekday() == 0
    assert starts[-1] - starts[0] == timedelta(weeks=11)
    created = sorted(
        [
            stamp(starts[0] - timedelta(seconds=1)),  # before the window
            stamp(starts[0]),  # its first moment
            stamp(starts[5] + timedelta(days=3)),
            stamp(starts[-1] - timedelta(milliseconds=1)),  # the last moment of week 11
            stamp(now),
        ]
    )
    done = [stamp(starts[5] + timedelta(days=6))]
    weeks = weekly(created, done, now)
    assert [w.created for w in weeks] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1]
    assert [w.done for w in weeks] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert weeks[-1].start == "2026-03-09" and weeks[0].start == "2025-12-22"
    assert weekly([], [], now)[0].created == 0


def test_charts_escape_every_label_and_state_every_number() -> None:
    bars = charts.bars("x<y", XSS, [(XSS, 3), ("b", 1.5)], unit=" h")
    assert isinstance(bars, Markup) and XSS not in bars and "<script" not in bars
    assert 'id="x-y-title"' in bars  # an id is made safe too
    assert "&lt;script&gt;" in bars and "b: 1.5 h" in bars
    columns = charts.columns(
        "w", "t", [XSS, "b"], [("created", [1, 2]), (XSS, [0, 4])], ticks=[XSS, "2"]
    )
    assert XSS not in columns and "<script" not in columns
    assert "b: created 2, &lt;script&gt;" in columns
    empty = charts.bars("e", "t", [], empty="Nothing <here>")
    assert "Nothing &lt;here&gt;" in empty and "<rect" not in empty
    assert charts.number(2.0) == "2" and charts.number(0.125) == "0.12"


# -- /admin/reports/quality --------------------------------------------------------------


async def test_the_quality_report_for_a_window_and_its_downloads(client: Client) -> None:
    issue = await create(client, title=XSS, project="alpha")
    await patch(client, issue["id"], {"status": "proposed", "plan": "p"}, nim="planner")
    await admin_move(client, issue["id"], "accepted")
    await patch(client, issue["id"], {"status": "done"})
    await patch(client, issue["id"], {"status": "open"}, expect=409)  # a refused move
    other = await create(client, project="beta")
    await patch(client, other["id"], {"status": "done"})
    today = datetime.now(UTC).date().isoformat()
    text = await page(client, "/admin/reports/quality")  # the last 7 days by default
    assert f'name="until" type="date" value="{today}"' in text
    assert "Accepted 1, rejected 0: acceptance rate 100%." in text
    assert XSS not in text and "&lt;script&gt;" in text  # the title, in the lists
    assert "Refused moves (1)" in text and "done → open" in text
    assert "Done without a plan (1)" in text
    query = f"since={today}&until={today}&project=alpha"
    text = await page(client, f"/admin/reports/quality?{query}")
    assert "Done without a plan (0)" in text  # beta's issue is not in alpha's report
    api = await (await client.get(f"/api/v1/reports/quality?{query}", headers=AUTH)).json()
    assert api["counts"]["created"] == 1 and f">{api['counts']['done']}</td>" in text
    assert f'href="/admin/reports/quality.md?{query.replace("&", "&amp;")}"' in text
    resp = await client.get(f"/admin/reports/quality.md?{query}", headers=BEARER)
    assert resp.status == 200 and resp.content_type == "text/markdown"
    assert resp.headers["Content-Disposition"] == (
        f'attachment; filename="quality-alpha-{today}-{today}.md"'
    )
    markdown = await resp.text()
    assert markdown.startswith("# HydraIssue quality report (project alpha)")
    assert "- planner: 1 accepted, 0 rejected (100%)" in markdown
    resp = await client.get(f"/admin/reports/quality.csv?{query}", headers=BEARER)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=")
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["title"] for r in rows] == [XSS] and rows[0]["status"] == "done"
    # a bad window is a message, not a report
    text = await page(client, "/admin/reports/quality?since=yesterday", status=400)
    assert "must be a date" in text
    text = await page(client, f"/admin/reports/quality?since={today}&until=2000-01-01", 400)
    assert "is after until" in text


# -- /admin/webhooks -----------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = 200
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        return web.Response(status=self.status, text="ok")

    async def wait(self, count: int) -> list[dict[str, Any]]:
        for _ in range(500):
            if len(self.calls) >= count:
                return self.calls
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.calls)} of {count} calls arrived")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    app = web.Application()
    app.router.add_post("/hook", made.handle)
    made.server = TestServer(app, host="127.0.0.1")
    await made.server.start_server()
    yield made
    await made.server.close()


@pytest.fixture
async def lan(aiohttp_client: ClientFactory, config: Config) -> Client:
    lan_config = dataclasses.replace(config, webhooks_allow_private_targets=True)
    return await aiohttp_client(create_app(lan_config, delivery_policy=FAST))


async def test_webhooks_their_deliveries_and_actions(lan: Client, receiver: Receiver) -> None:
    assert receiver.server is not None
    url = str(receiver.server.make_url("/hook")) + '?x="><script>alert(1)</script>'
    resp = await lan.post(
        "/api/v1/webhooks",
        json={"url": url, "events": ["issue.created"], "description": XSS},
        headers=AUTH,
    )
    assert resp.status == 201, await resp.text()
    await create(lan, title="first")
    first = (await receiver.wait(1))[0]
    await settled(lan)
    for _ in range(100):  # the attempt is logged once the answer is in
        if lan.app[SERVICE].deliveries.journals["wh_1"].attempts:
            break
        await asyncio.sleep(0.02)
    csrf = await logged_in(lan)
    text = await (await lan.get("/admin/webhooks")).text()
    assert "wh_1" in text and ">active</span>" in text
    assert "<script>" not in text and esc(url) in text and esc(XSS) in text
    assert first["delivery_id"] in text and "issue.created" in text and ">200</span>" in text
    redeliver = f"/admin/webhooks/wh_1/deliveries/{first['delivery_id']}/redeliver"
    assert f'action="{redeliver}"' in text
    # without the form's token, nothing happens
    resp = await lan.post(redeliver, data={}, allow_redirects=False)
    assert resp.status == 403
    resp = await lan.post(
        redeliver, data={"csrf": csrf}, headers={"Origin": "https://evil"}, allow_redirects=False
    )
    assert resp.status == 403
    await asyncio.sleep(0.1)
    assert len(receiver.calls) == 1
    resp = await lan.post(redeliver, data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/admin/webhooks?done=")
    again = (await receiver.wait(2))[1]
    assert again["delivery_id"] == first["delivery_id"]
    resp = await lan.post("/admin/webhooks/wh_1/deliveries/whd_9_9/redeliver", data={"csrf": csrf})
    assert resp.status == 404
    # a ping, and its outcome on the page
    resp = await lan.post("/admin/webhooks/wh_1/ping", data={"csrf": csrf})
    assert resp.status == 200 and "Ping to wh_1: HTTP 200" in await resp.text()
    assert (await receiver.wait(3))[2]["event"] == "ping"
    # off, and on again
    assert (await lan.post("/admin/webhooks/wh_1/active", data={"active": "false"})).status == 403
    resp = await lan.post("/admin/webhooks/wh_1/active", data={"csrf": csrf, "active": "false"})
    text = await resp.text()
    assert "wh_1 deactivated." in text and ">inactive</span>" in text and "Activate" in text
    hook = await (await lan.get("/api/v1/webhooks/wh_1", headers=AUTH)).json()
    assert hook["active"] is False
    resp = await lan.post("/admin/webhooks/wh_1/active", data={"csrf": csrf, "active": "maybe"})
    assert resp.status == 400
    resp = await lan.post("/admin/webhooks/wh_1/active", data={"csrf": csrf, "active": "true"})
    assert "wh_1 activated." in await resp.text()
    hook = await (await lan.get("/api/v1/webhooks/wh_1", headers=AUTH)).json()
    assert hook["active"] is True
    assert (await lan.post("/admin/webhooks/wh_7/ping", data={"csrf": csrf})).status == 404


async def test_a_switched_off_webhook_shows_why(
    aiohttp_client: ClientFactory, config: Config, receiver: Receiver
) -> None:
    policy = dataclasses.replace(FAST, disable_after=0.0)
    lan_config = dataclasses.replace(config, webhooks_allow_private_targets=True)
    client = await aiohttp_client(create_app(lan_config, delivery_policy=policy))
    assert receiver.server is not None
    receiver.status = 503
    url = str(receiver.server.make_url("/hook"))
    resp = await client.post(
        "/api/v1/webhooks", json={"url": url, "events": ["issue.created"]}, headers=AUTH
    )
    assert resp.status == 201
    await create(client)
    await receiver.wait(3)
    for _ in range(200):
        if not client.app[SERVICE].webhooks.get("wh_1").active:
            break
        await asyncio.sleep(0.02)
    text = await page(client, "/admin/webhooks")
    assert ">inactive</span>" in text and "Switched off" in text
    assert "every delivery failed" in text and "HTTP 503" in text
    assert ">503</span>" in text and "Redeliver" in text


# -- /admin/nims ---------------------------------------------------------------------------


async def test_each_agents_activity_and_trail(client: Client) -> None:
    first, second = await create(client), await create(client)
    await nim_action(client, first["id"], "scout", "groomed")
    await nim_action(client, second["id"], "scout", "groomed")
    await nim_action(client, second["id"], "scout", "planned")
    await nim_action(client, first["id"], XSS, XSS)
    await nim_action(client, first["id"], "ops/bot", "triaged")
    await patch(client, second["id"], {"priority": "high"}, nim="scout")
    await settled(client)
    text = await page(client, "/admin/nims")
    assert XSS not in text and esc(XSS) in text
    assert 'href="/admin/nims/scout"' in text and 'href="/admin/nims/ops%2Fbot"' in text
    assert f'href="/admin/nims/{quote(XSS, safe="")}"' in text
    assert "scout: 3" in svg_desc(text, "nim-activity")
    assert "groomed 2" in text and "planned 1" in text
    text = await page(client, "/admin/nims/scout")
    assert "3 nim action(s), 1 API write(s), on 2 issue(s)." in text
    assert "4 entries, 1–4 shown, newest first." in text
    rows = text.split("<tbody>")[1]
    assert rows.index("priority: high") < rows.index("planned") < rows.index("groomed")
    assert 'href="/admin/issues/2">HYDRA-2</a>' in text
    text = await page(client, "/admin/nims/scout?action=groomed")
    assert "2 entries" in text and "planned" not in text.split("<tbody>")[1]
    text = await page(client, f"/admin/nims/{quote(XSS, safe='')}")
    assert XSS not in text and "1 entry" in text
    text = await page(client, "/admin/nims/ops%2Fbot")
    assert "triaged" in text and "ops/bot" in text
    text = await page(client, "/admin/nims/nobody", status=404)
    assert "no agent" in text
    await page(client, "/admin/nims/scout?since=soon", status=400)


async def test_a_long_trail_has_pages(client: Client) -> None:
    issue = await create(client)
    for i in range(admin_insight.TRAIL_PAGE + 5):
        await nim_action(client, issue["id"], "busy", f"step {i}")
    await settled(client)
    text = await page(client, "/admin/nims/busy")
    assert "105 entries, 1–100 shown" in text and "step 104" in text and "step 4<" not in text
    assert 'href="/admin/nims/busy?offset=100">Older' in text
    text = await page(client, "/admin/nims/busy?offset=100")
    assert "101–105 shown" in text and "step 4<" in text and "Newer" in text
