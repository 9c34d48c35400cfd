"""Invariant 1: replaying the event logs gives exactly the live state.

The real IssueService runs hypothesis-generated command sequences (built by
``hydraissue.parse`` from JSON bodies, as the web handlers build them) on a real data
dir; then the projection files it wrote, a replay, a fresh start-up and ``verify`` must
all agree with what the live service answered.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import events.fsio
from events.model import Actor
from hydraissue import parse
from hydraissue.commands import Command, DeleteIssue
from hydraissue.errors import DomainError
from hydraissue.model import CATEGORIES, PRIORITIES, Issue
from hydraissue.service import IssueService, StartupReport
from projections.files import ProjectionFiles
from projections.rebuild import replay, verify
from projections.rows import IndexRow
from tests.strategies import custom_fields, optional_texts, status_names, strict, texts, titles

# -- strategies ----------------------------------------------------------------------

create_body = st.fixed_dictionaries(
    {"title": titles},
    optional={
        "description": texts,
        "project": optional_texts,
        "category": st.sampled_from(CATEGORIES),
        "priority": st.sampled_from([None, *PRIORITIES]),
        "reporter": optional_texts,
        "custom_fields": custom_fields,
    },
)
update_body = st.fixed_dictionaries(
    {},
    optional={
        "status": status_names,
        "priority": st.sampled_from([None, *PRIORITIES]),
        "category": st.sampled_from(CATEGORIES),
        "plan": optional_texts,
        "custom_fields": custom_fields,
        "title": titles,
        "description": texts,
        "project": optional_texts,
    },
)
plan_body = st.fixed_dictionaries({"plan": optional_texts}, optional={"status": status_names})
comment_body = st.one_of(
    st.fixed_dictionaries({"author": optional_texts, "text": titles}),
    st.fixed_dictionaries({"author": optional_texts, "body": titles}),
)
nim_body = st.fixed_dictionaries({"name": titles, "action": titles})
target = st.integers(0, 50)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), create_body),
        st.tuples(st.just("create"), create_body),
        st.tuples(st.just("update"), target, update_body),
        st.tuples(st.just("update"), target, update_body),
        st.tuples(st.just("plan"), target, plan_body),
        st.tuples(st.just("comment"), target, comment_body),
        st.tuples(st.just("nim"), target, nim_body),
        st.tuples(st.just("delete"), target),
        st.tuples(st.just("flush"), st.booleans()),
    ),
    min_size=4,
    max_size=30,
)


# -- driving the service -------------------------------------------------------------


def command_for(op: tuple[Any, ...], ids: list[int]) -> Command | None:
    kind = op[0]
    if kind == "create":
        return parse.create_issue(op[1])
    if not ids:
        return None
    issue_id = ids[op[1] % len(ids)]
    match kind:
        case "update":
            return parse.update_issue(issue_id, op[2])
        case "plan":
            return parse.set_plan(issue_id, op[2])
        case "comment":
            return parse.add_comment(issue_id, op[2])
        case "nim":
            return parse.record_nim_action(issue_id, op[2])
        case "delete":
            return DeleteIssue(issue_id)
    raise AssertionError(kind)


async def run_ops(
    data_dir: Path, script: list[tuple[Any, ...]]
) -> tuple[dict[int, Issue | None], dict[int, IndexRow], int, int]:
    """Run the script on a fresh service and stop it cleanly; returns what it answered
    (issues, index rows), the events appended and the last position."""
    service = IssueService(data_dir)
    await service.start()
    appended = 0
    ids: list[int] = []
    try:
        for op in script:
            if op[0] == "flush":
                await service.dispatcher.idle(10)  # issue files written
                if op[1] and service.writer is not None:
                    await service.writer.write_snapshot()  # and the index
                continue
            try:
                command = command_for(op, ids)
                if command is None:
                    continue
                outcome = await service.handle(command, Actor("api", "prop"))
            except DomainError:
                continue  # rejected input or rule: nothing may be appended
            appended += len(outcome.events)
            if op[0] == "create":
                ids.append(outcome.issue.id)
        return live_state(service), dict(service.read_model.rows), appended, service.head
    finally:
        await service.stop()


def live_state(service: IssueService) -> dict[int, Issue | None]:
    model = service.read_model
    return {issue_id: model.issue(issue_id) for issue_id in model.rows}


def assert_same_issues(
    expected: dict[int, Issue | None], service: IssueService, where: str
) -> None:
    got = live_state(service)
    assert sorted(got) == sorted(expected), where
    for issue_id, issue in expected.items():
        other = got[issue_id]
        if issue is None:
            assert other is None, f"{where}: deleted issue {issue_id} is back"
            continue
        assert other is not None, f"{where}: issue {issue_id} is missing"
        assert other == issue, f"{where}: issue {issue_id} differs"
        assert strict(other.to_dict()) == strict(issue.to_dict()), f"{where}: {issue_id} JSON"
        assert other.seq == issue.seq


def read_files(data_dir: Path) -> tuple[dict[str, bytes], int, dict[int, IndexRow]]:
    files = ProjectionFiles(data_dir)
    issue_files = {p.name: p.read_bytes() for p in files.issues_dir.iterdir()}
    loaded = files.read_index()
    assert loaded is not None, "issues.yaml missing or unreadable"
    checkpoint, rows = loaded
    return issue_files, checkpoint, {row.id: row for row in rows}


def assert_files_match(
    data_dir: Path,
    live: dict[int, Issue | None],
    live_rows: dict[int, IndexRow],
    head: int,
    where: str,
) -> None:
    files = ProjectionFiles(data_dir)
    issue_files, checkpoint, rows = read_files(data_dir)
    expected_names = {f"{i}.yaml" for i, issue in live.items() if issue is not None}
    assert set(issue_files) == expected_names, f"{where}: issue files"
    for issue_id, issue in live.items():
        if issue is None:
            continue
        on_disk = files.read_issue(issue_id)
        assert on_disk is not None, f"{where}: issues/{issue_id}.yaml unreadable"
        assert on_disk == issue, f"{where}: issues/{issue_id}.yaml differs from live"
        assert strict(on_disk.to_dict()) == strict(issue.to_dict())
    assert rows == live_rows, f"{where}: index rows differ from live"
    assert checkpoint == head, where


async def started(data_dir: Path) -> tuple[IssueService, StartupReport]:
    service = IssueService(data_dir)
    report = await service.start()
    await service.idle()
    return service, report


# -- the property --------------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops)
def test_replay_gives_exactly_the_live_state(script: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        live, rows, appended, head = asyncio.run(run_ops(data_dir, script))

        # The files the live service wrote (it was stopped cleanly) agree with the logs.
        assert asyncio.run(verify(data_dir)) == []
        assert_files_match(data_dir, live, rows, head, "written")
        written_files, _, _ = read_files(data_dir)
        written_index = (data_dir / "issues.yaml").read_bytes()

        # (b) A fresh start on a current index folds nothing and answers the same.
        async def fresh_start() -> None:
            fresh, report = await started(data_dir)
            try:
                assert report.caught_up == 0 and report.repairs == []
                assert not report.index_missing
                assert_same_issues(live, fresh, "fresh start")
                assert fresh.read_model.rows == rows
            finally:
                await fresh.stop()

        asyncio.run(fresh_start())

        # (a) replay rebuilds byte-identical projections.
        result = asyncio.run(replay(data_dir))
        assert result.events == appended
        assert result.issues == sum(1 for i in live.values() if i is not None)
        assert result.deleted == sum(1 for i in live.values() if i is None)
        assert result.repairs == [] and result.damaged == {}
        assert_files_match(data_dir, live, rows, head, "replayed")
        replayed_files, _, _ = read_files(data_dir)
        assert replayed_files == written_files
        assert (data_dir / "issues.yaml").read_bytes() == written_index

        # (c) and everything still verifies.
        assert asyncio.run(verify(data_dir)) == []


# -- start-up with stale or missing projections --------------------------------------

API = Actor("api")


async def _base(data_dir: Path) -> IssueService:
    """Five issues with a comment each, every projection written (the index too)."""
    service = IssueService(data_dir)
    await service.start()
    for n in range(5):
        body = {"title": f"issue {n} \u2028\x85 😀", "custom_fields": {"n": n, "x": [1.5, None]}}
        issue = (await service.handle(parse.create_issue(body), API)).issue
        await service.handle(parse.add_comment(issue.id, {"text": f'c{n}\n"q"'}), API)
    await service.dispatcher.idle(10)
    assert service.writer is not None
    await service.writer.write_snapshot()
    return service


async def _more(service: IssueService) -> None:
    """Writes after the index was written: updates, a delete, a new issue."""
    await service.handle(parse.update_issue(1, {"status": "done", "title": "t\u2029"}), API)
    await service.handle(parse.add_comment(2, {"author": "z", "text": "late"}), API)
    await service.handle(DeleteIssue(3), API)
    await service.handle(parse.create_issue({"title": "brand new"}), API)
    await service.handle(DeleteIssue(6), API)  # the newest issue, deleted
    await service.handle(parse.record_nim_action(4, {"name": "nebula", "action": "x"}), API)


async def abandon(service: IssueService, *, files_written: bool) -> None:
    """Stop the service as a crash would: no final snapshot, no checkpoints saved."""
    if files_written:
        await service.dispatcher.idle(10)
    for sub in service.dispatcher.subscribers.values():
        assert sub.task is not None
        sub.task.cancel()
    await asyncio.gather(
        *(s.task for s in service.dispatcher.subscribers.values() if s.task),
        return_exceptions=True,
    )
    assert service.writer is not None and service.writer._timer is not None
    service.writer._timer.cancel()
    await service.store.close()


@pytest.mark.parametrize("flushed", ["nothing", "issue files only", "issue files, no index"])
async def test_stale_index_is_caught_up_exactly(tmp_path: Path, flushed: str) -> None:
    data_dir = tmp_path / "data"
    service = await _base(data_dir)
    await _more(service)
    live, rows, head = live_state(service), dict(service.read_model.rows), service.head
    await abandon(service, files_written=flushed != "nothing")
    if flushed == "issue files, no index":
        (data_dir / "issues.yaml").unlink()

    fresh, report = await started(data_dir)
    try:
        if flushed == "issue files, no index":
            assert report.index_missing
            assert report.caught_up == 6
        else:
            assert report.caught_up == 5  # issue 5 did not change after the index
        assert_same_issues(live, fresh, "stale start")
        assert fresh.read_model.rows == rows
        assert fresh.head == head
        # ids are never reused, even though the newest issue was deleted
        created = await fresh.handle(parse.create_issue({"title": "next"}), API)
        assert created.issue.id == 7
        live[7] = created.issue
        rows[7] = fresh.read_model.rows[7]
        head = fresh.head
    finally:
        await fresh.stop()
    assert await verify(data_dir) == []
    assert_files_match(data_dir, live, rows, head, "after stale start")


def _corruptions(good: bytes, old: bytes) -> dict[str, bytes | None]:
    return {
        "missing": None,
        "empty": b"",
        "garbage": b"\x00\xff\xfe not: [yaml",
        "half": good[: len(good) // 2],
        "a list": b"- 1\n- 2\n",
        "older version": old,
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "half", "a list", "older version"])
async def test_damaged_issue_file_is_recovered_from_the_log(tmp_path: Path, kind: str) -> None:
    data_dir = tmp_path / "data"
    service = await _base(data_dir)
    path = data_dir / "issues" / "2.yaml"
    old = path.read_bytes()
    await service.handle(parse.update_issue(2, {"status": "groomed", "plan": "p\u2028"}), API)
    live = live_state(service)
    await service.stop()
    good = path.read_bytes()
    assert good != old

    damage = _corruptions(good, old)[kind]
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage)
    assert await verify(data_dir) != []  # verify notices

    fresh, report = await started(data_dir)
    try:
        assert report.caught_up == 0  # the index is current; the issue file is not
        assert_same_issues(live, fresh, f"{kind} issue file")
    finally:
        await fresh.stop()
    assert path.read_bytes() == good
    assert await verify(data_dir) == []


async def test_replay_restores_deleted_projection_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    service = await _base(data_dir)
    await _more(service)
    live = live_state(service)
    await service.stop()
    before, _, _ = read_files(data_dir)
    index = (data_dir / "issues.yaml").read_bytes()
    for path in (data_dir / "issues").iterdir():
        path.unlink()
    (data_dir / "issues.yaml").unlink()
    (data_dir / "issues" / "99.yaml").write_bytes(b"id: 99\n")  # a file with no log
    problems = await verify(data_dir)
    assert "issues/99.yaml: has no event log" in problems
    assert "issues.yaml: missing or unreadable" in problems
    await replay(data_dir)
    after, _, _ = read_files(data_dir)
    assert after == before
    assert (data_dir / "issues.yaml").read_bytes() == index
    assert await verify(data_dir) == []
    fresh, _ = await started(data_dir)
    try:
        assert_same_issues(live, fresh, "after replay")
    finally:
        await fresh.stop()


async def test_replay_by_worker_processes_writes_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big store is replayed by worker processes; the result must not depend on it."""
    data_dir = tmp_path / "data"
    service = await _base(data_dir)
    await _more(service)
    live = live_state(service)
    await service.stop()
    before, _, _ = read_files(data_dir)
    index = (data_dir / "issues.yaml").read_bytes()
    for path in (data_dir / "issues").iterdir():
        path.unlink()
    monkeypatch.setattr("projections.rebuild.CHUNK", 2)
    monkeypatch.setattr("projections.rebuild._workers", lambda issues: 2)
    result = await replay(data_dir)
    assert (result.issues, result.deleted) == (4, 2)
    after, _, _ = read_files(data_dir)
    assert after == before
    assert (data_dir / "issues.yaml").read_bytes() == index
    assert await verify(data_dir) == []
    fresh, _ = await started(data_dir)
    try:
        assert_same_issues(live, fresh, "after a replay by workers")
    finally:
        await fresh.stop()


# -- the index snapshot, written a chunk at a time -----------------------------------


def _rows(count: int) -> list[IndexRow]:
    """Rows enough for several chunks; one in the middle needs YAML's escapes (DEL)."""
    rows = [
        IndexRow(i, f"row {i} " + "x" * 200, "open", "bug", None, "web", None, "t", "t", 1)
        for i in range(1, count + 1)
    ]
    rows[count // 2] = rows[count // 2]._replace(title="a \x7f in the middle chunk")
    return rows


def test_a_big_index_is_written_in_chunks_synced_in_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index, written as it is encoded (what that saves in memory is tools/bench.py's
    to show), is made durable about a megabyte at a time and reads back row for row."""
    files = ProjectionFiles(tmp_path)
    files.prepare()
    rows = _rows(16_000)  # about 4 MB: eight chunks of 2,048 rows
    synced_at = [0]  # the file's size at each step's sync
    real_fdatasync = events.fsio.os.fdatasync

    def fdatasync(fd: int) -> None:
        synced_at.append(os.fstat(fd).st_size)
        real_fdatasync(fd)

    monkeypatch.setattr(events.fsio.os, "fdatasync", fdatasync)
    files.write_snapshot(rows, [], checkpoint=7)
    size = (tmp_path / "issues.yaml").stat().st_size
    assert size > 3 * events.fsio.SYNC_STEP
    gaps = [b - a for a, b in zip(synced_at, [*synced_at[1:], size], strict=True)]
    assert len(gaps) >= 3  # a step (1 MB) and at most a chunk more between syncs
    assert max(gaps) < 2 * events.fsio.SYNC_STEP, gaps
    assert files.read_index() == (7, rows)


def test_an_index_that_fails_part_way_leaves_the_old_one(tmp_path: Path) -> None:
    files = ProjectionFiles(tmp_path)
    files.prepare()
    rows = _rows(5_000)
    files.write_snapshot(rows, [], checkpoint=3)
    before = (tmp_path / "issues.yaml").read_bytes()
    broken: list[Any] = [*rows, *rows[:3000], object()]  # fails in the third chunk
    with pytest.raises(TypeError):
        files.write_snapshot(broken, [], checkpoint=9)
    assert (tmp_path / "issues.yaml").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
