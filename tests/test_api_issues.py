"""Every endpoint of the issues API, through the real app on a real data dir."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from hydraissue import __version__
from hydraissue.config import Config
from tests.conftest import API_TOKEN, AUTH, admin_move, guarded_site, make_png
from web.app import create_app
from web.serving import GuardedServer

Client = TestClient[Any, web.Application]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ISSUE_FIELDS = {
    "id",
    "title",
    "description",
    "project",
    "category",
    "priority",
    "status",
    "reporter",
    "custom_fields",
    "plan",
    "comments",
    "nim_actions",
    "attachments",
    "created_at",
    "updated_at",
}


async def create(client: Client, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"title": "Something broke", **fields}
    resp = await client.post("/api/v1/issues", json=body, headers=auth)
    assert resp.status == 201, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


async def get(client: Client, auth: dict[str, str], issue_id: int) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/issues/{issue_id}", headers=auth)
    assert resp.status == 200, await resp.text()
    issue: dict[str, Any] = await resp.json()
    return issue


async def patch(
    client: Client, auth: dict[str, str], issue_id: int, body: dict[str, Any], status: int = 200
) -> dict[str, Any]:
    resp = await client.patch(f"/api/v1/issues/{issue_id}", json=body, headers=auth)
    assert resp.status == status, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


def log_lines(data_dir: Path, issue_id: int) -> list[dict[str, Any]]:
    """The issue's event log as any YAML reader sees it."""
    loaded = yaml.safe_load((data_dir / "events" / f"{issue_id}.yaml").read_text())
    assert isinstance(loaded, list)
    return loaded


def event_log_bytes(data_dir: Path) -> dict[str, bytes]:
    """Event logs with events (empty ones are preallocated for future ids)."""
    found = {p.name: p.read_bytes() for p in sorted((data_dir / "events").glob("*.yaml"))}
    return {name: data for name, data in found.items() if data}


# -- health and runbook ----------------------------------------------------------------


async def test_health_needs_no_auth_and_has_the_documented_shape(
    client: Client, auth: dict[str, str]
) -> None:
    resp = await client.get("/api/v1/health")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"service", "version", "status", "uptime_seconds", "extra"}
    assert body["service"] == "hydraissue"
    assert body["version"] == __version__
    assert body["status"] == "ok"
    assert isinstance(body["uptime_seconds"], int) and body["uptime_seconds"] >= 0
    assert body["extra"]["issues"] == 0
    assert body["extra"]["position"] == 0

    first = await create(client, auth)
    await create(client, auth)
    resp = await client.delete(f"/api/v1/issues/{first['id']}", headers=auth)
    assert resp.status == 204
    body = await (await client.get("/api/v1/health")).json()
    assert body["extra"]["issues"] == 1


async def test_runbook_is_markdown_without_auth(client: Client) -> None:
    resp = await client.get("/api/v1/runbook")
    assert resp.status == 200
    assert resp.content_type == "text/markdown"
    text = await resp.text()
    assert text.startswith("# HydraIssue")
    for needle in (
        "## Troubleshooting",
        "won't start",
        "not showing up",
        "API returns 401",
        "hydraissue replay",
        "hydraissue verify",
    ):
        assert needle in text, needle


# -- create ----------------------------------------------------------------------------


async def test_create_returns_201_with_defaults_location_and_etag(
    client: Client, auth: dict[str, str]
) -> None:
    resp = await client.post("/api/v1/issues", json={"title": "Login fails"}, headers=auth)
    assert resp.status == 201
    assert resp.content_type == "application/json"
    issue = await resp.json()
    assert set(issue) >= ISSUE_FIELDS
    assert issue["id"] == 1
    assert issue["title"] == "Login fails"
    assert issue["description"] == ""
    assert issue["project"] is None
    assert issue["category"] == "unclassified"
    assert issue["priority"] is None
    assert issue["status"] == "open"
    assert issue["reporter"] is None
    assert issue["custom_fields"] == {}
    assert issue["plan"] is None
    assert issue["comments"] == []
    assert issue["nim_actions"] == []
    assert issue["attachments"] == []
    assert TIMESTAMP.match(issue["created_at"])
    assert issue["updated_at"] == issue["created_at"]
    assert resp.headers["Location"] == "/api/v1/issues/1"
    etag = resp.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')

    again = await client.get(resp.headers["Location"], headers=auth)
    assert again.status == 200
    assert await again.json() == issue
    assert again.headers["ETag"] == etag


async def test_create_keeps_every_field(client: Client, auth: dict[str, str]) -> None:
    custom = {"environment": "staging", "severity_score": 8, "nested": {"a": [1, None, True]}}
    issue = await create(
        client,
        auth,
        title="  Crash on save  ",
        description="Steps:\n1. open\n2. save",
        project="nimsforest",
        category="bug",
        priority="high",
        reporter="alice@example.com",
        custom_fields=custom,
    )
    assert issue["title"] == "Crash on save"
    assert issue["description"] == "Steps:\n1. open\n2. save"
    assert issue["project"] == "nimsforest"
    assert issue["category"] == "bug"
    assert issue["priority"] == "high"
    assert issue["reporter"] == "alice@example.com"
    assert issue["custom_fields"] == custom
    assert issue["status"] == "open"
    assert await get(client, auth, issue["id"]) == issue


async def test_concurrent_creates_get_distinct_consecutive_ids(
    client: Client, auth: dict[str, str]
) -> None:
    issues = await asyncio.gather(*(create(client, auth, title=f"t{n}") for n in range(12)))
    assert sorted(i["id"] for i in issues) == list(range(1, 13))
    for issue in issues:
        assert (await get(client, auth, issue["id"]))["title"] == issue["title"]


# -- get, ETag, If-None-Match ----------------------------------------------------------


async def test_get_etag_and_if_none_match(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    resp = await client.get(f"/api/v1/issues/{created['id']}", headers=auth)
    etag = resp.headers["ETag"]

    cached = await client.get(
        f"/api/v1/issues/{created['id']}", headers={**auth, "If-None-Match": etag}
    )
    assert cached.status == 304
    assert cached.headers["ETag"] == etag
    assert await cached.read() == b""

    weak = await client.get(
        f"/api/v1/issues/{created['id']}", headers={**auth, "If-None-Match": f"W/{etag}"}
    )
    assert weak.status == 304

    other = await client.get(
        f"/api/v1/issues/{created['id']}", headers={**auth, "If-None-Match": '"nope"'}
    )
    assert other.status == 200

    await patch(client, auth, created["id"], {"priority": "low"})
    stale = await client.get(
        f"/api/v1/issues/{created['id']}", headers={**auth, "If-None-Match": etag}
    )
    assert stale.status == 200
    assert stale.headers["ETag"] != etag
    assert (await stale.json())["priority"] == "low"


async def test_get_unknown_issue_is_404(client: Client, auth: dict[str, str]) -> None:
    resp = await client.get("/api/v1/issues/999", headers=auth)
    assert resp.status == 404
    body = await resp.json()
    assert set(body) == {"error", "code", "detail"}
    assert body["code"] == 404


# -- PATCH -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "groomed"),
        ("priority", "critical"),
        ("category", "feature"),
        ("plan", "1. do it\n2. ship it"),
        ("custom_fields", {"env": "prod", "score": 3.5}),
        ("title", "A better title"),
        ("description", "More words"),
        ("project", "hydraissue"),
    ],
)
async def test_patch_each_field(
    client: Client, auth: dict[str, str], data_dir: Path, field: str, value: Any
) -> None:
    created = await create(client, auth, custom_fields={"old": 1})
    url = f"/api/v1/issues/{created['id']}"
    old_etag = (await client.get(url, headers=auth)).headers["ETag"]
    await asyncio.sleep(0.002)  # timestamps have millisecond resolution
    resp = await client.patch(url, json={field: value}, headers=auth)
    assert resp.status == 200, await resp.text()
    updated = await resp.json()
    assert updated[field] == value
    assert updated["updated_at"] > created["updated_at"]
    assert updated["created_at"] == created["created_at"]
    assert resp.headers["ETag"] != old_etag
    assert (await client.get(url, headers=auth)).headers["ETag"] == resp.headers["ETag"]
    for other in ISSUE_FIELDS - {field, "updated_at"}:
        assert updated[other] == created[other], other
    assert await get(client, auth, created["id"]) == updated
    events = log_lines(data_dir, created["id"])
    assert [e["type"] for e in events] == ["issue.created", "issue.updated"]
    assert events[-1]["data"]["changes"] == {field: value}


async def test_patch_custom_fields_replaces_the_object(
    client: Client, auth: dict[str, str]
) -> None:
    created = await create(client, auth, custom_fields={"a": 1, "b": 2})
    updated = await patch(client, auth, created["id"], {"custom_fields": {"c": 3}})
    assert updated["custom_fields"] == {"c": 3}


async def test_patch_several_fields_and_unset_priority(
    client: Client, auth: dict[str, str]
) -> None:
    created = await create(client, auth, priority="high", project="p1")
    updated = await patch(
        client, auth, created["id"], {"priority": None, "project": "", "category": "question"}
    )
    assert updated["priority"] is None
    assert updated["project"] is None
    assert updated["category"] == "question"


async def test_patch_that_changes_nothing_appends_nothing(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    created = await create(client, auth, priority="low")
    before = event_log_bytes(data_dir)
    updated = await patch(client, auth, created["id"], {"priority": "low", "status": "open"})
    assert updated == created
    assert event_log_bytes(data_dir) == before


async def test_resolved_is_an_alias_for_done(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    created = await create(client, auth)
    updated = await patch(client, auth, created["id"], {"status": "resolved"})
    assert updated["status"] == "done"
    assert log_lines(data_dir, created["id"])[-1]["data"]["changes"] == {"status": "done"}


async def test_release_tooling_flow(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth, title="Release 1.2 regression")
    await admin_move(client, created["id"], "accepted")
    await patch(client, auth, created["id"], {"status": "implementing"})
    resolved = await patch(client, auth, created["id"], {"status": "resolved"})
    assert resolved["status"] == "done"
    resp = await client.post(
        f"/api/v1/issues/{created['id']}/comments",
        json={"author": "release-bot", "text": "Fixed in 1.2.1"},
        headers=auth,
    )
    assert resp.status == 201
    final = await get(client, auth, created["id"])
    assert final["status"] == "done"
    assert [(c["author"], c["text"]) for c in final["comments"]] == [
        ("release-bot", "Fixed in 1.2.1")
    ]


# -- transitions -----------------------------------------------------------------------


@pytest.mark.parametrize("terminal", ["done", "closed"])
@pytest.mark.parametrize(
    "earlier", ["open", "groomed", "planning", "proposed", "accepted", "rejected", "implementing"]
)
async def test_terminal_states_never_go_back(
    client: Client, auth: dict[str, str], data_dir: Path, terminal: str, earlier: str
) -> None:
    created = await create(client, auth)
    await patch(client, auth, created["id"], {"status": terminal})
    before = event_log_bytes(data_dir)
    body = await patch(client, auth, created["id"], {"status": earlier}, status=409)
    assert set(body) == {"error", "code", "detail"}
    assert body["code"] == 409
    assert body["detail"] == {"current": terminal, "requested": earlier}
    assert terminal in body["error"] and earlier in body["error"]
    assert (await get(client, auth, created["id"]))["status"] == terminal
    assert event_log_bytes(data_dir) == before


async def test_done_and_closed_move_to_each_other(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    issue_id = created["id"]
    assert (await patch(client, auth, issue_id, {"status": "done"}))["status"] == "done"
    assert (await patch(client, auth, issue_id, {"status": "closed"}))["status"] == "closed"
    assert (await patch(client, auth, issue_id, {"status": "resolved"}))["status"] == "done"
    assert (await patch(client, auth, issue_id, {"status": "closed"}))["status"] == "closed"


async def test_non_terminal_states_move_freely(client: Client, auth: dict[str, str]) -> None:
    """Agents move among their statuses; the human's moves are the admin's."""
    created = await create(client, auth)
    for status in ["groomed", "planning", "proposed", "planning", "groomed", "open", "proposed"]:
        assert (await patch(client, auth, created["id"], {"status": status}))["status"] == status
    for status in ["rejected", "groomed", "accepted"]:
        assert (await admin_move(client, created["id"], status))["status"] == status
    for status in ["implementing", "done"]:
        assert (await patch(client, auth, created["id"], {"status": status}))["status"] == status


async def test_conflict_leaves_other_fields_of_the_same_patch_unapplied(
    client: Client, auth: dict[str, str]
) -> None:
    created = await create(client, auth)
    await patch(client, auth, created["id"], {"status": "closed"})
    await patch(client, auth, created["id"], {"status": "open", "priority": "high"}, status=409)
    assert (await get(client, auth, created["id"]))["priority"] is None


# -- If-Match --------------------------------------------------------------------------


async def test_if_match_current_etag_succeeds_stale_is_412(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    created = await create(client, auth)
    url = f"/api/v1/issues/{created['id']}"
    first_etag = (await client.get(url, headers=auth)).headers["ETag"]

    resp = await client.patch(
        url, json={"priority": "low"}, headers={**auth, "If-Match": first_etag}
    )
    assert resp.status == 200
    second_etag = resp.headers["ETag"]
    assert second_etag != first_etag

    before = event_log_bytes(data_dir)
    stale = await client.patch(
        url, json={"priority": "high"}, headers={**auth, "If-Match": first_etag}
    )
    assert stale.status == 412
    body = await stale.json()
    assert set(body) == {"error", "code", "detail"}
    assert body["code"] == 412
    assert event_log_bytes(data_dir) == before
    assert (await get(client, auth, created["id"]))["priority"] == "low"

    plan = await client.put(
        f"{url}/plan", json={"plan": "x"}, headers={**auth, "If-Match": first_etag}
    )
    assert plan.status == 412
    delete = await client.delete(url, headers={**auth, "If-Match": first_etag})
    assert delete.status == 412
    assert (await client.get(url, headers=auth)).status == 200

    star = await client.patch(url, json={"priority": "medium"}, headers={**auth, "If-Match": "*"})
    assert star.status == 200


# -- DELETE ----------------------------------------------------------------------------


async def test_delete_then_404_everywhere_and_absent_from_list(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    keep = await create(client, auth, title="keep me")
    gone = await create(client, auth, title="delete me")
    url = f"/api/v1/issues/{gone['id']}"

    resp = await client.delete(url, headers=auth)
    assert resp.status == 204
    assert await resp.read() == b""

    for method, path, body in (
        ("GET", url, None),
        ("PATCH", url, {"priority": "low"}),
        ("PUT", f"{url}/plan", {"plan": "p"}),
        ("POST", f"{url}/comments", {"author": "a", "text": "t"}),
        ("POST", f"{url}/nim-actions", {"name": "nebula", "action": "groomed"}),
        ("GET", f"{url}/events", None),
        ("DELETE", url, None),
    ):
        resp = await client.request(method, path, json=body, headers=auth)
        assert resp.status == 404, (method, path)
        err = await resp.json()
        assert set(err) == {"error", "code", "detail"}
        assert err["code"] == 404

    listed = await client.get("/api/v1/issues", headers=auth)
    assert [i["id"] for i in await listed.json()] == [keep["id"]]
    assert listed.headers["X-Total-Count"] == "1"

    events = log_lines(data_dir, gone["id"])
    assert [e["type"] for e in events] == ["issue.created", "issue.deleted"]


async def test_ids_are_never_reused_after_delete(client: Client, auth: dict[str, str]) -> None:
    first = await create(client, auth)
    assert (await client.delete(f"/api/v1/issues/{first['id']}", headers=auth)).status == 204
    second = await create(client, auth)
    assert second["id"] == first["id"] + 1
    assert (await client.delete(f"/api/v1/issues/{second['id']}", headers=auth)).status == 204
    third = await create(client, auth)
    assert third["id"] == second["id"] + 1


# -- plan ------------------------------------------------------------------------------


async def test_put_plan_without_status_keeps_status(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    await patch(client, auth, created["id"], {"status": "planning"})
    resp = await client.put(
        f"/api/v1/issues/{created['id']}/plan", json={"plan": "Step 1"}, headers=auth
    )
    assert resp.status == 200
    issue = await resp.json()
    assert issue["plan"] == "Step 1"
    assert issue["status"] == "planning"
    assert resp.headers["ETag"]
    assert await get(client, auth, created["id"]) == issue


async def test_put_plan_with_status(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    resp = await client.put(
        f"/api/v1/issues/{created['id']}/plan",
        json={"plan": "Rewrite the parser", "status": "proposed"},
        headers=auth,
    )
    assert resp.status == 200
    issue = await resp.json()
    assert (issue["plan"], issue["status"]) == ("Rewrite the parser", "proposed")


async def test_put_plan_follows_the_transition_rules(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    await patch(client, auth, created["id"], {"status": "done"})
    resp = await client.put(
        f"/api/v1/issues/{created['id']}/plan",
        json={"plan": "again", "status": "proposed"},
        headers=auth,
    )
    assert resp.status == 409
    assert (await resp.json())["detail"] == {"current": "done", "requested": "proposed"}
    issue = await get(client, auth, created["id"])
    assert issue["plan"] is None
    resp = await client.put(
        f"/api/v1/issues/{created['id']}/plan",
        json={"plan": "wrap-up notes", "status": "resolved"},
        headers=auth,
    )
    assert resp.status == 200
    assert (await resp.json())["status"] == "done"


async def test_put_plan_requires_plan(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    resp = await client.put(
        f"/api/v1/issues/{created['id']}/plan", json={"status": "proposed"}, headers=auth
    )
    assert resp.status == 400
    body = await resp.json()
    assert "plan" in body["error"]


# -- comments --------------------------------------------------------------------------


async def test_comments_with_text_or_body(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    url = f"/api/v1/issues/{created['id']}/comments"
    resp = await client.post(url, json={"author": "bob", "text": "first"}, headers=auth)
    assert resp.status == 201
    first = await resp.json()
    assert set(first) == {"id", "author", "text", "created_at"}
    assert (first["author"], first["text"]) == ("bob", "first")
    assert TIMESTAMP.match(first["created_at"])

    resp = await client.post(url, json={"author": "carol", "body": "second"}, headers=auth)
    assert resp.status == 201
    second = await resp.json()
    assert (second["author"], second["text"]) == ("carol", "second")
    assert second["id"] != first["id"]

    issue = await get(client, auth, created["id"])
    assert issue["comments"] == [first, second]


async def test_comment_needs_text(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    url = f"/api/v1/issues/{created['id']}/comments"
    for body in ({"author": "bob"}, {"author": "bob", "text": ""}, {"text": 5}):
        resp = await client.post(url, json=body, headers=auth)
        assert resp.status == 400, body
        err = await resp.json()
        assert "text" in err["error"]


# -- nim actions -----------------------------------------------------------------------


async def test_nim_actions_are_append_only_and_listed_with_time(
    client: Client, auth: dict[str, str]
) -> None:
    created = await create(client, auth)
    url = f"/api/v1/issues/{created['id']}/nim-actions"
    recorded = []
    for name, action in (("nebula", "groomed"), ("nebula", "groomed"), ("orion", "planned")):
        resp = await client.post(url, json={"name": name, "action": action}, headers=auth)
        assert resp.status == 201
        body = await resp.json()
        assert (body["name"], body["action"]) == (name, action)
        assert TIMESTAMP.match(body["at"])
        recorded.append(body)

    issue = await get(client, auth, created["id"])
    assert issue["nim_actions"] == recorded
    assert [a["at"] for a in recorded] == sorted(a["at"] for a in recorded)

    # There is no way to rewrite them.
    resp = await client.patch(
        f"/api/v1/issues/{created['id']}", json={"nim_actions": []}, headers=auth
    )
    assert resp.status == 400
    assert (await get(client, auth, created["id"]))["nim_actions"] == recorded


async def test_nim_action_needs_name_and_action(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    url = f"/api/v1/issues/{created['id']}/nim-actions"
    for body, field in (({"action": "groomed"}, "name"), ({"name": "nebula"}, "action")):
        resp = await client.post(url, json=body, headers=auth)
        assert resp.status == 400
        assert field in (await resp.json())["error"]


# -- events ----------------------------------------------------------------------------


async def test_events_history_oldest_first_with_actors(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    created = await create(client, auth, reporter="alice")
    other = await create(client, auth, title="other")
    issue_id = created["id"]
    await patch(client, auth, issue_id, {"status": "groomed"})
    await client.post(
        f"/api/v1/issues/{issue_id}/comments", json={"author": "bob", "text": "hi"}, headers=auth
    )
    await client.post(
        f"/api/v1/issues/{issue_id}/nim-actions",
        json={"name": "nebula", "action": "groomed"},
        headers=auth,
    )
    await patch(client, auth, other["id"], {"priority": "low"})
    await client.put(f"/api/v1/issues/{issue_id}/plan", json={"plan": "p"}, headers=auth)

    resp = await client.get(f"/api/v1/issues/{issue_id}/events", headers=auth)
    assert resp.status == 200
    events = await resp.json()
    assert [e["type"] for e in events] == [
        "issue.created",
        "issue.updated",
        "comment.added",
        "nim_action.recorded",
        "issue.updated",
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    positions = [e["pos"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 5
    assert all(e["issue_id"] == issue_id for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert all(TIMESTAMP.match(e["at"]) for e in events)
    assert [e["actor"] for e in events] == [
        {"kind": "api", "name": "alice"},
        {"kind": "api", "name": None},
        {"kind": "api", "name": "bob"},
        {"kind": "api", "name": "nebula"},
        {"kind": "api", "name": None},
    ]
    assert events[0]["data"]["title"] == "Something broke"
    assert events[1]["data"]["changes"] == {"status": "groomed"}
    assert events[1]["data"]["previous"] == {"status": "open"}
    assert events[2]["data"] == {"id": 1, "author": "bob", "text": "hi"}
    assert events[3]["data"] == {"name": "nebula", "action": "groomed"}
    # The API shows exactly what the log on disk holds.
    assert events == log_lines(data_dir, issue_id)


async def test_every_mutation_is_in_the_log_on_disk_before_the_response(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    created = await create(client, auth)
    assert len(log_lines(data_dir, created["id"])) == 1
    await patch(client, auth, created["id"], {"title": "renamed"})
    assert len(log_lines(data_dir, created["id"])) == 2
    await client.post(f"/api/v1/issues/{created['id']}/comments", json={"text": "x"}, headers=auth)
    lines = log_lines(data_dir, created["id"])
    assert lines[-1]["type"] == "comment.added"
    assert lines[-1]["actor"] == {"kind": "api", "name": "anonymous"}


# -- idempotency -----------------------------------------------------------------------


async def test_idempotent_create_returns_first_response_and_appends_nothing(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    headers = {**auth, "Idempotency-Key": "create-1"}
    body = {"title": "Retried", "priority": "low"}
    first = await client.post("/api/v1/issues", json=body, headers=headers)
    assert first.status == 201
    first_body = await first.read()
    before = event_log_bytes(data_dir)
    assert list(before) == ["1.yaml"]

    retry = await client.post("/api/v1/issues", json=body, headers=headers)
    assert retry.status == 201
    assert await retry.read() == first_body
    assert retry.headers["Location"] == first.headers["Location"]
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert event_log_bytes(data_dir) == before

    listed = await client.get("/api/v1/issues", headers=auth)
    assert listed.headers["X-Total-Count"] == "1"
    assert (await create(client, auth))["id"] == 2


async def test_idempotent_replay_carries_the_first_etag(
    client: Client, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "create-etag"}
    first = await client.post("/api/v1/issues", json={"title": "x"}, headers=headers)
    retry = await client.post("/api/v1/issues", json={"title": "x"}, headers=headers)
    assert retry.status == first.status == 201
    assert retry.headers.get("ETag") == first.headers["ETag"]


async def test_idempotent_comment_and_nim_action(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    created = await create(client, auth)
    for suffix, body in (
        ("comments", {"author": "a", "text": "once"}),
        ("nim-actions", {"name": "nebula", "action": "groomed"}),
    ):
        headers = {**auth, "Idempotency-Key": f"key-{suffix}"}
        url = f"/api/v1/issues/{created['id']}/{suffix}"
        first = await client.post(url, json=body, headers=headers)
        assert first.status == 201
        before = event_log_bytes(data_dir)
        retry = await client.post(url, json=body, headers=headers)
        assert retry.status == 201
        assert await retry.json() == await first.json()
        assert event_log_bytes(data_dir) == before
    issue = await get(client, auth, created["id"])
    assert len(issue["comments"]) == 1
    assert len(issue["nim_actions"]) == 1


async def test_idempotency_key_with_a_different_body_is_422(
    client: Client, auth: dict[str, str], data_dir: Path
) -> None:
    headers = {**auth, "Idempotency-Key": "k-422"}
    first = await client.post("/api/v1/issues", json={"title": "one"}, headers=headers)
    assert first.status == 201
    before = event_log_bytes(data_dir)
    other = await client.post("/api/v1/issues", json={"title": "two"}, headers=headers)
    assert other.status == 422
    body = await other.json()
    assert set(body) == {"error", "code", "detail"}
    assert body["code"] == 422
    assert event_log_bytes(data_dir) == before


async def test_failed_request_does_not_burn_the_idempotency_key(
    client: Client, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "k-bad-then-good"}
    bad = await client.post("/api/v1/issues", json={"title": ""}, headers=headers)
    assert bad.status == 400
    good = await client.post("/api/v1/issues", json={"title": ""}, headers=headers)
    assert good.status == 400  # errors are not stored, the retry is re-evaluated
    fixed = await client.post("/api/v1/issues", json={"title": "ok"}, headers=headers)
    assert fixed.status == 201


# -- persistence across restart --------------------------------------------------------


async def test_everything_survives_a_restart(
    aiohttp_client: Any, config: Config, auth: dict[str, str], data_dir: Path
) -> None:
    first: Client = await aiohttp_client(create_app(config))
    a = await create(first, auth, title="persist me", custom_fields={"k": [1, 2]})
    b = await create(first, auth, title="gone soon")
    await patch(first, auth, a["id"], {"status": "groomed", "priority": "medium"})
    await first.post(
        f"/api/v1/issues/{a['id']}/comments", json={"author": "z", "text": "c"}, headers=auth
    )
    await first.post(
        f"/api/v1/issues/{a['id']}/nim-actions",
        json={"name": "nebula", "action": "groomed"},
        headers=auth,
    )
    await first.put(f"/api/v1/issues/{a['id']}/plan", json={"plan": "the plan"}, headers=auth)
    assert (await first.delete(f"/api/v1/issues/{b['id']}", headers=auth)).status == 204
    idem = {**auth, "Idempotency-Key": "survives"}
    made = await first.post("/api/v1/issues", json={"title": "idem"}, headers=idem)
    assert made.status == 201
    made_body = await made.read()
    before = await get(first, auth, a["id"])
    before_events = await (await first.get(f"/api/v1/issues/{a['id']}/events", headers=auth)).json()
    await first.close()

    second: Client = await aiohttp_client(create_app(config))
    assert await get(second, auth, a["id"]) == before
    after_events = await (await second.get(f"/api/v1/issues/{a['id']}/events", headers=auth)).json()
    assert after_events == before_events
    assert (await second.get(f"/api/v1/issues/{b['id']}", headers=auth)).status == 404
    listed = await second.get("/api/v1/issues", headers=auth)
    assert [i["title"] for i in await listed.json()] == ["persist me", "idem"]
    health = await (await second.get("/api/v1/health")).json()
    assert health["extra"]["issues"] == 2

    retry = await second.post("/api/v1/issues", json={"title": "idem"}, headers=idem)
    assert retry.status == 201
    assert await retry.read() == made_body

    # ids continue after the highest ever used, deleted or not
    fresh = await create(second, auth)
    assert fresh["id"] == 4


async def test_ids_not_reused_after_deleting_the_newest_and_restarting(
    aiohttp_client: Any, config: Config, auth: dict[str, str]
) -> None:
    first: Client = await aiohttp_client(create_app(config))
    await create(first, auth)
    newest = await create(first, auth)
    assert (await first.delete(f"/api/v1/issues/{newest['id']}", headers=auth)).status == 204
    await first.close()
    second: Client = await aiohttp_client(create_app(config))
    assert (await create(second, auth))["id"] == newest["id"] + 1


async def test_restart_without_index_rebuilds_from_the_logs(
    aiohttp_client: Any, config: Config, auth: dict[str, str], data_dir: Path
) -> None:
    first: Client = await aiohttp_client(create_app(config))
    a = await create(first, auth, title="from the log")
    await admin_move(first, a["id"], "accepted")
    before = await get(first, auth, a["id"])
    await asyncio.sleep(0.3)  # let the background flusher finish before the files go
    await first.close()
    (data_dir / "issues.yaml").unlink(missing_ok=True)
    (data_dir / "issues" / f"{a['id']}.yaml").unlink(missing_ok=True)
    second: Client = await aiohttp_client(create_app(config))
    assert await get(second, auth, a["id"]) == before
    listed = await second.get("/api/v1/issues?stage=implementable", headers=auth)
    assert [i["id"] for i in await listed.json()] == [a["id"]]


# -- the get-by-id lane (web/lane.py) ---------------------------------------------------


async def test_the_get_lane_answers_as_the_route_does(config: Config) -> None:
    """Every question asked twice of serve's own server: with the token as the lane
    takes it, and with a spelling only the route takes (``bearer``). The answers are the
    same, but for the date; the lane answered the plain issues, and only those."""
    runner, base = await guarded_site(create_app(config))
    try:
        async with aiohttp.ClientSession(base) as session:
            plain = await _post(session, "/api/v1/issues", {"title": "plain"})
            other = await _post(session, "/api/v1/issues", {"title": "other", "priority": "high"})
            with_file = await _post(session, "/api/v1/issues", {"title": "with a file"})
            gone = await _post(session, "/api/v1/issues", {"title": "deleted"})
            form = aiohttp.FormData()
            form.add_field("file", make_png(), filename="shot.png", content_type="image/png")
            async with session.post(
                f"/api/v1/issues/{with_file}/attachments", data=form, headers=AUTH
            ) as resp:
                assert resp.status == 201
            async with session.delete(f"/api/v1/issues/{gone}", headers=AUTH) as resp:
                assert resp.status == 204
            etag = f'"{plain}.1"'
            cases: list[tuple[str, dict[str, str]]] = [
                (f"/api/v1/issues/{plain}", {}),
                (f"/api/v1/issues/{other}", {}),
                (f"/api/v1/issues/{with_file}", {}),
                (f"/api/v1/issues/{gone}", {}),
                ("/api/v1/issues/999", {}),
                (f"/api/v1/issues/0{plain}", {}),
                ("/api/v1/issues/x", {}),
                (f"/api/v1/issues/{plain}?pretty=1", {}),
                (f"/api/v1/issues/{plain}", {"If-None-Match": etag}),
                (f"/api/v1/issues/{plain}/events", {}),
            ]
            server = runner.server
            assert isinstance(server, GuardedServer)
            for path, extra in cases:
                lane = await _answer(session, path, {**AUTH, **extra})
                route = await _answer(
                    session, path, {"Authorization": f"bearer {API_TOKEN}", **extra}
                )
                assert lane == route, path
            assert server.lane_answers == 2  # plain and other; the rest went to the routes
            for token, status in (("", 401), ("Bearer wrong", 401), (f"Bearer  {API_TOKEN} ", 200)):
                answered = await _answer(
                    session, f"/api/v1/issues/{plain}", {"Authorization": token}
                )
                assert answered[0] == status, (token, answered)
            assert server.lane_answers == 2
    finally:
        await runner.cleanup()


async def test_the_list_lane_answers_as_the_route_does(config: Config) -> None:
    """List pages asked twice, as above: the lane answers every good query exactly as
    the route does (a page with files to link included) and leaves the bad ones, whose
    errors the route names, to the route."""
    runner, base = await guarded_site(create_app(config))
    try:
        async with aiohttp.ClientSession(base) as session:
            for title, priority in (("one", "high"), ("two", None), ("three", "low")):
                await _post(session, "/api/v1/issues", {"title": title, "priority": priority})
            form = aiohttp.FormData()
            form.add_field("file", make_png(), filename="shot.png", content_type="image/png")
            async with session.post(
                "/api/v1/issues/1/attachments", data=form, headers=AUTH
            ) as resp:
                assert resp.status == 201
            good = [
                "/api/v1/issues",
                "/api/v1/issues?status=open&limit=2",
                "/api/v1/issues?limit=1&offset=1&sort=-created",
                "/api/v1/issues?priority=high,unset&limit=1",
                "/api/v1/issues?limit=2&status=open&status=closed",
            ]
            bad = ["/api/v1/issues?bogus=1", "/api/v1/issues?limit=x", "/api/v1/issues?sort=up"]
            server = runner.server
            assert isinstance(server, GuardedServer)
            for path in good + bad:
                lane = await _answer(session, path, AUTH)
                route = await _answer(session, path, {"Authorization": f"bearer {API_TOKEN}"})
                assert lane == route, path
                assert lane[0] == (200 if path in good else 400), (path, lane)
            assert server.lane_answers == len(good)
            paged = await _answer(session, "/api/v1/issues?status=open&limit=2", AUTH)
            assert paged[1]["X-Total-Count"] == "3"
            link = '/api/v1/issues?status=open&offset=2&limit=2>; rel="next"'
            assert paged[1]["Link"].endswith(link)  # after the base_url of the config
            for token in ("", "Bearer wrong"):
                answered = await _answer(session, "/api/v1/issues", {"Authorization": token})
                assert answered[0] == 401
            assert server.lane_answers == len(good) + 1
    finally:
        await runner.cleanup()


async def _post(session: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> int:
    async with session.post(path, json=body, headers=AUTH) as resp:
        assert resp.status == 201, await resp.text()
        created: dict[str, Any] = await resp.json()
        return int(created["id"])


async def _answer(
    session: aiohttp.ClientSession, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with session.get(path, headers=headers) as resp:
        kept = {k: v for k, v in resp.headers.items() if k not in ("Date",)}
        return resp.status, kept, await resp.read()
