"""What the team reads about the agent pipeline, on one seeded history whose answers
are worked out by hand below: agents' audit trails (``/api/v1/nims``) and the issue
list's nim filters, aggregate statistics (``/api/v1/stats``) and the quality report
(``/api/v1/reports/quality``) in its three formats.

The app runs with a clock the test sets, so every event has a known time; the history
lies in the past (20 days ago), which the stats' 7- and 30-day windows are read from.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from projections.rebuild import replay
from tests.conftest import AUTH, ClientFactory, admin_move, settled
from web.app import create_app

Client = TestClient[Any, web.Application]


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Clock:
    """Event times the test chooses: ``at`` moves it, and it stays put until moved."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def at(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> str:
        return stamp(self.moment)


NOW = datetime.now(UTC).replace(microsecond=0, second=0)
BASE = NOW - timedelta(days=20, hours=6)  # issue 3 is stuck in planning from BASE + 6 h


def h(hours: float) -> datetime:
    return BASE + timedelta(hours=hours)


WINDOW = {"since": stamp(h(1)), "until": stamp(h(24))}


class History:
    """Writes through the API at chosen times, as an agent (``nim``) or not."""

    def __init__(self, client: Client, clock: Clock) -> None:
        self.client = client
        self.clock = clock

    async def write(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        at: datetime,
        nim: str | None = None,
        expect: int = 200,
    ) -> dict[str, Any]:
        self.clock.at(at)
        headers = {**AUTH, **({"X-Nim-Name": nim} if nim else {})}
        resp = await self.client.request(method, f"/api/v1{path}", json=body, headers=headers)
        assert resp.status == expect, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data

    async def create(self, at: datetime, **fields: Any) -> int:
        issue = await self.write("POST", "/issues", fields, at, expect=201)
        return int(issue["id"])

    async def status(self, issue: int, status: str, at: datetime, nim: str | None = None) -> None:
        """An agent's move through the API; a person's (no ``nim``) through /admin."""
        if nim is None:
            self.clock.at(at)
            await admin_move(self.client, issue, status)
            return
        await self.write("PATCH", f"/issues/{issue}", {"status": status}, at, nim)

    async def action(self, issue: int, name: str, action: str, at: datetime) -> None:
        body = {"name": name, "action": action}
        await self.write("POST", f"/issues/{issue}/nim-actions", body, at, name, expect=201)


async def seed(h_: History) -> None:
    """The history the answers below are worked out from (written in time order: the
    store keeps event times in commit order).

    1 (alpha, bug, high): created at 0 h, before the window; nebula grooms it (2 h),
      plans it, proposes (3 h); a person rejects (5 h); nebula proposes again (6 h), a
      person accepts (8 h); forge implements (9 h) and finishes (13 h).
    2 (alpha): created at 1 h and moved straight to done by hand (4 h); reopening it is
      refused with 409 (4.5 h).
    3 (beta): created at 2 h; nebula records "groomed" twice (3 h, 4 h), grooms it (5 h)
      and moves it to planning (6 h), where it has stayed since: stuck.
    4 (beta): created a day ago, outside the window; nebula grooms it.
    """
    one = await h_.create(h(0), title="Login fails", project="alpha", category="bug")
    await h_.write("PATCH", f"/issues/{one}", {"priority": "high"}, h(0.5))
    two = await h_.create(h(1), title="Typo on the start page", project="alpha")
    await h_.action(one, "nebula", "groomed", h(2))
    await h_.status(one, "groomed", h(2), "nebula")
    three = await h_.create(h(2), title="Crash on start", project="beta")
    await h_.status(one, "planning", h(3), "nebula")
    await h_.write("PUT", f"/issues/{one}/plan", {"plan": "Fix the session check."}, h(3), "nebula")
    await h_.action(one, "nebula", "planned", h(3))
    await h_.status(one, "proposed", h(3), "nebula")
    await h_.action(three, "nebula", "groomed", h(3))
    await h_.status(two, "done", h(4))
    await h_.action(three, "nebula", "groomed", h(4))
    await h_.write("PATCH", f"/issues/{two}", {"status": "open"}, h(4.5), expect=409)
    await h_.status(one, "rejected", h(5))
    await h_.status(three, "groomed", h(5), "nebula")
    await h_.status(one, "proposed", h(6), "nebula")
    await h_.status(three, "planning", h(6), "nebula")
    await h_.status(one, "accepted", h(8))
    await h_.status(one, "implementing", h(9), "forge")
    await h_.action(one, "forge", "implemented", h(12))
    await h_.status(one, "done", h(13), "forge")

    four = await h_.create(NOW - timedelta(days=1), title="Slow search", project="beta")
    await h_.action(four, "nebula", "groomed", NOW - timedelta(hours=23))
    await h_.status(four, "groomed", NOW - timedelta(hours=23), "nebula")
    h_.clock.at(NOW)


@pytest.fixture
async def seeded(aiohttp_client: ClientFactory, config: Config) -> Client:
    clock = Clock(BASE)
    client = await aiohttp_client(create_app(config, clock=clock))
    await seed(History(client, clock))
    await settled(client)
    return client


async def get(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(path, headers=AUTH)
    assert resp.status == status, await resp.text()
    return await resp.json()


# -- audit trails and the nim filters ---------------------------------------------------


async def test_every_agent_with_its_counts_and_last_activity(seeded: Client) -> None:
    assert await get(seeded, "/api/v1/nims") == [
        {
            "name": "forge",
            "actions": 1,
            "writes": 2,  # implementing, done
            "by_action": {"implemented": 1},
            "issues": 1,
            "last_activity": stamp(h(13)),
        },
        {
            "name": "nebula",
            "actions": 5,
            "writes": 8,  # 1: groomed, planning, plan, proposed ×2; 3: two moves; 4: one
            "by_action": {"groomed": 4, "planned": 1},
            "issues": 3,
            "last_activity": stamp(NOW - timedelta(hours=23)),
        },
    ]


async def test_an_agents_actions_newest_first_with_filters(seeded: Client) -> None:
    resp = await seeded.get("/api/v1/nims/nebula/actions?action=groomed", headers=AUTH)
    assert resp.headers["X-Total-Count"] == "4"
    groomed = await resp.json()
    assert [(e["issue_id"], e["at"]) for e in groomed] == [
        (4, stamp(NOW - timedelta(hours=23))),
        (3, stamp(h(4))),
        (3, stamp(h(3))),
        (1, stamp(h(2))),
    ]
    assert groomed[1] == {
        "pos": groomed[1]["pos"],
        "at": stamp(h(4)),
        "issue_id": 3,
        "key": "HYDRA-3",
        "kind": "nim_action",
        "action": "groomed",
    }
    window = await get(
        seeded, f"/api/v1/nims/nebula/actions?since={stamp(h(3))}&until={stamp(h(3))}"
    )
    assert sorted(e["action"] for e in window) == [
        "groomed",
        "plan",
        "planned",
        "status: planning",
        "status: proposed",
    ]
    page = await get(seeded, "/api/v1/nims/nebula/actions?limit=2&offset=1")
    everything = await get(seeded, "/api/v1/nims/nebula/actions")
    assert len(everything) == 13 and page == everything[1:3]
    # A date alone is a whole day for until; nothing of nebula's is on that day.
    empty = (NOW + timedelta(days=2)).date().isoformat()
    assert await get(seeded, f"/api/v1/nims/nebula/actions?since={empty}") == []


async def test_bad_trail_queries_are_named(seeded: Client) -> None:
    unknown = await get(seeded, "/api/v1/nims/nobody/actions", 404)
    assert unknown["code"] == 404 and "nobody" in unknown["error"]
    for query, name in [
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("limit=-1", "limit"),
        ("limit=5000", "limit"),
        ("offset=x", "offset"),
        ("actions=groomed", "actions"),
        (f"since={stamp(h(5))}&until={stamp(h(4))}", "since"),
    ]:
        error = await get(seeded, f"/api/v1/nims/nebula/actions?{query}", 400)
        assert set(error) == {"error", "code", "detail"}
        assert error["error"].startswith(name), (query, error)
    assert (await get(seeded, "/api/v1/nims?x=1", 400))["detail"]["field"] == "x"


async def ids(client: Client, query: str) -> list[int]:
    return sorted(i["id"] for i in await get(client, f"/api/v1/issues?{query}"))


async def test_list_filters_for_agents(seeded: Client) -> None:
    assert await ids(seeded, "nim_action=groomed") == [1, 3, 4]
    assert await ids(seeded, "without_nim_action=groomed") == [2]
    assert await ids(seeded, "nim_action=implemented&nim=forge") == [1]
    assert await ids(seeded, "nim_action=implemented&nim=nebula") == []
    assert await ids(seeded, "nim=forge") == [1]
    assert await ids(seeded, "nim=nebula") == [1, 3, 4]
    # Groomed issues nebula has not planned yet, the way an agent asks for its work:
    query = "status=groomed&nim=nebula&nim_action=groomed&without_nim_action=planned"
    assert await ids(seeded, query) == [4]
    # Combined with the other filters.
    assert await ids(seeded, "project=beta&without_nim_action=planned") == [3, 4]
    assert await ids(seeded, "stage=active&nim_action=groomed") == [3, 4]
    error = await get(seeded, "/api/v1/issues?nim_actions=groomed", 400)
    assert error["detail"]["field"] == "nim_actions" and "nim_action" in error["detail"]["allowed"]


async def test_audit_trails_are_equal_after_replay(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path, seeded: Client
) -> None:
    before = await get(seeded, "/api/v1/nims")
    trails = {
        name["name"]: await get(seeded, f"/api/v1/nims/{name['name']}/actions?limit=1000")
        for name in before
    }
    files = {p.name: p.read_bytes() for p in (data_dir / "audit" / "nims").iterdir()}
    assert sorted(files) == ["forge.yaml", "nebula.yaml"]
    nebula = yaml.safe_load(files["nebula.yaml"])
    assert nebula["name"] == "nebula" and len(nebula["entries"]) == 13
    await seeded.close()

    for path in (data_dir / "audit" / "nims").iterdir():
        path.unlink()  # replay rebuilds them from the logs alone
    await replay(data_dir)
    assert {p.name: p.read_bytes() for p in (data_dir / "audit" / "nims").iterdir()} == files

    again = await aiohttp_client(create_app(config))
    assert await get(again, "/api/v1/nims") == before
    for name, trail in trails.items():
        assert await get(again, f"/api/v1/nims/{name}/actions?limit=1000") == trail


@pytest.mark.parametrize(
    "tail",
    [
        # A crash mid-append: the last entry's line cut short, the one before it a hand edit.
        pytest.param(b'- {"pos":1,"what":"not an entry"}\n- {"pos":99999,"at":"20', id="torn"),
        # Entries edited by hand into other types: a string position, an id beyond 64 bits.
        pytest.param(
            b'- {"pos":"99999","at":"2026-01-01T00:00:00Z","issue_id":1,"kind":"k","action":"a"}\n'
            b'- {"pos":99999,"at":"2026-01-01T00:00:00Z","issue_id":1180591620717411303424,'
            b'"kind":"k","action":"a"}\n',
            id="retyped",
        ),
    ],
)
async def test_a_trail_loads_its_whole_entries_and_skips_what_is_not_one(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path, seeded: Client, tail: bytes
) -> None:
    before = await get(seeded, "/api/v1/nims/nebula/actions?limit=1000")
    await seeded.close()
    path = data_dir / "audit" / "nims" / "nebula.yaml"
    path.write_bytes(path.read_bytes() + tail)
    again = await aiohttp_client(create_app(config))
    assert await get(again, "/api/v1/nims/nebula/actions?limit=1000") == before


async def test_trails_that_cannot_be_read_are_a_503_and_everything_else_serves(
    aiohttp_client: ClientFactory, config: Config, data_dir: Path, seeded: Client
) -> None:
    """They load in the background after start-up: what shows them says why it cannot."""
    await seeded.close()
    (data_dir / "audit" / "nims" / "zz.yaml").mkdir()  # read_bytes: IsADirectoryError
    again = await aiohttp_client(create_app(config))
    error = await get(again, "/api/v1/nims", 503)
    assert "audit trails could not be read" in error["error"]
    assert "hydraissue replay" in error["error"]
    assert (await get(again, "/api/v1/nims/nebula/actions", 503))["code"] == 503
    assert (await get(again, "/api/v1/issues/1"))["id"] == 1
    assert (await get(again, "/api/v1/stats"))["total"] == 4


# -- stats ----------------------------------------------------------------------------


async def test_stats_on_the_seeded_history(seeded: Client) -> None:
    stats = await get(seeded, "/api/v1/stats")
    ages = stats.pop("open_age_days")
    assert stats == {
        "total": 4,
        "active": 2,
        "by_status": {
            "open": 0,
            "groomed": 1,
            "planning": 1,
            "proposed": 0,
            "accepted": 0,
            "rejected": 0,
            "implementing": 0,
            "done": 2,
            "closed": 0,
        },
        "by_category": {
            "bug": 1,
            "feature": 0,
            "improvement": 0,
            "question": 0,
            "unclassified": 3,
        },
        "by_priority": {"critical": 0, "high": 1, "medium": 0, "low": 0, "unset": 3},
        "by_project": {"alpha": 2, "beta": 2},
        "created_last_7_days": 1,
        "done_last_7_days": 0,
        "created_last_30_days": 4,
        "done_last_30_days": 2,
        "plans": {"proposed": 0, "accepted": 0, "rejected": 0},
    }
    # The active ones were created 20 days 4 h and 1 day ago.
    oldest = (timedelta(days=20, hours=4) / timedelta(days=1)).__round__(2)
    assert ages["count"] == 2
    assert ages["p90"] == pytest.approx(oldest, abs=0.01)
    assert ages["median"] == pytest.approx((oldest + 1.0) / 2, abs=0.01)


async def test_stats_scoped_to_a_project_and_kept_current(seeded: Client) -> None:
    beta = await get(seeded, "/api/v1/stats?project=beta")
    assert beta["project"] == "beta" and "by_project" not in beta
    assert (beta["total"], beta["active"], beta["created_last_7_days"]) == (2, 2, 1)
    assert beta["by_status"]["planning"] == 1 and beta["by_status"]["groomed"] == 1
    await seeded.patch("/api/v1/issues/3", json={"status": "proposed"}, headers=AUTH)
    beta = await get(seeded, "/api/v1/stats?project=beta")
    assert beta["plans"]["proposed"] == 1 and beta["by_status"]["planning"] == 0
    await seeded.delete("/api/v1/issues/4", headers=AUTH)
    assert (await get(seeded, "/api/v1/stats?project=beta"))["total"] == 1
    assert (await get(seeded, "/api/v1/stats"))["by_project"] == {"alpha": 2, "beta": 1}
    nobody = await get(seeded, "/api/v1/stats?project=gamma")
    assert nobody["total"] == 0 and nobody["open_age_days"]["median"] is None
    error = await get(seeded, "/api/v1/stats?projects=beta", 400)
    assert error["detail"] == {"field": "projects", "allowed": ["project"]}


async def test_stats_and_nim_filters_are_the_same_after_a_restart(
    aiohttp_client: ClientFactory, config: Config, seeded: Client
) -> None:
    """Kept up to date write by write, then built in bulk from the index at start-up:
    both ways give the same answers."""
    paths = [
        "/api/v1/stats",
        "/api/v1/stats?project=alpha",
        "/api/v1/stats?project=beta",
        "/api/v1/issues?nim_action=groomed",
        "/api/v1/issues?nim=nebula",
        "/api/v1/issues?nim=nebula&without_nim_action=planned",
        "/api/v1/issues?without_nim_action=groomed",
    ]
    before = [await get(seeded, path) for path in paths]
    await seeded.close()
    again = await aiohttp_client(create_app(config))
    assert [await get(again, path) for path in paths] == before


# -- the quality report ---------------------------------------------------------------


EXPECTED_COUNTS = {
    "created": 2,  # 2 and 3; 1 was created before the window, 4 after it
    "groomed": 2,
    "proposed": 2,  # 1, twice: a rejected plan and the accepted one are both decisions
    "accepted": 1,
    "rejected": 1,
    "implementing": 1,
    "done": 2,
    "closed": 0,
}


def ref(issue: int, title: str) -> dict[str, Any]:
    return {"id": issue, "key": f"HYDRA-{issue}", "title": title}


async def test_the_quality_report_as_json(seeded: Client) -> None:
    query = f"since={WINDOW['since']}&until={WINDOW['until']}"
    report = await get(seeded, f"/api/v1/reports/quality?{query}")
    assert report["since"] == WINDOW["since"] and report["until"] == WINDOW["until"]
    assert report["counts"] == EXPECTED_COUNTS
    assert report["plan_acceptance"] == {
        "accepted": 1,
        "rejected": 1,
        "rate": 0.5,
        "by_agent": {"nebula": {"accepted": 1, "rejected": 1, "rate": 0.5}},
    }
    assert report["stage_times"] == {
        "open_to_groomed": {"count": 2, "median_hours": 2.5, "p90_hours": 3.0},  # 2 h, 3 h
        "proposed_to_decision": {"count": 2, "median_hours": 2.0, "p90_hours": 2.0},
        "accepted_to_done": {"count": 1, "median_hours": 5.0, "p90_hours": 5.0},
    }
    assert report["stuck"] == [
        {**ref(3, "Crash on start"), "status": "planning", "since": stamp(h(6)), "days": 20.0}
    ]
    assert report["done_without_plan"] == [ref(2, "Typo on the start page")]
    assert report["done_without_nim_action"] == [ref(2, "Typo on the start page")]
    assert report["moved_by_hand_past_agent_stage"] == [
        {
            **ref(2, "Typo on the start page"),
            "from": "open",
            "to": "done",
            "skipped": ["groomed", "planning", "proposed", "implementing"],
            "actor": "admin",  # a person, from /admin
            "at": stamp(h(4)),
        }
    ]
    assert report["duplicate_nim_actions"] == [
        {**ref(3, "Crash on start"), "nim": "nebula", "action": "groomed", "times": 2}
    ]
    [refused] = report["refused_moves"]
    assert (refused["issue_id"], refused["current"], refused["requested"]) == (2, "done", "open")
    assert refused["at"] == stamp(h(4.5))


async def test_the_quality_report_scoped_and_windowed(seeded: Client) -> None:
    query = f"since={WINDOW['since']}&until={WINDOW['until']}"
    beta = await get(seeded, f"/api/v1/reports/quality?{query}&project=beta")
    assert beta["project"] == "beta"
    assert beta["counts"]["created"] == 1 and beta["counts"]["done"] == 0
    assert beta["plan_acceptance"]["rate"] is None
    assert [i["id"] for i in beta["stuck"]] == [3]
    # By dates: the day of the history holds everything from 0 h on; the default is
    # the last 7 days, which holds only issue 4.
    day = await get(seeded, f"/api/v1/reports/quality?since={BASE.date()}&until={h(24).date()}")
    assert day["counts"]["created"] >= 3
    recent = await get(seeded, "/api/v1/reports/quality")
    assert recent["counts"]["created"] == 1 and recent["counts"]["groomed"] == 1


async def test_the_quality_report_as_markdown(seeded: Client) -> None:
    query = f"since={WINDOW['since']}&until={WINDOW['until']}&format=markdown"
    resp = await seeded.get(f"/api/v1/reports/quality?{query}", headers=AUTH)
    assert resp.status == 200 and resp.content_type == "text/markdown"
    text = await resp.text()
    assert text.startswith("# HydraIssue quality report\n")
    for line in [
        "| created | 2 |",
        "| done | 2 |",
        "Accepted 1, rejected 1: acceptance rate 50%.",
        "- nebula: 1 accepted, 1 rejected (50%)",
        "| open to groomed | 2 | 2.5 h | 3 h |",
        "## Stuck (1)",
        "- HYDRA-3: Crash on start — planning for 20 days",
        "## Done without a plan (1)",
        "- HYDRA-2: Typo on the start page",
        "- HYDRA-2: Typo on the start page — open → done "
        "(skipped groomed, planning, proposed, implementing)",
        "- HYDRA-3: Crash on start — nebula groomed ×2",
        f"- HYDRA-2: done → open at {stamp(h(4.5))}",
    ]:
        assert line in text.splitlines(), line


async def test_the_quality_report_as_csv(seeded: Client) -> None:
    query = f"since={WINDOW['since']}&until={WINDOW['until']}&format=csv"
    resp = await seeded.get(f"/api/v1/reports/quality?{query}", headers=AUTH)
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["key"] for r in rows] == ["HYDRA-1", "HYDRA-2", "HYDRA-3"]
    one = rows[0]
    assert one["created_at"] == stamp(h(0)) and one["groomed_at"] == stamp(h(2))
    assert one["proposed_at"] == stamp(h(3)) and one["accepted_at"] == stamp(h(8))
    assert one["done_at"] == stamp(h(13)) and one["closed_at"] == ""
    assert one["nim_actions"] == "3" and one["status"] == "done"
    assert rows[2]["status"] == "planning" and rows[2]["done_at"] == ""


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("since=last-week", "since"),
        ("until=2026-02-30", "until"),
        ("since=2026-03-01T10:00:00", "since"),  # no zone
        ("since=2026-03-02&until=2026-03-01", "since"),
        ("format=pdf", "format"),
        ("window=7", "window"),
    ],
)
async def test_bad_quality_report_parameters_are_named(
    client: Client, query: str, name: str
) -> None:
    error = await get(client, f"/api/v1/reports/quality?{query}", 400)
    assert set(error) == {"error", "code", "detail"} and error["error"].startswith(name), error


def test_a_trails_summary_counts_are_kept_as_it_grows_and_match_a_recount() -> None:
    """The summary is kept as entries are appended (not recounted per request): it
    must say what counting every entry says, for repeated issues, ids far past the
    bitmap's range and entries that are not nim actions."""
    from collections import Counter

    from projections.nims import Trail, TrailEntry

    ids = [1, 7, 8, 1, 0, 4096, 2**40, 2**40, 9, 1 << 24, (1 << 24) - 1, 7]
    entries = [
        TrailEntry(pos, "2026-03-04T12:00:00Z", issue_id, kind, action)
        for pos, (issue_id, kind, action) in enumerate(
            zip(
                ids,
                ["nim_action", "issue.updated", "nim_action"] * 4,
                ["groomed", "status: planning", "planned"] * 4,
                strict=True,
            ),
            start=1,
        )
    ]
    trail = Trail()
    for count, entry in enumerate(entries, start=1):
        trail.append(entry)
        shown = entries[:count]
        actions = Counter(e.action for e in shown if e.kind == "nim_action")
        writes = sum(1 for e in shown if e.kind != "nim_action")
        assert trail.counts() == (actions, writes, len({e.issue_id for e in shown}))
    assert Trail(entries).counts() == trail.counts()
    trail.counts()[0]["groomed"] += 100  # a caller's copy, not the kept tally
    assert trail.counts()[0]["groomed"] == 4
