"""Invariant 2: a 2xx means on disk. SIGKILL the real server mid-stream, restart it,
and find every acknowledged write; then ``hydraissue verify`` agrees with the logs.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import AUTH, BIN, server_env, start_server, stop

CLIENTS = 8
NON_TERMINAL = ("open", "groomed", "planning", "proposed", "accepted", "rejected", "implementing")
TERMINAL = ("done", "closed")


# -- the write stream ----------------------------------------------------------------


@dataclass
class Record:
    """What clients were told. ``acked`` only for complete 2xx answers."""

    titles: dict[int, str] = field(default_factory=dict)
    # per issue, every status PATCH whose outcome is 2xx (True) or unknown (False)
    statuses: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)
    comments_acked: dict[int, set[str]] = field(default_factory=dict)
    comments_sent: dict[int, set[str]] = field(default_factory=dict)
    deleted_acked: set[int] = field(default_factory=set)
    deleted_maybe: set[int] = field(default_factory=set)
    acks: int = 0
    unexpected: list[str] = field(default_factory=list)
    first_ack: asyncio.Event = field(default_factory=asyncio.Event)
    # reports with attachments: title -> the files sent (name, bytes); acked ids
    reports: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    reports_acked: dict[str, int] = field(default_factory=dict)
    # keyed creates: key -> (title, the id a 201 named, or None when no answer came)
    keyed: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    def acked(self) -> None:
        self.acks += 1
        self.first_ack.set()


class Gone(Exception):
    """The server went away (killed): this client stops."""


async def send(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    try:
        async with session.request(method, url, json=body, headers=AUTH) as resp:
            data = await resp.json() if resp.status != 204 else None
            return resp.status, data
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise Gone from exc


async def writer(n: int, base: str, rec: Record, stop_at: asyncio.Event) -> None:
    rng = random.Random(n)
    mine: list[int] = []
    last_status: dict[int, str] = {}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        step = 0
        while not stop_at.is_set():
            step += 1
            try:
                # create
                title = f'client {n} issue {step} \u2028 😀 "q"'
                body = {"title": title, "custom_fields": {"client": n, "step": step}}
                status, data = await send(session, "POST", f"{base}/api/v1/issues", body)
                if status == 201:
                    assert data["id"] not in rec.titles, "an id was handed out twice"
                    rec.titles[data["id"]] = title
                    rec.statuses[data["id"]] = []
                    mine.append(data["id"])
                    last_status[data["id"]] = "open"
                    rec.acked()
                else:
                    rec.unexpected.append(f"create -> {status} {data}")
                if not mine:
                    continue
                # patch a status (never a 409: terminal issues stay terminal)
                issue_id = rng.choice(mine)
                current = last_status[issue_id]
                choices = TERMINAL if current in TERMINAL else NON_TERMINAL + TERMINAL
                wanted = rng.choice([s for s in choices if s != current])
                rec.statuses[issue_id].append((wanted, False))
                status, data = await send(
                    session, "PATCH", f"{base}/api/v1/issues/{issue_id}", {"status": wanted}
                )
                if status == 200:
                    rec.statuses[issue_id][-1] = (wanted, True)
                    last_status[issue_id] = wanted
                    rec.acked()
                else:
                    rec.statuses[issue_id].pop()
                    rec.unexpected.append(f"patch -> {status} {data}")
                # comment
                issue_id = rng.choice(mine)
                text = f"comment {n}/{step}\nline two \x85 {rng.random()}"
                rec.comments_sent.setdefault(issue_id, set()).add(text)
                status, data = await send(
                    session,
                    "POST",
                    f"{base}/api/v1/issues/{issue_id}/comments",
                    {"author": f"c{n}", "text": text},
                )
                if status == 201 and data["text"] == text:
                    rec.comments_acked.setdefault(issue_id, set()).add(text)
                    rec.acked()
                else:
                    rec.unexpected.append(f"comment -> {status} {data}")
                # now and then, delete one
                if rng.random() < 0.1 and len(mine) > 1:
                    issue_id = mine.pop(rng.randrange(len(mine)))
                    rec.deleted_maybe.add(issue_id)
                    status, _ = await send(session, "DELETE", f"{base}/api/v1/issues/{issue_id}")
                    if status == 204:
                        rec.deleted_acked.add(issue_id)
                        rec.acked()
                    else:
                        rec.unexpected.append(f"delete -> {status}")
            except Gone:
                return


async def reporter(n: int, base: str, rec: Record, stop_at: asyncio.Event) -> None:
    """Reports with attachments through /report (one commit each), as the form sends."""
    step = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop_at.is_set():
            step += 1
            title = f"report {n}/{step}"
            files = [(f"f{k}.txt", f"{title} file {k} ".encode() * 50) for k in range(1 + step % 3)]
            rec.reports[title] = files
            form = aiohttp.FormData()
            form.add_field("title", title)
            for name, data in files:
                form.add_field("attachments", data, filename=name, content_type="text/plain")
            try:
                async with session.post(
                    f"{base}/report", data=form, headers={"Accept": "application/json"}
                ) as resp:
                    if resp.status == 201:
                        rec.reports_acked[title] = (await resp.json())["id"]
                        rec.acked()
                    else:
                        rec.unexpected.append(f"report -> {resp.status} {await resp.text()}")
            except (TimeoutError, aiohttp.ClientError, OSError):
                return


async def keyed_creator(n: int, base: str, rec: Record, stop_at: asyncio.Event) -> None:
    """Creates with an Idempotency-Key, to retry after the crash."""
    step = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop_at.is_set():
            step += 1
            key, title = f"key-{n}-{step}", f"keyed {n}/{step}"
            rec.keyed[key] = (title, None)
            try:
                async with session.post(
                    f"{base}/api/v1/issues",
                    json={"title": title},
                    headers={**AUTH, "Idempotency-Key": key},
                ) as resp:
                    if resp.status == 201:
                        rec.keyed[key] = (title, (await resp.json())["id"])
                        rec.acked()
                    else:
                        rec.unexpected.append(f"keyed -> {resp.status}")
            except (TimeoutError, aiohttp.ClientError, OSError):
                return


async def check_reports_and_keys(base: str, rec: Record) -> None:
    """Reports: acknowledged ones exist, and any that exists has all its files (one
    commit). Keyed creates: a retry with the same key gives the first result."""
    async with aiohttp.ClientSession() as session:
        by_title: dict[str, list[dict[str, Any]]] = {}
        offset = 0
        while True:
            async with session.get(
                f"{base}/api/v1/issues", params={"limit": 1000, "offset": offset}, headers=AUTH
            ) as resp:
                chunk = await resp.json()
            for issue in chunk:
                by_title.setdefault(issue["title"], []).append(issue)
            if len(chunk) < 1000:
                break
            offset += 1000
        for title, files in rec.reports.items():
            found = by_title.get(title, [])
            if title in rec.reports_acked:
                assert [i["id"] for i in found] == [rec.reports_acked[title]], title
            assert len(found) <= 1, f"report {title} was created twice"
            for issue in found:
                names = [a["name"] for a in issue["attachments"]]
                assert names == [name for name, _ in files], (title, names)
                for attachment, (_, data) in zip(issue["attachments"], files, strict=True):
                    assert attachment["url"].startswith(f"{base}/uploads/")  # absolute
                    async with session.get(attachment["url"]) as resp:
                        assert resp.status == 200
                        assert await resp.read() == data
        for key, (title, acked_id) in rec.keyed.items():
            retries = []
            for _ in range(2):
                async with session.post(
                    f"{base}/api/v1/issues",
                    json={"title": title},
                    headers={**AUTH, "Idempotency-Key": key},
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    retries.append(
                        ((await resp.json())["id"], resp.headers.get("Idempotent-Replayed"))
                    )
            if acked_id is not None:
                assert retries[0] == (acked_id, "true"), (key, retries)
            else:
                # committed but unanswered: replayed; never committed: created now, once
                assert retries[0][1] == "true" or title not in by_title, (key, retries)
            assert retries[1] == (retries[0][0], "true"), (key, retries)
            assert len(by_title.get(title, [])) <= 1, f"{title} was created twice"


async def check_subscribers_catch_up(base: str) -> None:
    """Every background subscriber resumed from its checkpoint and reached the head."""
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.get(f"{base}/api/v1/health") as resp:
                health = await resp.json()
            subscribers = health["extra"]["subscribers"]
            if all(s["lag"] == 0 for s in subscribers.values()):
                break
            await asyncio.sleep(0.05)
        assert health["status"] == "ok", health
        assert set(subscribers) == {"issue-files", "uploads-cleanup", "webhooks", "nim-audit"}
        assert all(s["lag"] == 0 and s["failures"] == 0 for s in subscribers.values()), health
        # the stream is whole: positions rise, and every one is an event of a log
        async with session.get(
            f"{base}/api/v1/events", params={"limit": 1000}, headers=AUTH
        ) as resp:
            page = await resp.json()
        positions = [e["pos"] for e in page["events"]]
        assert positions == sorted(set(positions))


def check_files_readable(data_dir: Path) -> None:
    """No file under the data dir is unreadable or a leftover temp file."""
    leftovers = [p for p in data_dir.rglob("*.tmp")]
    assert leftovers == [], leftovers
    for path in data_dir.rglob("*.yaml"):
        yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
    assert (data_dir / "positions.idx").stat().st_size % 24 == 0


def allowed_final_statuses(history: list[tuple[str, bool]]) -> set[str]:
    """The last acknowledged status, or any sent after it whose answer never came."""
    last_ack = max((i for i, (_, ok) in enumerate(history) if ok), default=-1)
    base = history[last_ack][0] if last_ack >= 0 else "open"
    return {base} | {s for s, ok in history[last_ack + 1 :] if not ok}


async def check_acknowledged(base: str, rec: Record) -> None:
    async with aiohttp.ClientSession() as session:
        for issue_id, title in rec.titles.items():
            async with session.get(f"{base}/api/v1/issues/{issue_id}", headers=AUTH) as resp:
                if issue_id in rec.deleted_acked:
                    assert resp.status == 404, f"deleted issue {issue_id} is back"
                    continue
                if issue_id in rec.deleted_maybe and resp.status == 404:
                    continue
                assert resp.status == 200, f"acknowledged issue {issue_id} lost"
                issue = await resp.json()
            assert issue["title"] == title
            allowed = allowed_final_statuses(rec.statuses[issue_id])
            assert issue["status"] in allowed, (issue_id, issue["status"], rec.statuses[issue_id])
            texts = {c["text"] for c in issue["comments"]}
            missing = rec.comments_acked.get(issue_id, set()) - texts
            assert not missing, f"issue {issue_id} lost acknowledged comments {missing}"
            assert texts <= rec.comments_sent.get(issue_id, set()), "a comment from nowhere"
            assert [c["id"] for c in issue["comments"]] == list(
                range(1, len(issue["comments"]) + 1)
            )
            async with session.get(f"{base}/api/v1/issues/{issue_id}/events", headers=AUTH) as resp:
                events = await resp.json()
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        # the restarted server takes writes and hands out fresh ids
        async with session.post(
            f"{base}/api/v1/issues", json={"title": "after restart"}, headers=AUTH
        ) as resp:
            assert resp.status == 201
            new_id = (await resp.json())["id"]
        assert new_id not in rec.titles
        assert new_id > max(rec.titles, default=0)


@pytest.mark.parametrize("kill_after", [0.3, 2.4], ids=["early", "after-index-flushes"])
async def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, kill_after: float) -> None:
    data_dir = tmp_path / "data"
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "server.log"
    rec = Record()
    stop_writers = asyncio.Event()

    first = await start_server(data_dir, home, log)
    try:
        writers = [
            asyncio.create_task(writer(n, first.url, rec, stop_writers)) for n in range(CLIENTS)
        ]
        writers += [
            asyncio.create_task(reporter(n, first.url, rec, stop_writers)) for n in range(3)
        ]
        writers += [
            asyncio.create_task(keyed_creator(n, first.url, rec, stop_writers)) for n in range(2)
        ]
        await asyncio.wait_for(rec.first_ack.wait(), 10)
        await asyncio.sleep(kill_after)
        acks_at_kill = rec.acks
        first.proc.send_signal(signal.SIGKILL)
        stop_writers.set()
        await asyncio.gather(*writers)
    finally:
        stop(first, signal.SIGKILL)
    assert first.proc.returncode == -signal.SIGKILL
    assert acks_at_kill >= CLIENTS, f"too few writes before the kill ({acks_at_kill})"
    assert not [u for u in rec.unexpected if " -> 5" in u], rec.unexpected

    second = await start_server(data_dir, home, log)
    try:
        await check_acknowledged(second.url, rec)
        await check_reports_and_keys(second.url, rec)
        await check_subscribers_catch_up(second.url)
    finally:
        code = stop(second, signal.SIGTERM)
    assert code == 0, second.output()
    check_files_readable(data_dir)

    verified = subprocess.run(
        [str(BIN), "verify", "--data-dir", str(data_dir)],
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ok:" in verified.stdout
