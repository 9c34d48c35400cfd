"""Invariant 3 under concurrency: a subscriber sees every committed event exactly once,
in position order, and positions never fill in behind it.

Many writers append to many issues at once through the real file store (group commit),
yielding at random points, while a real dispatcher subscriber records what it is given.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.dispatcher import Dispatcher
from events.filestore import FileEventStore
from events.model import Actor, Event, NewEvent
from events.store import Append, SequenceConflict, UnknownIssue

ACTOR = Actor("api", "prop")

op = st.tuples(
    st.sampled_from(["create", "comment", "comments"]),
    st.integers(0, 15),  # which issue (of those that exist)
    st.integers(0, 3),  # how many times to yield first
)


async def run(ops: list[tuple[str, int, int]], writers: int, seed: int, root: Path) -> None:
    store = FileEventStore(root, recent=16)  # small: subscribers also read from the logs
    await store.open()
    seen: list[Event] = []
    batches: list[list[int]] = []

    async def record(events: Sequence[Event]) -> None:
        batches.append([e.pos for e in events])
        seen.extend(events)
        await asyncio.sleep(0)  # a subscriber that takes its time

    dispatcher = Dispatcher(store, root / "subscribers", checkpoint_every=0.01)
    dispatcher.add("recorder", record, batch=7)
    dispatcher.start()
    rng = random.Random(seed)
    issues: list[int] = []
    committed: list[Event] = []

    async def writer(mine: list[tuple[str, int, int]]) -> None:
        for kind, target, yields in mine:
            for _ in range(yields):
                await asyncio.sleep(0)
            if kind == "create" or not issues:
                events = await store.append(
                    Append(None, 0, [NewEvent("issue.created", {"n": len(committed)})], ACTOR)
                )
                issues.append(events[0].issue_id)
            else:
                issue_id = issues[target % len(issues)]
                count = 3 if kind == "comments" else 1
                while True:  # a concurrent writer may move the issue on: retry on conflict
                    seq = store.seq_of(issue_id)
                    assert seq is not None
                    try:
                        events = await store.append(
                            Append(
                                issue_id,
                                seq,
                                [NewEvent("comment.added", {"k": k}) for k in range(count)],
                                ACTOR,
                            )
                        )
                        break
                    except SequenceConflict:
                        await asyncio.sleep(0)
            committed.extend(events)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() / 2000)

    shares: list[list[tuple[str, int, int]]] = [[] for _ in range(writers)]
    for n, item in enumerate(ops):
        shares[n % writers].append(item)
    try:
        await asyncio.gather(*(writer(share) for share in shares))
        await dispatcher.idle(timeout=10)
        positions = [e.pos for e in seen]
        # exactly once, in order, and no position appears behind one already seen
        assert positions == list(range(1, store.head + 1))
        assert all(b == sorted(b) for b in batches)
        assert sorted(e.pos for e in committed) == positions
        assert seen == await store.read_after(0, 10_000)
        # every issue's events have seq 1, 2, …
        for issue_id in issues:
            assert [e.seq for e in await store.read_issue(issue_id)] == list(
                range(1, (store.seq_of(issue_id) or 0) + 1)
            )
    finally:
        await dispatcher.stop()
        await store.close()

    # A restart resumes from the checkpoint: nothing is missed, nothing is new.
    again = FileEventStore(root, recent=16)
    await again.open()
    resumed: list[Event] = []

    async def record_again(events: Sequence[Event]) -> None:
        resumed.extend(events)

    later = Dispatcher(again, root / "subscribers")
    later.add("recorder", record_again)
    later.start()
    try:
        await again.append(Append(None, 0, [NewEvent("issue.created", {})], ACTOR))
        await later.idle(timeout=10)
        assert [e.pos for e in resumed] == [again.head]
    finally:
        await later.stop()
        await again.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(op, min_size=1, max_size=60), st.integers(1, 12), st.integers(0, 1000))
def test_a_subscriber_sees_every_commit_once_in_position_order(
    ops: list[tuple[str, int, int]], writers: int, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(ops, writers, seed, Path(tmp) / "data"))


async def test_an_append_to_a_missing_issue_does_not_block_the_others(tmp_path: Path) -> None:
    store = FileEventStore(tmp_path)
    await store.open()
    try:
        results = await asyncio.gather(
            store.append(Append(None, 0, [NewEvent("issue.created", {})], ACTOR)),
            store.append(Append(42, 3, [NewEvent("comment.added", {})], ACTOR)),
            store.append(Append(None, 0, [NewEvent("issue.created", {})], ACTOR)),
            return_exceptions=True,
        )
        assert isinstance(results[1], UnknownIssue)
        assert [r[0].pos for r in (results[0], results[2]) if isinstance(r, list)] == [1, 2]
    finally:
        await store.close()


async def test_a_subscriber_that_keeps_up_saves_its_checkpoint_at_a_pace_and_when_quiet(
    tmp_path: Path,
) -> None:
    """Under a stream of commits a subscriber catches up after each one; it must not
    replace its checkpoint file per commit (each save is two fsyncs beside the store's
    commits), yet once writes stop its checkpoint reaches the head without an idle()."""
    store = FileEventStore(tmp_path / "data")
    await store.open()

    async def keep_up(events: Sequence[Event]) -> None:
        pass

    folder = tmp_path / "data" / "subscribers"
    dispatcher = Dispatcher(store, folder, checkpoint_every=0.2)
    dispatcher.add("keeper", keep_up)
    dispatcher.start()
    checkpoint = dispatcher.path("keeper")
    files: set[int] = set()  # each save replaces the file: a new inode
    try:
        started = asyncio.get_running_loop().time()
        for _ in range(200):
            await store.append(Append(None, 0, [NewEvent("issue.created", {})], ACTOR))
            await asyncio.sleep(0.002)  # let the subscriber catch up after each commit
            if checkpoint.exists():
                files.add(checkpoint.stat().st_ino)
        took = asyncio.get_running_loop().time() - started
        assert dispatcher.subscribers["keeper"].position >= store.head - 1  # it kept up
        assert len(files) <= took / 0.2 + 2, f"{len(files)} saves in {took:.2f} s"
        for _ in range(100):  # quiet now: saved within checkpoint_every, no idle() asked
            if dispatcher.read_checkpoint("keeper") == store.head:
                break
            await asyncio.sleep(0.01)
        assert dispatcher.read_checkpoint("keeper") == store.head
    finally:
        await dispatcher.stop()
        await store.close()
