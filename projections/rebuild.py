"""Replay and verify: rebuild every projection from the event store, or check they agree.

Both run with the server stopped (the CLI takes the data dir lock). Replay opens the
store (repairing torn tails), then folds the logs in chunks of 512 issues and writes
their issue files (fsyncs spread over a pool; a file that already says exactly what
its log says is left alone). A big store is replayed by one worker process per core,
each with its own read-only view of the store: folding and rendering are CPU work that
one interpreter would serialise. Then files of deleted issues go, and the snapshots
and the issue-files checkpoint are written. A damaged log does not stop it: that issue
is left out and reported.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from events.dispatcher import write_checkpoint
from events.filestore import FileEventStore
from events.fsio import FsyncMap
from events.model import Event
from hydraissue.evolve import evolve, fold
from hydraissue.model import Issue
from projections.files import ProjectionFiles
from projections.keys import KeyRecord, record_for
from projections.nims import NAME as NIM_SUBSCRIBER
from projections.nims import NimTrails, Trail, TrailEntry, trail_entries
from projections.rows import IndexRow, row_for
from projections.writer import NAME as FILES_SUBSCRIBER

Progress = Callable[[int, int], None]
CHUNK = 512
SUBSCRIBERS = "subscribers"


@dataclass(slots=True)
class Folded:
    """One issue folded from its log, with the idempotency records its events carry."""

    issue: Issue
    events: int
    keys: list[KeyRecord] = field(default_factory=list)


@dataclass(slots=True)
class ReplayResult:
    issues: int = 0
    deleted: int = 0
    events: int = 0
    repairs: list[str] = field(default_factory=list)
    damaged: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fold_events(events: list[Event], after: int = 0) -> Folded:
    """The state of one issue, and the key records of its events above ``after``."""
    if not any(e.meta and e.pos > after for e in events):
        folded = fold(events)  # one pass, no state per event
        assert folded is not None  # the store never returns an empty log
        return Folded(folded, len(events))
    state: Issue | None = None
    keys: list[KeyRecord] = []
    for event in events:
        state = evolve(state, event)
        if event.meta and event.pos > after:
            record = record_for(event, state)
            if record is not None:
                keys.append(record)
    assert state is not None
    return Folded(state, len(events), keys)


async def fold_all(
    store: FileEventStore, progress: Progress | None = None
) -> tuple[dict[int, Folded], dict[int, str]]:
    folded: dict[int, Folded] = {}
    problems: dict[int, str] = dict(store.damaged)
    ids = [i for i in store.issue_ids() if i not in problems]
    done = 0
    for start in range(0, len(ids), CHUNK):
        for issue_id, result in await store.read_many(ids[start : start + CHUNK]):
            if isinstance(result, list):
                folded[issue_id] = fold_events(result)
            else:
                problems[issue_id] = str(result)
        done = min(len(ids), start + CHUNK)
        if progress:
            progress(done, len(ids))
    if progress and not ids:
        progress(0, 0)
    return folded, problems


@dataclass(slots=True)
class ChunkResult:
    """What replaying one chunk of issues produced (returned from a worker process)."""

    rows: list[IndexRow] = field(default_factory=list)
    keys: list[KeyRecord] = field(default_factory=list)
    live: list[int] = field(default_factory=list)
    events: int = 0
    deleted: int = 0
    damaged: dict[int, str] = field(default_factory=dict)
    trails: dict[str, list[TrailEntry]] = field(default_factory=dict)


def replay_chunk(
    store: FileEventStore, files: ProjectionFiles, fsyncs: FsyncMap, ids: Sequence[int]
) -> ChunkResult:
    """Fold these issues' logs and write their files (those that differ)."""
    out = ChunkResult()
    issues: list[Issue] = []
    for issue_id, read in store.read_logs(ids):
        if not isinstance(read, list):
            out.damaged[issue_id] = str(read)
            continue
        item = fold_events(read)
        for event in read:
            for agent, entry in trail_entries(event):
                out.trails.setdefault(agent, []).append(entry)
        out.rows.append(row_for(item.issue))
        out.keys.extend(item.keys)
        out.events += item.events
        if item.issue.deleted:
            out.deleted += 1
        else:
            out.live.append(issue_id)
            issues.append(item.issue)
    files.write_issues(issues, (), fsyncs, True)
    return out


class _Worker:
    """One replay worker process's own read-only view of the store (set up once)."""

    store: FileEventStore
    files: ProjectionFiles
    pool: ThreadPoolExecutor


def _start_worker(data_dir: str) -> None:
    _Worker.store = FileEventStore(Path(data_dir), read_only=True)
    asyncio.run(_Worker.store.open())
    _Worker.files = ProjectionFiles(Path(data_dir))
    _Worker.pool = ThreadPoolExecutor(8, thread_name_prefix="replay-fsync")


def _worker_chunk(ids: list[int]) -> ChunkResult:
    return replay_chunk(_Worker.store, _Worker.files, _Worker.pool.map, ids)


def _workers(issues: int) -> int:
    """Processes to replay with: one per core for a big store (folding and rendering
    is CPU work the GIL would serialise), none of its own for a small one."""
    if issues < 8 * CHUNK:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


async def replay(data_dir: Path, progress: Progress | None = None) -> ReplayResult:
    store = FileEventStore(data_dir)
    report = await store.open()  # repairs torn tails first: workers then read a whole store
    result = ReplayResult(repairs=report.repairs, notes=report.notes)
    files = ProjectionFiles(data_dir)
    files.prepare()
    rows: list[IndexRow] = []
    keys: list[KeyRecord] = []
    live: set[int] = set()
    trails: dict[str, list[TrailEntry]] = {}
    ids = [i for i in store.issue_ids() if i not in store.damaged]
    result.damaged = dict(store.damaged)
    chunks = [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]

    def merge(done: int, chunk: ChunkResult) -> None:
        rows.extend(chunk.rows)
        keys.extend(chunk.keys)
        live.update(chunk.live)
        result.events += chunk.events
        result.deleted += chunk.deleted
        result.issues += len(chunk.live)
        result.damaged.update(chunk.damaged)
        for agent, entries in chunk.trails.items():
            trails.setdefault(agent, []).extend(entries)
        if progress:
            progress(min(len(ids), done * CHUNK), len(ids))

    try:
        workers = _workers(len(ids))
        if workers > 1:
            loop = asyncio.get_running_loop()
            with ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),  # never fork a process that has threads
                initializer=_start_worker,
                initargs=(str(data_dir),),
            ) as processes:
                futures = [loop.run_in_executor(processes, _worker_chunk, c) for c in chunks]
                for done, future in enumerate(futures, start=1):
                    merge(done, await future)
        else:
            with ThreadPoolExecutor(16, thread_name_prefix="replay-fsync") as pool:
                for done, chunk in enumerate(chunks, start=1):
                    merge(
                        done, await asyncio.to_thread(replay_chunk, store, files, pool.map, chunk)
                    )
        rows.sort(key=lambda row: row.id)
        stale = [
            int(entry.name.removesuffix(".yaml"))
            for entry in os.scandir(files.issues_dir)
            if entry.name.endswith(".yaml")
            and entry.name.removesuffix(".yaml").isdigit()
            and int(entry.name.removesuffix(".yaml")) not in live
        ]
        files.write_issues([], removed=stale)
        head = store.head
        files.write_snapshot(rows, keys, head)
        write_checkpoint(data_dir / SUBSCRIBERS, FILES_SUBSCRIBER, head)
        audit = NimTrails(data_dir)
        audit.trails = {agent: Trail(sorted(e, key=lambda x: x.pos)) for agent, e in trails.items()}
        audit.write_all()
        write_checkpoint(data_dir / SUBSCRIBERS, NIM_SUBSCRIBER, head)
    finally:
        await store.close()
    if progress and not ids:
        progress(0, 0)
    return result


async def verify(data_dir: Path, progress: Progress | None = None) -> list[str]:
    """Every disagreement between logs and projections, as readable lines."""
    store = FileEventStore(data_dir, read_only=True)
    await store.open()
    try:
        return await _verify(store, data_dir, progress)
    finally:
        await store.close()


async def _verify(store: FileEventStore, data_dir: Path, progress: Progress | None) -> list[str]:
    problems: list[str] = []
    for issue_id, cut in sorted(store.torn.items()):
        problems.append(
            f"events/{issue_id}.yaml: torn last event ({cut} bytes); "
            "start the server or run replay to cut it"
        )
    if store.head and not store.index_loaded:
        problems.append("positions.idx: missing or unreadable; the next start rebuilds it")
    elif store.reindexed:
        listed = ", ".join(map(str, store.reindexed[:10]))
        problems.append(
            f"positions.idx: behind the logs of {len(store.reindexed)} issue(s) ({listed}); "
            "the next start brings it up to date"
        )
    folded, damaged = await fold_all(store, progress)
    problems.extend(damaged[i] for i in sorted(damaged))
    files = ProjectionFiles(data_dir)
    logged = set(store.issue_ids())
    for issue_id, item in sorted(folded.items()):
        path = files.issue_path(issue_id)
        if item.issue.deleted:
            if path.exists():
                problems.append(f"issues/{issue_id}.yaml: exists but the issue was deleted")
            continue
        try:
            if path.read_bytes() == files.render_issue(item.issue):
                continue  # byte for byte what replay writes: no need to parse it
        except OSError:
            pass
        on_disk = files.read_issue(issue_id)
        if on_disk is None:
            problems.append(f"issues/{issue_id}.yaml: missing or unreadable")
        elif on_disk != item.issue:
            problems.append(f"issues/{issue_id}.yaml: differs from its event log")
    if files.issues_dir.is_dir():
        for entry in sorted(os.scandir(files.issues_dir), key=lambda e: e.name):
            stem = entry.name.removesuffix(".yaml")
            if entry.name.endswith(".yaml") and stem.isdigit() and int(stem) not in logged:
                problems.append(f"issues/{entry.name}: has no event log")
    index = files.read_index()
    if index is None:
        problems.append("issues.yaml: missing or unreadable")
    else:
        checkpoint, rows = index
        by_id = {row.id: row for row in rows}
        for issue_id, item in sorted(folded.items()):
            row = by_id.pop(issue_id, None)
            if row is None:
                problems.append(f"issues.yaml: no row for issue {issue_id}")
            elif row != row_for(item.issue):
                problems.append(f"issues.yaml: row for issue {issue_id} differs from its log")
        problems.extend(
            f"issues.yaml: row for issue {i} has no event log"
            for i in sorted(by_id)
            if i not in logged
        )
        if checkpoint != store.head:
            problems.append(
                f"issues.yaml: checkpoint {checkpoint} but the logs end at {store.head}"
            )
    return problems
