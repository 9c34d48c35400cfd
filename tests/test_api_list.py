"""GET /api/v1/issues: filters, search, sorting, paging and their errors."""

from __future__ import annotations

import asyncio
import re
from array import array
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from projections.readmodel import _narrowed, insert_sorted, remove_sorted
from tests.conftest import admin_move, make_png

Client = TestClient[Any, web.Application]

STATUSES = [
    "open",
    "groomed",
    "planning",
    "proposed",
    "accepted",
    "rejected",
    "implementing",
    "done",
    "closed",
]
CATEGORIES = ["bug", "feature", "improvement", "question", "unclassified"]
LINK_NEXT = re.compile(r'^<([^>]+)>; rel="next"$')


async def create(client: Client, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/issues", json={"title": "t", **fields}, headers=auth)
    assert resp.status == 201, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


async def set_status(client: Client, auth: dict[str, str], issue_id: int, status: str) -> None:
    """Any status, as the admin may set it (the human gate has its own tests)."""
    await admin_move(client, issue_id, status)


async def ids(client: Client, auth: dict[str, str], query: str) -> list[int]:
    resp = await client.get(f"/api/v1/issues?{query}", headers=auth)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert isinstance(body, list)
    assert resp.headers["X-Total-Count"] == str(len(body)) or "limit" in query
    return [issue["id"] for issue in body]


async def bad_query(client: Client, auth: dict[str, str], query: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/issues?{query}", headers=auth)
    assert resp.status == 400, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error", "code", "detail"}
    assert body["code"] == 400
    return body


@pytest.fixture
async def one_per_status(client: Client, auth: dict[str, str]) -> dict[str, int]:
    """One issue in every status; ids 1..9 in the order of STATUSES."""
    made: dict[str, int] = {}
    for status in STATUSES:
        issue = await create(client, auth, title=f"in {status}")
        if status != "open":
            await set_status(client, auth, issue["id"], status)
        made[status] = issue["id"]
    return made


async def test_empty_list(client: Client, auth: dict[str, str]) -> None:
    resp = await client.get("/api/v1/issues", headers=auth)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == []
    assert resp.headers["X-Total-Count"] == "0"
    assert "Link" not in resp.headers


async def test_list_returns_full_issues_in_creation_order(
    client: Client, auth: dict[str, str]
) -> None:
    a = await create(client, auth, title="first", custom_fields={"x": 1})
    b = await create(client, auth, title="second")
    resp = await client.get("/api/v1/issues", headers=auth)
    assert await resp.json() == [a, b]
    assert resp.headers["X-Total-Count"] == "2"


# -- status, stage, active_only ------------------------------------------------------


async def test_status_filter_single_and_comma_separated(
    client: Client, auth: dict[str, str], one_per_status: dict[str, int]
) -> None:
    for status, issue_id in one_per_status.items():
        assert await ids(client, auth, f"status={status}") == [issue_id]
    wanted = ["open", "groomed", "planning"]
    assert await ids(client, auth, "status=open,groomed,planning") == [
        one_per_status[s] for s in wanted
    ]
    assert await ids(client, auth, "status=open,%20closed") == [
        one_per_status["open"],
        one_per_status["closed"],
    ]
    assert await ids(client, auth, "status=resolved") == [one_per_status["done"]]


@pytest.mark.parametrize(
    ("stage", "statuses"),
    [
        ("groomable", ["open"]),
        ("plannable", ["groomed"]),
        ("implementable", ["accepted"]),
        ("active", [s for s in STATUSES if s not in ("done", "closed")]),
    ],
)
async def test_stage_resolves_to_statuses(
    client: Client,
    auth: dict[str, str],
    one_per_status: dict[str, int],
    stage: str,
    statuses: list[str],
) -> None:
    assert await ids(client, auth, f"stage={stage}") == [one_per_status[s] for s in statuses]


async def test_stage_and_status_combine(
    client: Client, auth: dict[str, str], one_per_status: dict[str, int]
) -> None:
    assert await ids(client, auth, "stage=active&status=open,done") == [one_per_status["open"]]
    assert await ids(client, auth, "stage=groomable,plannable") == [
        one_per_status["open"],
        one_per_status["groomed"],
    ]


async def test_active_only(
    client: Client, auth: dict[str, str], one_per_status: dict[str, int]
) -> None:
    active = [one_per_status[s] for s in STATUSES if s not in ("done", "closed")]
    assert await ids(client, auth, "active_only=true") == active
    assert await ids(client, auth, "active_only=false") == list(one_per_status.values())
    assert await ids(client, auth, "active_only=true&status=done") == []
    assert await ids(client, auth, "active_only=true&status=accepted") == [
        one_per_status["accepted"]
    ]


async def test_list_follows_status_changes(client: Client, auth: dict[str, str]) -> None:
    issue = await create(client, auth)
    assert await ids(client, auth, "stage=groomable") == [issue["id"]]
    await set_status(client, auth, issue["id"], "groomed")
    assert await ids(client, auth, "stage=groomable") == []
    assert await ids(client, auth, "stage=plannable") == [issue["id"]]
    await set_status(client, auth, issue["id"], "closed")
    assert await ids(client, auth, "active_only=true") == []


# -- category, priority, project --------------------------------------------------------


async def test_category_filter(client: Client, auth: dict[str, str]) -> None:
    bug = await create(client, auth, category="bug")
    feature = await create(client, auth, category="feature")
    plain = await create(client, auth)
    assert await ids(client, auth, "category=bug") == [bug["id"]]
    assert await ids(client, auth, "category=bug,feature") == [bug["id"], feature["id"]]
    assert await ids(client, auth, "category=unclassified") == [plain["id"]]
    assert await ids(client, auth, "category=question") == []
    await client.patch(f"/api/v1/issues/{plain['id']}", json={"category": "bug"}, headers=auth)
    assert await ids(client, auth, "category=bug") == [bug["id"], plain["id"]]


async def test_priority_filter_including_unset(client: Client, auth: dict[str, str]) -> None:
    high = await create(client, auth, priority="high")
    low = await create(client, auth, priority="low")
    unset = await create(client, auth)
    assert await ids(client, auth, "priority=high") == [high["id"]]
    assert await ids(client, auth, "priority=unset") == [unset["id"]]
    assert await ids(client, auth, "priority=low,unset") == [low["id"], unset["id"]]
    assert await ids(client, auth, "priority=critical") == []
    await client.patch(f"/api/v1/issues/{high['id']}", json={"priority": None}, headers=auth)
    assert await ids(client, auth, "priority=unset") == [high["id"], unset["id"]]


async def test_project_filter(client: Client, auth: dict[str, str]) -> None:
    a = await create(client, auth, project="nimsforest")
    b = await create(client, auth, project="hydraissue")
    await create(client, auth)
    assert await ids(client, auth, "project=nimsforest") == [a["id"]]
    assert await ids(client, auth, "project=hydraissue") == [b["id"]]
    assert await ids(client, auth, "project=nope") == []


async def test_filters_combine(client: Client, auth: dict[str, str]) -> None:
    match = await create(client, auth, project="p", category="bug", priority="high")
    await create(client, auth, project="p", category="bug", priority="low")
    await create(client, auth, project="q", category="bug", priority="high")
    await create(client, auth, project="p", category="feature", priority="high")
    closed = await create(client, auth, project="p", category="bug", priority="high")
    await set_status(client, auth, closed["id"], "closed")
    query = "project=p&category=bug&priority=high&active_only=true"
    assert await ids(client, auth, query) == [match["id"]]


# -- search -----------------------------------------------------------------------------


async def test_q_searches_title_or_description_case_insensitively(
    client: Client, auth: dict[str, str]
) -> None:
    in_title = await create(client, auth, title="Login PAGE crash", description="")
    in_desc = await create(client, auth, title="Crash", description="on the login page")
    await create(client, auth, title="Unrelated", description="nothing to see")
    assert await ids(client, auth, "q=login") == [in_title["id"], in_desc["id"]]
    assert await ids(client, auth, "q=LOGIN") == [in_title["id"], in_desc["id"]]
    assert await ids(client, auth, "q=crash") == [in_title["id"], in_desc["id"]]
    assert await ids(client, auth, "q=unrelated") == [3]
    assert await ids(client, auth, "q=zebra") == []
    # several words: every word must be in the title or the description
    assert await ids(client, auth, "q=crash%20login") == [in_title["id"], in_desc["id"]]
    assert await ids(client, auth, "q=crash%20nothing") == []


async def test_q_sees_edits_and_combines_with_filters(client: Client, auth: dict[str, str]) -> None:
    issue = await create(client, auth, title="old words", category="bug")
    assert await ids(client, auth, "q=old") == [issue["id"]]
    await client.patch(f"/api/v1/issues/{issue['id']}", json={"title": "new text"}, headers=auth)
    assert await ids(client, auth, "q=old") == []
    assert await ids(client, auth, "q=new") == [issue["id"]]
    assert await ids(client, auth, "q=new&category=feature") == []
    assert await ids(client, auth, "q=new&category=bug") == [issue["id"]]


# -- sorting ----------------------------------------------------------------------------


async def test_sort_orders(client: Client, auth: dict[str, str]) -> None:
    made = []
    for priority in ("low", None, "critical", "medium", "high"):
        made.append((await create(client, auth, priority=priority))["id"])
        await asyncio.sleep(0.002)  # timestamps have millisecond resolution
    # Touch the first issue: it becomes the most recently updated.
    resp = await client.patch(f"/api/v1/issues/{made[0]}", json={"title": "x"}, headers=auth)
    assert resp.status == 200

    assert await ids(client, auth, "sort=created") == made
    assert await ids(client, auth, "") == made
    assert await ids(client, auth, "sort=-created") == made[::-1]
    assert await ids(client, auth, "sort=updated") == [*made[1:], made[0]]
    assert await ids(client, auth, "sort=-updated") == [made[0], *made[:0:-1]]
    # critical, high, medium, low, then unset
    assert await ids(client, auth, "sort=priority") == [made[2], made[4], made[3], made[0], made[1]]


async def test_sort_priority_ties_keep_creation_order(client: Client, auth: dict[str, str]) -> None:
    a = await create(client, auth, priority="high")
    b = await create(client, auth)
    c = await create(client, auth, priority="high")
    assert await ids(client, auth, "sort=priority") == [a["id"], c["id"], b["id"]]


# -- paging -----------------------------------------------------------------------------


async def test_limit_offset_total_and_link(client: Client, auth: dict[str, str]) -> None:
    made = [(await create(client, auth, title=f"n{n}"))["id"] for n in range(5)]

    resp = await client.get("/api/v1/issues?limit=2", headers=auth)
    assert resp.status == 200
    assert [i["id"] for i in await resp.json()] == made[:2]
    assert resp.headers["X-Total-Count"] == "5"
    seen = [i["id"] for i in await resp.json()]
    pages = 1
    while "Link" in resp.headers:
        match = LINK_NEXT.match(resp.headers["Link"])
        assert match, resp.headers["Link"]
        url = match.group(1)
        assert url.startswith("http://testserver/api/v1/issues?")
        resp = await client.get(url.removeprefix("http://testserver"), headers=auth)
        assert resp.status == 200
        assert resp.headers["X-Total-Count"] == "5"
        seen += [i["id"] for i in await resp.json()]
        pages += 1
        assert pages <= 3
    assert seen == made
    assert pages == 3

    resp = await client.get("/api/v1/issues?limit=2&offset=3", headers=auth)
    assert [i["id"] for i in await resp.json()] == made[3:5]
    assert "Link" not in resp.headers

    resp = await client.get("/api/v1/issues?limit=5", headers=auth)
    assert len(await resp.json()) == 5
    assert "Link" not in resp.headers

    resp = await client.get("/api/v1/issues?offset=10", headers=auth)
    assert await resp.json() == []
    assert resp.headers["X-Total-Count"] == "5"
    assert "Link" not in resp.headers


async def test_link_keeps_the_filters(client: Client, auth: dict[str, str]) -> None:
    for n in range(4):
        await create(client, auth, category="bug" if n % 2 == 0 else "feature")
    resp = await client.get("/api/v1/issues?category=bug&sort=-created&limit=1", headers=auth)
    assert [i["id"] for i in await resp.json()] == [3]
    assert resp.headers["X-Total-Count"] == "2"
    match = LINK_NEXT.match(resp.headers["Link"])
    assert match
    nxt = await client.get(match.group(1).removeprefix("http://testserver"), headers=auth)
    assert [i["id"] for i in await nxt.json()] == [1]
    assert "Link" not in nxt.headers


async def test_link_replaces_paging_given_in_any_spelling(
    client: Client, auth: dict[str, str]
) -> None:
    for _ in range(4):
        await create(client, auth, category="bug")
    url = "/api/v1/issues?%6Cimit=1&category=bug&offset=1&q=&sort=created"
    resp = await client.get(url, headers=auth)
    match = LINK_NEXT.match(resp.headers["Link"])
    assert match
    assert match.group(1) == (
        "http://testserver/api/v1/issues?category=bug&q=&sort=created&offset=2&limit=1"
    )


async def test_a_page_shows_files_and_skips_deleted_issues(
    client: Client, auth: dict[str, str]
) -> None:
    """The page of plain issues is one join of kept JSON; one with a file or a deleted
    issue among them is built issue by issue: both pages read the same."""
    ids = [(await create(client, auth, title=f"n{n}"))["id"] for n in range(4)]
    plain = await (await client.get("/api/v1/issues?limit=10", headers=auth)).json()
    assert [i["id"] for i in plain] == ids
    form = aiohttp.FormData()
    form.add_field("file", make_png(), filename="shot.png", content_type="image/png")
    resp = await client.post(f"/api/v1/issues/{ids[1]}/attachments", data=form, headers=auth)
    assert resp.status == 201, await resp.text()
    assert (await client.delete(f"/api/v1/issues/{ids[2]}", headers=auth)).status == 204
    page = await (await client.get("/api/v1/issues?limit=10", headers=auth)).json()
    assert [i["id"] for i in page] == [ids[0], ids[1], ids[3]]
    one = await (await client.get(f"/api/v1/issues/{ids[1]}", headers=auth)).json()
    assert page[1] == one
    assert [a["name"] for a in page[1]["attachments"]] == ["shot.png"]
    assert page[1]["attachments"][0]["url"].startswith("http")
    assert page[0] == plain[0] and page[2] == plain[3]


async def test_default_limit_is_100(client: Client, auth: dict[str, str]) -> None:
    for n in range(101):
        await create(client, auth, title=f"n{n}")
    resp = await client.get("/api/v1/issues", headers=auth)
    assert len(await resp.json()) == 100
    assert resp.headers["X-Total-Count"] == "101"
    assert 'rel="next"' in resp.headers["Link"]
    assert "offset=100" in resp.headers["Link"]
    resp = await client.get("/api/v1/issues?limit=1000", headers=auth)
    assert len(await resp.json()) == 101
    assert "Link" not in resp.headers


async def test_total_count_follows_filters_and_deletes(
    client: Client, auth: dict[str, str]
) -> None:
    a = await create(client, auth, category="bug")
    await create(client, auth, category="bug")
    await create(client, auth)
    resp = await client.get("/api/v1/issues?category=bug&limit=1", headers=auth)
    assert resp.headers["X-Total-Count"] == "2"
    assert (await client.delete(f"/api/v1/issues/{a['id']}", headers=auth)).status == 204
    resp = await client.get("/api/v1/issues?category=bug&limit=1", headers=auth)
    assert resp.headers["X-Total-Count"] == "1"
    assert "Link" not in resp.headers
    assert a["id"] not in await ids(client, auth, "")
    assert a["id"] not in await ids(client, auth, "sort=priority")
    assert a["id"] not in await ids(client, auth, "q=t")


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "allowed"),
    [
        ("status=bogus", "status", STATUSES),
        ("status=open,bogus", "status", STATUSES),
        ("stage=bogus", "stage", ["groomable", "plannable", "implementable", "active"]),
        ("category=bogus", "category", CATEGORIES),
        ("priority=bogus", "priority", ["low", "medium", "high", "critical", "unset"]),
        ("sort=bogus", "sort", ["created", "-created", "updated", "-updated", "priority"]),
        ("sort=title", "sort", ["created", "-created", "updated", "-updated", "priority"]),
    ],
)
async def test_unknown_filter_value_is_400_naming_allowed_values(
    client: Client, auth: dict[str, str], query: str, field: str, allowed: list[str]
) -> None:
    body = await bad_query(client, auth, query)
    assert body["error"].startswith(f"{field}:")
    assert "bogus" in body["error"] or "title" in body["error"]
    assert body["detail"]["field"] == field
    assert body["detail"]["allowed"] == allowed
    for value in allowed:
        assert value in body["error"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("active_only=perhaps", "active_only"),
    ],
)
async def test_bad_paging_values_are_400(
    client: Client, auth: dict[str, str], query: str, field: str
) -> None:
    body = await bad_query(client, auth, query)
    assert body["error"].startswith(f"{field}:")


async def test_limit_bounds_are_inclusive(client: Client, auth: dict[str, str]) -> None:
    await create(client, auth)
    assert await ids(client, auth, "limit=1") == [1]
    assert await ids(client, auth, "limit=1000") == [1]


# -- the read model's id columns ------------------------------------------------------


@given(
    st.sets(st.integers(1, 3000), max_size=60),
    st.sets(st.integers(1, 3000), max_size=2500),
    st.booleans(),
)
def test_an_id_column_narrows_a_candidate_set_as_a_set_would(
    ids: set[int], column: set[int], keep: bool
) -> None:
    """Few candidates beside a long column are looked up one by one, many are matched in
    one pass: either way the answer is the set operation's."""
    array_column = array("q")
    for issue_id in sorted(column, reverse=True):  # out of order: inserts mid-column
        insert_sorted(array_column, issue_id)
        insert_sorted(array_column, issue_id)  # twice: still once
    assert list(array_column) == sorted(column)
    expected = ids & column if keep else ids - column
    assert _narrowed(set(ids), array_column, keep=keep) == expected
    for issue_id in ids:
        remove_sorted(array_column, issue_id)
    assert list(array_column) == sorted(column - ids)
