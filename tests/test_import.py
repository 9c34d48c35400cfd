"""Migration from the original HydraIssue: the guard and ``hydraissue import``.

The original data dir is built here as the Go service left it (runbook of the seed):
``issues/{id}.yaml`` per issue, an ``issues.yaml`` index, files in ``uploads/{id}/``,
no ``events/``; with issues in several shapes, a broken file and a hand-edited one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from hydraissue.config import Config
from hydraissue.migrate import (
    IMPORTED_KEY,
    ImportRefused,
    OriginalData,
    parse_time,
    refuse_original,
    run_import,
)
from hydraissue.service import IssueService
from hydraissue.webhooks import webhook_names
from tests.conftest import AUTH, BIN, ClientFactory, server_env, settled
from web.app import create_app
from web.keys import SERVICE

ISSUES = 240
STATUSES = ("open", "groomed", "planning", "proposed", "accepted", "implementing", "done")
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40
BROKEN = 77  # not YAML
HAND = 78  # hand-edited: string id, bare times, missing fields, unknown keys
GAP = 100  # deleted in the original: no file
MISSING_FILE = 5  # lists an attachment that is not in uploads/


class Usage(NamedTuple):
    total: int
    used: int
    free: int


def rfc(day: int, hour: int) -> str:
    return f"2026-02-{day:02d}T{hour:02d}:15:00Z"


def original_issue(issue_id: int, rng: random.Random) -> dict[str, Any]:
    """One issue as the original wrote it; the shape varies with the id."""
    issue: dict[str, Any] = {
        "id": issue_id,
        "title": f"Issue {issue_id}: {rng.choice(['crash', 'typo', 'slow page'])}",
        "description": f"Steps for {issue_id}\nline two: with 'quotes' and ünïcode",
        "status": STATUSES[issue_id % len(STATUSES)],
        "category": ("bug", "feature", "improvement", "question")[issue_id % 4],
        "project": ("nimsforest", "hydrastream", None)[issue_id % 3],
        "created_at": rfc(1 + issue_id % 20, 8),
        "updated_at": rfc(1 + issue_id % 20, 9),
    }
    if issue_id % 2:
        issue["priority"] = ("low", "medium", "high", "critical")[issue_id % 4]
        issue["reporter"] = f"user{issue_id}@example.com"
    if issue_id % 3 == 0:
        issue["custom_fields"] = {"environment": "staging", "score": issue_id}
    if issue["status"] in ("proposed", "accepted", "implementing", "done"):
        issue["plan"] = f"1. fix {issue_id}\n2. test"
    if issue_id % 4 == 1:
        issue["comments"] = [
            {"author": "bob", "text": f"seen {n}", "created_at": rfc(1 + issue_id % 20, 10 + n)}
            for n in range(issue_id % 3 + 1)
        ]
    if issue_id % 5 == 2:
        key = "created_at" if issue_id % 2 else "timestamp"
        issue["nim_actions"] = [
            {"name": "nebula", "action": "groomed", key: rfc(1 + issue_id % 20, 11)},
            {"name": "comet", "action": "planned", key: rfc(1 + issue_id % 20, 12)},
        ]
    if issue_id % 10 == 0 or issue_id == MISSING_FILE:
        issue["attachments"] = [f"shot-{issue_id}.png", f"log-{issue_id}.txt"]
    return issue


def build_original(root: Path) -> dict[int, dict[str, Any]]:
    """The original's data dir; returns the issues it holds (by id) as written."""
    rng = random.Random(9)
    (root / "issues").mkdir(parents=True)
    written: dict[int, dict[str, Any]] = {}
    index = []
    for issue_id in range(1, ISSUES + 1):
        if issue_id in (BROKEN, HAND, GAP):
            continue
        issue = original_issue(issue_id, rng)
        (root / "issues" / f"{issue_id}.yaml").write_text(yaml.safe_dump(issue, sort_keys=False))
        written[issue_id] = issue
        index.append({"id": issue_id, "title": issue["title"], "status": issue["status"]})
        for name in issue.get("attachments", []):
            if issue_id == MISSING_FILE and name.endswith(".txt"):
                continue
            folder = root / "uploads" / str(issue_id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(PNG if name.endswith(".png") else b"log line\n")
    (root / "issues" / f"{BROKEN}.yaml").write_text("id: 77\ntitle: [unclosed\n  status: : open\n")
    (root / "issues" / f"{HAND}.yaml").write_text(
        'id: "78"\n'
        "title: Edited by hand\n"
        "status: Resolved\n"
        "created_at: 2026-01-05 07:30:00\n"
        "severity: 3\n"
        "owner: {team: infra}\n"
        "nim_actions:\n"
        "  - {name: nebula, action: implemented, timestamp: '2026-01-06 10:00:00'}\n"
        "comments:\n"
        "  - just a string comment\n"
    )
    (root / "issues.yaml").write_text(yaml.safe_dump(index))
    return written


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a digest of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("original") / "data"
    return root, build_original(root)


@pytest.fixture
def original(
    pristine: tuple[Path, dict[int, dict[str, Any]]], data_dir: Path
) -> dict[int, dict[str, Any]]:
    """A fresh copy of the original's data dir at ``data_dir`` (the conftest one)."""
    subprocess.run(["cp", "-a", str(pristine[0]), str(data_dir)], check=True)
    return pristine[1]


def trail_length(issues: dict[int, dict[str, Any]], agent: str) -> int:
    return sum(1 for i in issues.values() for a in i.get("nim_actions", []) if a["name"] == agent)


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], env=server_env(home), capture_output=True, text=True, timeout=60
    )


# -- the guard ----------------------------------------------------------------------------


def test_every_writing_command_refuses_the_original_and_writes_nothing(
    original: dict[int, dict[str, Any]], data_dir: Path, tmp_path: Path
) -> None:
    before = snapshot(data_dir)
    for command in ("serve", "replay", "verify", "gc-uploads"):
        done = cli(command, "--data-dir", str(data_dir), home=tmp_path)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "issue file(s) in issues/" in lines[0] and "no event logs" in lines[0]
        assert f"hydraissue import --data-dir {data_dir}" in lines[0]
    assert snapshot(data_dir) == before
    assert sorted(os.listdir(data_dir)) == ["issues", "issues.yaml", "uploads"]


async def test_the_service_refuses_before_it_writes(
    original: dict[int, dict[str, Any]], data_dir: Path
) -> None:
    before = snapshot(data_dir)
    service = IssueService(data_dir)
    with pytest.raises(OriginalData, match="import them first"):
        await service.start()
    await service.stop()
    assert snapshot(data_dir) == before


def test_the_guard_lets_this_builds_data_dirs_through(tmp_path: Path) -> None:
    refuse_original(tmp_path / "nothing-here")
    fresh = tmp_path / "fresh"
    (fresh / "issues").mkdir(parents=True)
    (fresh / "events").mkdir()
    (fresh / "issues.yaml").write_text("# HydraIssue index: one summary row\nformat: 5\n")
    refuse_original(fresh)  # a first start with no issues yet
    (fresh / "issues.yaml").write_text("- id: 1\n")
    with pytest.raises(OriginalData, match=r"an issues\.yaml index"):
        refuse_original(fresh)


# -- the import ---------------------------------------------------------------------------


async def test_a_dry_run_writes_nothing(
    original: dict[int, dict[str, Any]], data_dir: Path
) -> None:
    before = snapshot(data_dir)
    result = await run_import(data_dir, data_dir, dry_run=True)
    assert len(result.imported) == len(original) + 1  # the hand-edited one too
    assert [s.name for s in result.skipped] == [f"issues/{BROKEN}.yaml"]
    assert snapshot(data_dir) == before and not (data_dir / ".lock").exists()


async def test_no_room_for_the_backup_is_refused_before_anything_is_written(
    original: dict[int, dict[str, Any]], data_dir: Path
) -> None:
    before = snapshot(data_dir)
    full = Usage(10**9, 10**9 - 4096, 4096)  # what shutil.disk_usage says of a full disk
    with pytest.raises(ImportRefused, match="not enough room"):
        await run_import(data_dir, data_dir, disk_usage=lambda _path: full)
    assert snapshot(data_dir) == before


def test_import_then_serve_answers_the_same_issues(
    original: dict[int, dict[str, Any]], data_dir: Path, tmp_path: Path
) -> None:
    before = snapshot(data_dir)
    done = cli("import", "--data-dir", str(data_dir), home=tmp_path)
    assert done.returncode == 1, done.stderr  # one file could not be imported
    out = done.stdout
    expected = len(original) + 1
    assert f"imported {expected}, already imported 0, skipped 1" in out, out
    assert f"skipped issues/{BROKEN}.yaml: not valid YAML" in out
    found = sum(len(i.get("attachments", [])) for i in original.values()) - 1
    assert f"attachments: {found} found, 1 missing" in out
    assert f"missing issue {MISSING_FILE}: log-{MISSING_FILE}.txt" in out
    assert f"new issues get ids from {ISSUES + 1} on" in out
    # The backup holds every original file, byte for byte.
    (backup,) = data_dir.glob("pre-import-*")
    assert snapshot(backup) == before
    # The originals are untouched by the import itself; the broken one stays for fixing.
    assert (data_dir / "issues" / f"{BROKEN}.yaml").read_bytes() == (
        backup / "issues" / f"{BROKEN}.yaml"
    ).read_bytes()
    assert not (data_dir / ".import-in-progress").exists()
    # A second run imports nothing twice and writes no second backup.
    again = cli("import", "--data-dir", str(data_dir), home=tmp_path)
    assert f"imported 0, already imported {expected}, skipped 1" in again.stdout
    assert len(list(data_dir.glob("pre-import-*"))) == 1
    assert len(list((data_dir / "events").glob("*.yaml"))) == expected


@pytest.fixture
def imported(original: dict[int, dict[str, Any]], data_dir: Path) -> dict[int, dict[str, Any]]:
    (data_dir / "issues" / f"{BROKEN}.yaml").unlink()  # the operator gave up on that one
    result = asyncio.run(run_import(data_dir, data_dir))
    assert not result.skipped and len(result.imported) == len(original) + 1
    return original


async def test_the_api_answers_the_imported_issues(
    imported: dict[int, dict[str, Any]],
    aiohttp_client: ClientFactory,
    config: Config,
    data_dir: Path,
) -> None:
    client: TestClient[Any, web.Application] = await aiohttp_client(create_app(config))
    for issue_id, issue in imported.items():
        resp = await client.get(f"/api/v1/issues/{issue_id}", headers=AUTH)
        assert resp.status == 200, issue_id
        body = await resp.json()
        for name in ("title", "description", "status", "category", "project"):
            assert body[name] == issue[name], (issue_id, name)
        assert body["priority"] == issue.get("priority")
        assert body["reporter"] == issue.get("reporter")
        assert body["plan"] == issue.get("plan")
        custom = dict(body["custom_fields"])
        if issue_id == MISSING_FILE:
            assert custom.pop(IMPORTED_KEY) == {"missing_attachments": [f"log-{issue_id}.txt"]}
        assert custom == issue.get("custom_fields", {})
        assert body["created_at"] == parse_time(issue["created_at"])
        assert body["updated_at"] == parse_time(issue["updated_at"])
        assert [(c["author"], c["text"], c["created_at"]) for c in body["comments"]] == [
            (c["author"], c["text"], parse_time(c["created_at"])) for c in issue.get("comments", [])
        ]
        assert [(a["name"], a["action"], a["at"]) for a in body["nim_actions"]] == [
            (a["name"], a["action"], parse_time(a.get("created_at") or a.get("timestamp")))
            for a in issue.get("nim_actions", [])
        ]
        names = [a["name"] for a in body["attachments"]]
        listed = issue.get("attachments", [])
        assert names == [n for n in listed if not (issue_id == MISSING_FILE and ".txt" in n)]
    # The attachments are served from where they are.
    body = await (await client.get("/api/v1/issues/10", headers=AUTH)).json()
    shot = body["attachments"][0]
    assert shot["content_type"] == "image/png" and shot["size"] == len(PNG)
    served = await client.get(f"/uploads/10/{shot['filename']}")
    assert served.status == 200 and await served.read() == PNG
    assert (data_dir / "uploads" / "10" / "shot-10.png").read_bytes() == PNG  # still there
    # The hand-edited one: string id, bare times, an alias, unknown keys kept.
    hand = await (await client.get(f"/api/v1/issues/{HAND}", headers=AUTH)).json()
    assert hand["status"] == "done" and hand["created_at"] == "2026-01-05T07:30:00.000Z"
    assert hand["updated_at"] == "2026-01-06T10:00:00.000Z"  # its last nim action
    assert hand["comments"][0]["text"] == "just a string comment"
    assert hand["custom_fields"][IMPORTED_KEY] == {  # "Resolved" is the alias of done
        "severity": 3,
        "owner": {"team": "infra"},
    }
    assert hand["description"] == "" and hand["priority"] is None
    # Lists and stats see them; the gap stays a gap; new issues come after the highest.
    listed = await (await client.get("/api/v1/issues?limit=500", headers=AUTH)).json()
    items = listed["issues"] if isinstance(listed, dict) else listed
    assert len(items) == len(imported) + 1
    assert (await client.get(f"/api/v1/issues/{GAP}", headers=AUTH)).status == 404
    stats = await (await client.get("/api/v1/stats", headers=AUTH)).json()
    assert stats["total"] == len(imported) + 1
    created = await client.post(
        "/api/v1/issues", json={"title": "after the import", "description": "x"}, headers=AUTH
    )
    assert created.status == 201 and (await created.json())["id"] == ISSUES + 1
    # The agents' trails hold the imported nim actions; no webhook history is sent.
    await settled(client)
    service = client.app[SERVICE]
    comet = (await service.trails()).entries("comet")
    assert comet is not None
    expected = trail_length(imported, "comet")
    assert len(comet) == expected and all(e.kind == "nim_action" for e in comet)
    (event,) = await service.store.read_issue(1)
    assert event.type == "issue.imported" and webhook_names(event) == ()


async def test_imported_nim_trails_survive_a_restart_and_a_replay(
    imported: dict[int, dict[str, Any]], data_dir: Path
) -> None:
    from projections.rebuild import replay

    async def count(service: IssueService, agent: str) -> int:
        return len((await service.trails()).entries(agent) or [])

    expected = trail_length(imported, "nebula") + 1  # the hand-edited one's
    for _ in range(2):
        service = IssueService(data_dir)
        await service.start()
        await service.idle()
        assert await count(service, "nebula") == expected
        await service.stop()
    await replay(data_dir)
    service = IssueService(data_dir)
    await service.start()
    await service.idle()
    assert await count(service, "nebula") == expected
    await service.stop()
