"""Per-issue logs: codec output is real YAML, logs read back exactly, torn tails are cut
and damage inside a log is named, never cut."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from events.codec import (
    dump_flow,
    dump_item,
    dump_mapping_yaml,
    load_block_yaml,
    load_items,
    load_yaml_list,
)
from events.logs import LogDamaged, Repair, encode, parse_log, repair_tail, scan
from events.model import Actor, Event
from hydraissue.commands import AddComment, CreateIssue, UpdateIssue
from hydraissue.errors import Invalid
from hydraissue.parse import MAX_KEY
from hydraissue.parse import custom_fields as parse_custom_fields
from hydraissue.service import IssueService
from projections.rebuild import verify
from tests.conftest import AUTH
from tests.strategies import json_values, strict, yaml_objects

# -- the codec -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(yaml_objects, min_size=1, max_size=4))
def test_flow_items_are_yaml_that_both_loaders_read_alike(objs: list[dict[str, Any]]) -> None:
    data = b"".join(dump_item(obj) for obj in objs)
    assert data.count(b"\n") == len(objs), "one item per line"
    for line in data.splitlines():
        text = line.decode()
        assert not any(ch in text for ch in "\r\x85\u2028\u2029"), "a YAML line break inside"
    by_yaml = yaml.load(data, Loader=yaml.CSafeLoader)
    fast = load_items(data)
    assert strict(fast) == strict(objs)
    assert strict(by_yaml) == strict(objs)
    assert strict(load_yaml_list(data)) == strict(objs)


@given(json_values)  # any JSON: the YAML-only float restriction does not apply
def test_dump_flow_is_json(value: Any) -> None:
    assert strict(orjson.loads(dump_flow(value))) == strict(value)


def test_longest_allowed_key_is_valid_yaml() -> None:
    """custom_fields keys come from clients; YAML limits implicit keys to 1024 chars.

    The codec cannot lift that limit, so parsing caps keys (MAX_KEY) low enough that
    even a key made only of characters written as 6-character escapes stays valid.
    """
    for key in ("k" * MAX_KEY, "\u2028" * MAX_KEY, "\x85" * MAX_KEY):
        obj = {"data": {"custom_fields": parse_custom_fields({"nested": [{key: 1}], key: 2})}}
        data = dump_item(obj)
        assert load_items(data) == [obj]
        assert yaml.load(data, Loader=yaml.CSafeLoader) == [obj], f"key of {len(key)} chars"
    for too_long in ({"k" * (MAX_KEY + 1): 1}, {"a": {"b": [{"k" * (MAX_KEY + 1): 1}]}}):
        with pytest.raises(Invalid):
            parse_custom_fields(too_long)


@settings(max_examples=150, deadline=None)
@given(yaml_objects)
def test_block_yaml_round_trip(obj: dict[str, Any]) -> None:
    """Issue files (block YAML through libyaml) read back exactly what was written."""
    assert strict(load_block_yaml(dump_mapping_yaml(obj))) == strict(obj)


def test_load_items_skips_comments_and_blank_lines() -> None:
    data = b"# header\n\n" + dump_item({"a": 1}) + b"\n# note\n" + dump_item({"b": [2]})
    assert load_items(data) == [{"a": 1}, {"b": [2]}]
    assert load_items(b"") == []


# -- per-issue logs: encode, parse, scan, repair -----------------------------------------


def make_event(issue_id: int, seq: int, data: dict[str, Any] | None = None) -> Event:
    kind = "issue.created" if seq == 1 else "comment.added"
    return Event(
        issue_id=issue_id,
        seq=seq,
        pos=issue_id * 1000 + seq,
        type=kind,
        at=f"2024-05-06T07:08:{seq % 60:02d}.123Z",
        actor=Actor("api", "nebula"),
        data=data if data is not None else ({"title": "t"} if seq == 1 else {"text": f"c{seq}"}),
    )


def write_log(folder: Path, events: list[Event]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{events[0].issue_id}.yaml"
    with path.open("ab") as handle:
        handle.write(b"".join(encode(e) for e in events))
    return path


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(yaml_objects, min_size=1, max_size=3), min_size=1, max_size=4))
def test_encode_parse_round_trip(batches: list[list[dict[str, Any]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        written: list[Event] = []
        for batch in batches:
            events = [make_event(7, len(written) + i + 1, data) for i, data in enumerate(batch)]
            write_log(folder, events)
            written.extend(events)
        data = (folder / "7.yaml").read_bytes()
        parsed = parse_log(7, data)
        assert parsed.events == written
        assert [strict(e.to_dict()) for e in parsed.events] == [
            strict(e.to_dict()) for e in written
        ]
        # each span is exactly that event's line
        for event, (offset, length) in zip(parsed.events, parsed.spans, strict=True):
            assert data[offset : offset + length] == encode(event)
        assert scan(folder) == {7: len(data)}
        assert repair_tail(folder, 7) is None  # nothing torn: nothing cut
        # any YAML parser reads the log as a list of the same mappings
        assert strict(yaml.load(data, Loader=yaml.CSafeLoader)) == strict(
            [e.to_dict() for e in written]
        )


def test_scan_ignores_other_files(tmp_path: Path) -> None:
    write_log(tmp_path, [make_event(3, 1)])
    (tmp_path / ".3.yaml.1234.tmp").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    (tmp_path / "03.yaml").write_bytes(b"x")  # not a canonical id
    assert set(scan(tmp_path)) == {3}


# -- torn tails ----------------------------------------------------------------------


def _write_good(folder: Path, issue_id: int = 1, count: int = 3) -> bytes:
    path = write_log(folder, [make_event(issue_id, seq) for seq in range(1, count + 1)])
    return path.read_bytes()


NEXT_LINE = dump_item(make_event(1, 4).to_dict())
TORN_TAILS = {
    "partial last line": NEXT_LINE[: len(NEXT_LINE) // 2],
    "partial line of one byte": NEXT_LINE[:1],
    "line of NUL bytes": b"\x00" * 64 + b"\n",
    "NUL block without newline": b"\x00" * 4096,
    "several NUL lines": b"\x00" * 10 + b"\n" + b"\x00" * 10 + b"\n",
    "complete event without newline": NEXT_LINE[:-1],
    "partial line then NULs": NEXT_LINE[:20] + b"\x00" * 100,
}


@pytest.mark.parametrize("tail", TORN_TAILS.values(), ids=TORN_TAILS.keys())
def test_repair_cuts_a_torn_tail(tmp_path: Path, tail: bytes) -> None:
    good = _write_good(tmp_path)
    with (tmp_path / "1.yaml").open("ab") as handle:
        handle.write(tail)
    repair = repair_tail(tmp_path, 1)
    assert repair == Repair(issue_id=1, cut_bytes=len(tail), kept_size=len(good))
    assert "events/1.yaml" in repair.describe() and str(len(tail)) in repair.describe()
    assert (tmp_path / "1.yaml").read_bytes() == good
    assert [e.seq for e in parse_log(1, good).events] == [1, 2, 3]
    assert repair_tail(tmp_path, 1) is None


MIDDLE_DAMAGE = {
    "NUL line": b"\x00" * 32 + b"\n",
    "partial event": NEXT_LINE[:30] + b"\n",
    "plain garbage": b"garbage here\n",
    "wrong keys": b"- {bogus: 1}\n",
    "scalar item": b"- nope\n",
}


@pytest.mark.parametrize("damage", MIDDLE_DAMAGE.values(), ids=MIDDLE_DAMAGE.keys())
def test_damage_in_the_middle_is_not_cut_and_is_named(tmp_path: Path, damage: bytes) -> None:
    lines = _write_good(tmp_path).splitlines(keepends=True)
    path = tmp_path / "1.yaml"
    path.write_bytes(lines[0] + damage + lines[1] + lines[2])
    before = path.read_bytes()
    assert repair_tail(tmp_path, 1) is None, "repair must only ever cut the tail"
    assert path.read_bytes() == before
    with pytest.raises(LogDamaged, match=r"events/1\.yaml: line 2"):
        parse_log(1, before)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([make_event(1, 1), make_event(1, 3)], "seq 3 where 2 was expected"),
        ([make_event(1, 1), make_event(2, 2)], "belongs to issue 2"),
        ([make_event(1, 1), replace(make_event(1, 2), pos=1)], "position 1, not above 1001"),
    ],
)
def test_a_log_out_of_order_is_damaged(tmp_path: Path, events: list[Event], message: str) -> None:
    data = b"".join(encode(e) for e in events)
    with pytest.raises(LogDamaged, match=message):
        parse_log(1, data)


@pytest.mark.parametrize("damage", MIDDLE_DAMAGE.values(), ids=MIDDLE_DAMAGE.keys())
async def test_verify_lists_damage_in_the_middle(tmp_path: Path, damage: bytes) -> None:
    """`hydraissue verify` answers a readable list, not a traceback."""
    folder = tmp_path / "events"
    lines = _write_good(folder).splitlines(keepends=True)
    _write_good(folder, issue_id=2)
    (folder / "1.yaml").write_bytes(lines[0] + damage + lines[1] + lines[2])
    problems = await verify(tmp_path)
    assert any(p.startswith("events/1.yaml") for p in problems), problems


# -- the app on a torn tail ----------------------------------------------------------


async def _seed(data_dir: Path) -> None:
    """Three issues with a few events each; a clean stop writes every projection."""
    service = IssueService(data_dir)
    await service.start()
    api = Actor("api")
    for n in range(3):
        created = await service.handle(CreateIssue(title=f"issue {n} \u2028 😀"), api)
        issue_id = created.issue.id
        await service.handle(AddComment(issue_id, "a", f"first on {n}"), api)
        await service.handle(UpdateIssue(issue_id, {"status": "groomed"}), api)
    await service.stop()


@pytest.mark.parametrize("index", ["current index", "no index"])
@pytest.mark.parametrize("tail", TORN_TAILS.values(), ids=TORN_TAILS.keys())
async def test_app_starts_on_a_torn_tail(
    aiohttp_client: Any,
    config: Any,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
    tail: bytes,
    index: str,
) -> None:
    from web.app import create_app

    await _seed(data_dir)
    log_path = data_dir / "events" / "2.yaml"
    good = log_path.read_bytes()
    with log_path.open("ab") as handle:
        handle.write(tail)
    if index == "no index":
        (data_dir / "issues.yaml").unlink()
    caplog.set_level(logging.INFO)
    client = await aiohttp_client(create_app(config))
    repaired = [r for r in caplog.records if "events/2.yaml" in r.getMessage()]
    assert repaired, "the repair was not logged"
    assert any(r.levelno >= logging.WARNING for r in repaired)
    assert f"({len(tail)} bytes)" in repaired[0].getMessage()
    assert log_path.read_bytes() == good
    for issue_id in (1, 2, 3):
        resp = await client.get(f"/api/v1/issues/{issue_id}/events", headers=AUTH)
        assert resp.status == 200
        events = await resp.json()
        assert [e["seq"] for e in events] == [1, 2, 3]
        resp = await client.get(f"/api/v1/issues/{issue_id}", headers=AUTH)
        issue = await resp.json()
        assert issue["status"] == "groomed"
        assert [c["text"] for c in issue["comments"]] == [f"first on {issue_id - 1}"]
    # and it keeps working: the next write follows the kept events
    resp = await client.patch("/api/v1/issues/2", json={"status": "planning"}, headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["status"] == "planning"
    events = await (await client.get("/api/v1/issues/2/events", headers=AUTH)).json()
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    positions = [e["pos"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 4


async def test_app_starts_when_a_torn_create_is_the_only_event(
    aiohttp_client: Any, config: Any, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash while creating issue 4 leaves events/4.yaml holding only a torn line."""
    from web.app import create_app

    await _seed(data_dir)
    created = dump_item(make_event(4, 1).to_dict())
    (data_dir / "events" / "4.yaml").write_bytes(created[: len(created) // 2])
    caplog.set_level(logging.INFO)
    client = await aiohttp_client(create_app(config))
    assert any("events/4.yaml" in r.getMessage() for r in caplog.records)
    resp = await client.get("/api/v1/issues/4", headers=AUTH)
    assert resp.status == 404
    for issue_id in (1, 2, 3):
        resp = await client.get(f"/api/v1/issues/{issue_id}", headers=AUTH)
        assert resp.status == 200
    resp = await client.post("/api/v1/issues", json={"title": "after the crash"}, headers=AUTH)
    assert resp.status == 201
    assert (await resp.json())["id"] >= 4
