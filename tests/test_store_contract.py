"""The event store contract: one suite every store implementation runs.

After the pattern of eventsourcing's recorder tests: the suite is written against
``events.store.EventStore`` only, and each implementation gives a factory that opens,
reopens and damages its own storage. Today the file store runs it; a PostgreSQL store
will have to pass the same tests.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from events.filestore import FileEventStore
from events.model import Actor, Event, NewEvent
from events.store import (
    Append,
    EventStore,
    IssueUnavailable,
    SequenceConflict,
    StorageFailed,
    UnknownIssue,
    follow,
)

API = Actor("api", "contract")


class FileStoreFactory:
    """Opens the file store on a data dir in ``tmp_path`` and damages it on request."""

    def __init__(self, root: Path, recent: int) -> None:
        self.root = root
        self.recent = recent
        self.opened: list[EventStore] = []

    async def open(self) -> EventStore:
        store = FileEventStore(self.root, recent=self.recent)
        await store.open()
        self.opened.append(store)
        return store

    async def reopen(self, store: EventStore) -> EventStore:
        await store.close()
        return await self.open()

    async def crash_and_reopen(self, store: EventStore, torn: bytes) -> EventStore:
        """As after kill -9 mid-append: the store is abandoned, a log has a torn tail."""
        await store.close()
        victim = max(int(p.stem) for p in (self.root / "events").glob("*.yaml"))
        with (self.root / "events" / f"{victim}.yaml").open("ab") as handle:
            handle.write(torn)
        return await self.open()

    def damage(self, issue_id: int) -> None:
        """Damage inside the log (not at the end): a line that is not an event."""
        path = self.root / "events" / f"{issue_id}.yaml"
        lines = path.read_bytes().splitlines(keepends=True)
        lines.insert(1, b"- {this is not json}\n")
        path.write_bytes(b"".join(lines))

    def fail_writes(self, monkeypatch: pytest.MonkeyPatch, code: int) -> Callable[[], None]:
        """The disk refuses writes (``code``) until the returned function is called."""
        real = os.write

        def refuse(fd: int, data: Any) -> int:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr("events.filestore.os.write", refuse)
        return lambda: monkeypatch.setattr("events.filestore.os.write", real)

    def lose_position_index(self) -> None:
        (self.root / "positions.idx").unlink()


@pytest.fixture(params=["file"])
async def factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[FileStoreFactory]:
    made = FileStoreFactory(tmp_path / "data", recent=8)
    yield made
    for store in made.opened:
        await store.close()


async def create(store: EventStore, title: str = "t", *more: str) -> list[Event]:
    events = [NewEvent("issue.created", {"title": title})]
    events += [NewEvent("comment.added", {"text": text}) for text in more]
    return await store.append(Append(None, 0, events, API))


async def comment(store: EventStore, issue_id: int, seq: int, text: str = "c") -> list[Event]:
    return await store.append(
        Append(issue_id, seq, [NewEvent("comment.added", {"text": text})], API)
    )


def shape(events: list[Event]) -> list[tuple[int, int, int, str, dict[str, Any]]]:
    return [(e.issue_id, e.seq, e.pos, e.type, e.data) for e in events]


# -- append and read ---------------------------------------------------------------------


async def test_append_then_read_back(factory: FileStoreFactory) -> None:
    store = await factory.open()
    first = await create(store, "one", "hello")
    second = await create(store, "two")
    assert [(e.issue_id, e.seq, e.pos) for e in first + second] == [(1, 1, 1), (1, 2, 2), (2, 1, 3)]
    assert all(e.actor == API and e.at.endswith("Z") for e in first + second)
    assert await store.read_issue(1) == first
    assert await store.read_after(0, 100) == first + second
    assert await store.read_after(2, 100) == second
    assert store.head == 3
    assert store.issue_ids() == [1, 2]


async def test_everything_survives_a_reopen(factory: FileStoreFactory) -> None:
    store = await factory.open()
    created = [await create(store, f"issue {n}", "a", "b") for n in range(12)]
    store = await factory.reopen(store)
    assert store.head == 36
    assert await store.read_after(0, 1000) == [e for batch in created for e in batch]
    assert await store.read_issue(5) == created[4]
    later = await comment(store, 5, 3)
    assert (later[0].seq, later[0].pos) == (4, 37)
    assert (await create(store))[0].issue_id == 13  # ids continue after the highest


async def test_meta_is_committed_with_the_first_event_only(factory: FileStoreFactory) -> None:
    store = await factory.open()
    events = [NewEvent("issue.created", {"title": "x"}), NewEvent("attachment.added", {})]
    meta = {"idempotency": {"key": "k", "fingerprint": "f"}}
    committed = await store.append(Append(None, 0, events, API, meta))
    assert [e.meta for e in committed] == [meta, None]
    store = await factory.reopen(store)
    assert [e.meta for e in await store.read_issue(1)] == [meta, None]


async def test_reserved_id_creates_that_issue(factory: FileStoreFactory) -> None:
    store = await factory.open()
    reserved = store.reserve_id()
    other = await create(store)
    assert other[0].issue_id != reserved
    events = await store.append(Append(reserved, 0, [NewEvent("issue.created", {})], API))
    assert events[0].issue_id == reserved and events[0].seq == 1


async def test_a_chosen_id_creates_that_issue_and_later_ids_pass_it(
    factory: FileStoreFactory,
) -> None:
    """An import keeps the original's ids: any free id can be chosen, in any order."""
    store = await factory.open()
    await create(store)  # issue 1
    for chosen in (7, 3):
        assert store.reserve_id(chosen) == chosen
        events = await store.append(Append(chosen, 0, [NewEvent("issue.imported", {})], API))
        assert (events[0].issue_id, events[0].seq) == (chosen, 1)
    for taken in (1, 3, 7):
        with pytest.raises(SequenceConflict):
            store.reserve_id(taken)
    assert [e[0].issue_id for e in [await create(store) for _ in range(6)]] == [2, 4, 5, 6, 8, 9]
    with pytest.raises(SequenceConflict):
        store.reserve_id(9)  # handed out (and created) already
    with pytest.raises(ValueError):
        store.reserve_id(0)
    store = await factory.reopen(store)
    assert (await create(store))[0].issue_id == 10  # after the highest id with a log
    assert store.reserve_id(12) == 12 and (await create(store))[0].issue_id == 11


# -- the expected-sequence check -----------------------------------------------------------


async def test_a_stale_expected_seq_is_a_conflict_and_writes_nothing(
    factory: FileStoreFactory,
) -> None:
    store = await factory.open()
    await create(store)
    await comment(store, 1, 1)
    with pytest.raises(SequenceConflict) as raised:
        await comment(store, 1, 1)
    assert (raised.value.expected, raised.value.actual) == (1, 2)
    assert len(await store.read_issue(1)) == 2
    assert store.head == 2


async def test_creating_an_existing_issue_is_a_conflict(factory: FileStoreFactory) -> None:
    store = await factory.open()
    await create(store)
    with pytest.raises(SequenceConflict):
        await store.append(Append(1, 0, [NewEvent("issue.created", {})], API))


async def test_appending_to_an_unknown_issue_is_refused(factory: FileStoreFactory) -> None:
    store = await factory.open()
    with pytest.raises(UnknownIssue):
        await comment(store, 7, 3)
    with pytest.raises(UnknownIssue):  # an id nobody reserved cannot be created either
        await store.append(Append(99, 0, [NewEvent("issue.created", {})], API))
    with pytest.raises(UnknownIssue):
        await store.read_issue(7)
    assert store.head == 0


# -- positions in commit order -------------------------------------------------------------


async def test_positions_follow_commit_order_under_concurrent_writers(
    factory: FileStoreFactory,
) -> None:
    store = await factory.open()
    seen: list[Event] = []
    store.listen(seen.extend)
    issues = [(await create(store, f"i{n}"))[0].issue_id for n in range(10)]
    seqs = dict.fromkeys(issues, 1)
    locks = {i: asyncio.Lock() for i in issues}
    rng = random.Random(5)

    async def writer(n: int) -> None:
        for _ in range(15):
            issue_id = rng.choice(issues)
            async with locks[issue_id]:
                events = await comment(store, issue_id, seqs[issue_id], f"w{n}")
                # read-your-writes: the listener saw it before the append returned
                assert seen[-1].pos >= events[-1].pos and events[-1] in seen
                seqs[issue_id] = events[-1].seq
            await asyncio.sleep(rng.random() / 1000)

    await asyncio.gather(*(writer(n) for n in range(16)))
    assert [e.pos for e in seen] == list(range(1, len(seen) + 1))
    assert await store.read_after(0, 10_000) == seen
    for issue_id in issues:
        assert [e.seq for e in await store.read_issue(issue_id)] == list(
            range(1, seqs[issue_id] + 1)
        )


async def test_an_append_that_cannot_be_stored_fails_alone(factory: FileStoreFactory) -> None:
    """Appends committed together: one whose data cannot be encoded (text that is not
    UTF-8) fails, the others commit with consecutive positions, each create keeping
    its own id."""
    store = await factory.open()
    await create(store, "first")
    results = await asyncio.gather(
        create(store, "a"),
        store.append(Append(None, 0, [NewEvent("issue.created", {"title": "\udcff"})], API)),
        comment(store, 1, 1, "b"),
        create(store, "c"),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    committed = [e for r in results if isinstance(r, list) for e in r]
    assert [e.pos for e in committed] == [2, 3, 4]
    assert [(e.issue_id, e.type) for e in committed] == [
        (2, "issue.created"),
        (1, "comment.added"),
        (4, "issue.created"),  # 3 was the failed create's
    ]
    store = await factory.reopen(store)
    assert await store.read_after(1, 100) == committed
    assert 3 not in store.issue_ids()


async def test_follow_from_a_checkpoint_sees_each_later_event_once(
    factory: FileStoreFactory,
) -> None:
    store = await factory.open()
    for n in range(5):
        await create(store, f"before {n}", "x")
    store = await factory.reopen(store)  # older events now come from storage, not memory
    received: list[Event] = []

    async def subscriber() -> None:
        async for batch in follow(store, after=4, batch=3):
            received.extend(batch)
            if received[-1].pos >= 20:
                return

    task = asyncio.create_task(subscriber())
    for n in range(5):
        await create(store, f"after {n}", "y")
    await asyncio.wait_for(task, 5)
    assert [e.pos for e in received] == list(range(5, 21))
    assert received == (await store.read_after(4, 100))


async def test_read_after_crosses_from_storage_into_memory(factory: FileStoreFactory) -> None:
    store = await factory.open()
    for n in range(10):
        await create(store, f"old {n}")
    store = await factory.reopen(store)
    for n in range(10):
        await create(store, f"new {n}")  # memory keeps 8 (the factory's recent size)
    everything = await store.read_after(0, 1000)
    assert [e.pos for e in everything] == list(range(1, 21))
    for start in range(0, 20, 3):
        page = await store.read_after(start, 5)
        assert [e.pos for e in page] == list(range(start + 1, min(start + 5, 20) + 1))


async def test_wait_for_wakes_on_a_commit_and_times_out(factory: FileStoreFactory) -> None:
    store = await factory.open()
    assert await store.wait_for(0, timeout=0.05) is False
    waiter = asyncio.create_task(store.wait_for(0, timeout=5))
    await asyncio.sleep(0)
    await create(store)
    assert await waiter is True


async def test_a_waiter_cancelled_as_a_commit_wakes_it_is_cancelled(
    factory: FileStoreFactory,
) -> None:
    """Shutdown cancels subscribers that wait for commits: a cancel that arrives in the
    same turn as the commit must still cancel (asyncio.wait_for on 3.11 swallowed it,
    and the subscriber ran on)."""
    store = await factory.open()
    waiter = asyncio.create_task(store.wait_for(store.head, timeout=5))
    await asyncio.sleep(0)
    appended = asyncio.create_task(create(store))
    while store.head == 0:  # the commit is published: the waiter's wake-up is due
        await asyncio.sleep(0)
    waiter.cancel()
    await appended
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_changed_after_names_the_issues_written_since(factory: FileStoreFactory) -> None:
    store = await factory.open()
    for n in range(4):
        await create(store, str(n))
    checkpoint = store.head
    await comment(store, 2, 1)
    await comment(store, 4, 1)
    store = await factory.reopen(store)
    assert await store.changed_after(checkpoint) == {2, 4}
    assert await store.changed_after(checkpoint, checkpoint + 1) == {2}
    assert await store.changed_after(0, checkpoint) == {1, 2, 3, 4}
    assert await store.changed_after(store.head) == set()


# -- crashes and damage ---------------------------------------------------------------------


@pytest.mark.parametrize("torn", [b'- {"issue_id": 3, "se', b"\x00" * 40, b"- {bad}\n"])
async def test_a_torn_tail_is_cut_on_open(factory: FileStoreFactory, torn: bytes) -> None:
    store = await factory.open()
    for n in range(3):
        await create(store, str(n), "c")
    before = await store.read_after(0, 100)
    store = await factory.crash_and_reopen(store, torn)
    assert await store.read_after(0, 100) == before
    assert (await comment(store, 3, 2))[0].pos == 7


async def test_a_damaged_log_takes_only_its_issue_out(factory: FileStoreFactory) -> None:
    store = await factory.open()
    for n in range(3):
        await create(store, str(n), "c")
    await store.close()
    factory.damage(2)
    store = await factory.open()
    assert set(store.damaged) == {2}
    assert "events/2.yaml: line 2" in store.damaged[2]
    with pytest.raises(IssueUnavailable):
        await store.read_issue(2)
    with pytest.raises(IssueUnavailable):
        await comment(store, 2, 2)
    assert len(await store.read_issue(1)) == 2
    assert (await comment(store, 3, 2))[0].seq == 3


async def test_a_refused_write_commits_nothing_and_the_next_one_works(
    factory: FileStoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await factory.open()
    seen: list[Event] = []
    store.listen(seen.extend)
    await create(store, "kept")
    restore = factory.fail_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(StorageFailed) as refused:
        await asyncio.gather(create(store, "lost"), comment(store, 1, 1))
    assert refused.value.reason == os.strerror(errno.ENOSPC)
    restore()
    assert store.head == 1 and len(seen) == 1
    after = await comment(store, 1, 1)
    assert after[0].pos == 2  # the refused batch left no gap and no fill-in
    store = await factory.reopen(store)
    assert [e.data for e in await store.read_after(0, 10)] == [{"title": "kept"}, {"text": "c"}]


async def test_a_lost_position_index_is_rebuilt(factory: FileStoreFactory) -> None:
    store = await factory.open()
    for n in range(6):
        await create(store, str(n), "c")
    before = await store.read_after(0, 100)
    await store.close()
    factory.lose_position_index()
    store = await factory.open()
    assert await store.read_after(0, 100) == before
    assert store.head == 12


def test_shape_helper_is_stable() -> None:
    assert shape([]) == []
