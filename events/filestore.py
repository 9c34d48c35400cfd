"""The file event store: per-issue YAML logs under ``events/``, committed by group commit.

**Group commit.** Every append is queued; one writer task takes everything queued,
stamps it (ids, seq, positions in queue order, one time), and hands the whole batch to
one worker thread, which appends each issue's lines, fsyncs every touched log (spread
over a small pool, so the file system commits them together), fsyncs ``events/`` once
when the batch created logs, and records the positions in the position index. Only
then is the batch published, in one piece: commit listeners first (the read model),
then the waiting appends. The next batch starts after that, so positions are handed
out in commit order and nothing below a published position can appear later.

**All or nothing.** If the disk refuses any part of a batch, every log the batch
touched is cut back to its size before the batch (new logs removed) and each append
fails with StorageFailed; the positions are reused. If even that clean-up fails, the
store refuses every write until it is restarted (start-up cuts the unpublished tail).

**Opening.** The position index is checked against a directory scan of log sizes;
a log whose size differs is repaired (a torn last line is cut) and re-read, a log that
cannot be read is *damaged*: that issue is unavailable, every other one works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from events.clock import utc_now
from events.fsio import fsync_dir
from events.logs import (
    SUFFIX,
    LogDamaged,
    ParsedLog,
    encode,
    parse_event_line,
    parse_log,
    repair_tail,
    scan,
    torn_tail,
)
from events.model import Event
from events.positions import PositionIndex
from events.store import (
    Append,
    CommitListener,
    EventStore,
    IssueUnavailable,
    OpenReport,
    SequenceConflict,
    StorageFailed,
    StoreError,
    UnknownIssue,
)

log = logging.getLogger("hydraissue.store")

MAX_BATCH = 512  # appends per group commit
RECENT = 8192  # committed events kept in memory for subscribers and the live feed
# ... holding at most this much of their encoded size: 8,192 reports of 25 KB each would
# keep 200 MB of memory alive (measured: 23 KB per large report beyond its JSON).
RECENT_BYTES = 16 * 1024 * 1024
_SEQ_MASK = (1 << 32) - 1  # the seq part of a packed per-issue log record
FSYNC_THREADS = 17  # 16 logs in flight, and the folder's fsync beside them
READ_CHUNK = 512  # ids per worker-thread call when reading many logs


@dataclass(slots=True)
class _Pending:
    append: Append
    future: asyncio.Future[list[Event]]
    issue_id: int | None = None  # a create's id, once a plan reserved it (kept if re-planned)


@dataclass(slots=True)
class _Planned:
    pending: _Pending
    issue_id: int
    events: list[Event]
    new: bool
    encoded: list[bytes] = field(default_factory=list)

    @property
    def lines(self) -> list[int]:
        return [len(line) for line in self.encoded]


@dataclass(slots=True)
class _Touched:
    issue_id: int
    path: str
    fd: int
    before: int
    new: bool


class _CleanupFailed(Exception):
    """A failed batch could not be cut back: the logs may hold unpublished events."""

    def __init__(self, reason: str, cuts: list[tuple[str, int, bool]]) -> None:
        super().__init__(reason)
        self.cuts = cuts  # (path, size to cut back to, remove the file) still to do


@dataclass(slots=True)
class _BatchResult:
    before: dict[int, int] = field(default_factory=dict)  # log size before, per issue
    index_error: str | None = None


class FileEventStore(EventStore):
    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Callable[[], str] = utc_now,
        read_only: bool = False,
        recent: int = RECENT,
    ) -> None:
        self.data_dir = data_dir
        self.dir = data_dir / "events"
        self.read_only = read_only
        self.index = PositionIndex(data_dir / "positions.idx")
        self._prefix = f"{self.dir}{os.sep}"
        self._clock = clock
        self._last_at = ""
        # Per issue: its log's committed size and last seq, as one int (size << 32 | seq):
        # one dict entry and one int per issue instead of two of each (about 90 bytes
        # of the memory an issue costs). Read it through ``seq_of`` and ``_size_of``.
        self._logs: dict[int, int] = {}
        self._damaged: dict[int, str] = {}
        self._torn: dict[int, int] = {}  # read-only opens: torn bytes found, not cut
        self.reindexed: list[int] = []  # logs whose position records were missing or wrong
        self.index_loaded = False
        self._next_id = 1
        self._first_new_id = 1
        self._chosen: set[int] = set()  # ids given to reserve_id (an import's ids)
        self._head = 0
        self._recent: list[Event] = []
        self._recent_lengths: list[int] = []  # each recent event's encoded size
        self._recent_bytes = 0
        self._recent_base = 1
        self._recent_size = recent
        self._queue: list[_Pending] = []
        self._listeners: list[CommitListener] = []
        # Batches written (append + fsync of every touched log) and the seconds they took,
        # since open: the seam GET /metrics reads (web/metrics.py).
        self.write_batches = 0
        self.write_seconds = 0.0
        self._failure: str | None = None
        self._pending_cuts: list[tuple[str, int, bool]] = []
        self._closing = False
        self._opened = False
        self._wake: asyncio.Event | None = None
        self._committed: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._commit_thread = ThreadPoolExecutor(1, thread_name_prefix="commit")
        self._fsyncs = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="fsync")

    # -- state ---------------------------------------------------------------------

    @property
    def head(self) -> int:
        return self._head

    @property
    def damaged(self) -> Mapping[int, str]:
        return self._damaged

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def torn(self) -> Mapping[int, int]:
        """Read-only opens: logs whose tail is torn (bytes), which a normal open cuts."""
        return self._torn

    def issue_ids(self) -> list[int]:
        return sorted(self._logs.keys() | self._damaged.keys())

    def seq_of(self, issue_id: int) -> int | None:
        packed = self._logs.get(issue_id)
        return None if packed is None else packed & _SEQ_MASK

    def _size_of(self, issue_id: int) -> int | None:
        packed = self._logs.get(issue_id)
        return None if packed is None else packed >> 32

    def _set_log(self, issue_id: int, seq: int, size: int) -> None:
        self._logs[issue_id] = size << 32 | seq

    def listen(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def reserve_id(self, issue_id: int | None = None) -> int:
        if issue_id is None:
            while self._next_id in self._chosen:
                self._next_id += 1
            issue_id = self._next_id
            self._next_id += 1
            return issue_id
        if issue_id < 1:
            raise ValueError(f"issue ids start at 1, not {issue_id}")
        taken = issue_id in self._logs or issue_id in self._damaged or issue_id in self._chosen
        if taken or self._first_new_id <= issue_id < self._next_id:
            raise SequenceConflict(issue_id, 0, self.seq_of(issue_id) or 0)
        self._chosen.add(issue_id)
        return issue_id

    def path(self, issue_id: int) -> Path:
        return self.dir / f"{issue_id}{SUFFIX}"

    # -- opening -------------------------------------------------------------------

    async def open(self) -> OpenReport:
        started = time.monotonic()
        report = await asyncio.to_thread(self._recover)
        report.seconds = time.monotonic() - started
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._committed = loop.create_future()
        self._opened = True
        if not self.read_only:
            self._writer = asyncio.create_task(self._run(), name="store-writer")
        return report

    def _recover(self) -> OpenReport:
        """Bring the position index and the per-issue state in line with the logs."""
        report = OpenReport()
        if not self.read_only:
            self.dir.mkdir(parents=True, exist_ok=True)
        sizes = scan(self.dir) if self.dir.is_dir() else {}
        empty = [issue_id for issue_id, size in sizes.items() if size == 0]
        if empty:
            # An empty log holds no acknowledged event: an older build preallocated them.
            for issue_id in empty:
                del sizes[issue_id]
                if not self.read_only:
                    self.path(issue_id).unlink(missing_ok=True)
            if not self.read_only:
                fsync_dir(self.dir)
                report.notes.append(f"removed {len(empty)} empty event log(s) (no events)")
        loaded = self.index_loaded = self.index.load()
        if not loaded and sizes:
            report.notes.append(
                f"rebuilt the position index from {len(sizes)} event logs "
                "(it was missing or from another version)"
            )
        indexed = self.index.by_issue() if loaded else {}
        lowest_change: int | None = None
        gone = set(indexed) - set(sizes)
        if gone:
            # Records of logs that no longer exist (a torn create removed by hand).
            for pos in self.index.positions_of(gone):
                self.index.clear(pos)
                lowest_change = pos if lowest_change is None else min(lowest_change, pos)
        # The usual case, in bulk: every log's size is what its records add up to.
        unknown = (0, 0)
        stale = sorted(i for i, size in sizes.items() if indexed.get(i, unknown)[0] != size)
        self._logs = {i: sizes[i] << 32 | known[1] for i, known in indexed.items() if i in sizes}
        for issue_id in stale:
            self._logs.pop(issue_id, None)
            changed = self._reindex(issue_id, report)
            if changed is not None:
                lowest_change = changed if lowest_change is None else min(lowest_change, changed)
        self._head = self.index.head()
        self._recent_base = self._head + 1
        self._next_id = max(sizes, default=0) + 1
        self._first_new_id = self._next_id
        if lowest_change is not None and not self.read_only:
            self.index.write_from(lowest_change)
            self.index.sync()
        report.issues = len(self._logs) + len(self._damaged)
        report.events = sum(packed & _SEQ_MASK for packed in self._logs.values())
        report.head = self._head
        report.damaged = dict(self._damaged)
        return report

    def _reindex(self, issue_id: int, report: OpenReport) -> int | None:
        """Repair and re-read one log; record its positions. The lowest position changed."""
        path = self.path(issue_id)
        if self.read_only:
            data = path.read_bytes()
            cut = torn_tail(data)
            if cut:
                self._torn[issue_id] = cut
                data = data[: len(data) - cut]
                if not data:
                    report.notes.append(f"events/{issue_id}.yaml: holds only a torn event")
                    return None
        else:
            repair = repair_tail(self.dir, issue_id)
            if repair is not None:
                report.repairs.append(repair.describe())
                if repair.kept_size == 0:
                    return None
            data = path.read_bytes()
        try:
            parsed = parse_log(issue_id, data)
        except LogDamaged as exc:
            self._damaged[issue_id] = str(exc)
            return None
        lowest: int | None = None
        for event, (offset, length) in zip(parsed.events, parsed.spans, strict=True):
            owner, old_offset, old_length = self.index.get(event.pos)
            if owner not in (0, issue_id):
                self._damaged[issue_id] = (
                    f"events/{issue_id}.yaml: position {event.pos} is also used by issue {owner}"
                )
                return lowest
            if (owner, old_offset, old_length) != (issue_id, offset, length):
                self.index.set(event.pos, issue_id, offset, length)
                lowest = event.pos if lowest is None else min(lowest, event.pos)
        self._set_log(issue_id, len(parsed.events), parsed.size)
        if lowest is not None:
            self.reindexed.append(issue_id)
        return lowest

    # -- closing -------------------------------------------------------------------

    async def close(self) -> None:
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        if not self.read_only:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.index.close)
        self._commit_thread.shutdown(wait=True)
        self._fsyncs.shutdown(wait=True)

    # -- appending -----------------------------------------------------------------

    async def append(self, append: Append) -> list[Event]:
        if not self._opened or self.read_only:
            raise StorageFailed("the event store is not open for writing")
        if self._closing:
            raise StorageFailed("the service is shutting down; nothing was saved, retry")
        if self._failure is not None and not self._pending_cuts:
            raise StorageFailed(self._failure)
        if not append.events:
            raise ValueError("an append needs at least one event")
        assert self._wake is not None
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(append, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
            try:
                await self._commit(batch)
            except Exception as exc:  # a bug must not stop every later write
                log.exception("group commit failed unexpectedly")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(StorageFailed(f"commit failed: {exc}"))

    def _stamp_time(self) -> str:
        at = self._clock()
        if at < self._last_at:  # the wall clock stepped back: keep times in position order
            at = self._last_at
        self._last_at = at
        return at

    def _plan(self, batch: list[_Pending]) -> list[_Planned]:
        planned: list[_Planned] = []
        seq_now: dict[int, int] = {}
        pos = self._head
        at = self._stamp_time()
        for pending in batch:
            if pending.future.done():  # the caller gave up (cancelled) before the commit
                continue
            append = pending.append
            issue_id = append.issue_id if append.issue_id is not None else pending.issue_id
            if issue_id is None:
                issue_id = pending.issue_id = self.reserve_id()
            error: StoreError | None = None
            current = seq_now.get(issue_id, self.seq_of(issue_id))
            new = current is None
            if issue_id in self._damaged:
                error = IssueUnavailable(issue_id, self._damaged[issue_id])
            elif new:
                reserved = self._first_new_id <= issue_id < self._next_id
                if append.expected_seq != 0 or not (reserved or issue_id in self._chosen):
                    error = UnknownIssue(issue_id)
            elif append.expected_seq != current:
                assert current is not None
                error = SequenceConflict(issue_id, append.expected_seq, current)
            if error is not None:
                pending.future.set_exception(error)
                continue
            base = current or 0
            meta = dict(append.meta) if append.meta else None
            events = [
                Event(
                    issue_id=issue_id,
                    seq=base + offset,
                    pos=pos + offset,
                    type=new_event.type,
                    at=at,
                    actor=append.actor,
                    data=new_event.data,
                    meta=meta if offset == 1 else None,
                )
                for offset, new_event in enumerate(append.events, start=1)
            ]
            pos += len(events)
            seq_now[issue_id] = base + len(events)
            planned.append(_Planned(pending, issue_id, events, new))
        return planned

    async def _commit(self, batch: list[_Pending]) -> None:
        if self._pending_cuts and not await self._finish_cuts():
            assert self._failure is not None
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(StorageFailed(self._failure))
            return
        planned = self._encoded(batch)
        if not planned:
            return
        payloads: dict[int, list[bytes]] = {}
        created: set[int] = set()
        for item in planned:
            payloads.setdefault(item.issue_id, []).extend(item.encoded)
            if item.new:
                created.add(item.issue_id)
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(self._commit_thread, self._write, payloads, created)
        try:
            result = await asyncio.shield(write)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await write  # the batch is on its way to disk: see it through
            raise
        except _CleanupFailed as exc:
            self._pending_cuts = exc.cuts
            self._failure = (
                f"the event log could not be written, and cutting the failed write back "
                f"failed too ({exc}); writes resume once the cut succeeds"
            )
            log.error("event store: %s", self._failure)
            self._fail(planned, StorageFailed(self._failure, str(exc)))
            return
        except OSError as exc:
            log.error("event store: appending failed (%s); nothing was committed", exc)
            self._fail(
                planned,
                StorageFailed(
                    "the event log could not be written; nothing was saved, retry later",
                    exc.strerror or str(exc),
                ),
            )
            return
        if result.index_error is not None:
            log.warning(
                "event store: the position index could not be written (%s); "
                "it is rebuilt from the logs at the next start",
                result.index_error,
            )
        self._publish(planned, result.before)

    def _encoded(self, batch: list[_Pending]) -> list[_Planned]:
        """The batch planned and encoded. An append whose events cannot be encoded (a
        bug upstream: input is checked before it gets here) fails alone, and the rest
        of the batch is planned again without it: positions stay consecutive and a
        create keeps the id it was given."""
        while True:
            planned = self._plan(batch)
            failed = False
            for item in planned:
                try:
                    item.encoded = [encode(e) for e in item.events]
                except (TypeError, ValueError) as exc:
                    log.error(
                        "event store: an append of issue %s cannot be encoded: %s",
                        item.issue_id,
                        exc,
                    )
                    item.pending.future.set_exception(
                        ValueError(f"the event cannot be stored ({exc}); nothing was saved")
                    )
                    failed = True
            if not failed:
                return planned

    def _fail(self, planned: list[_Planned], error: StorageFailed) -> None:
        for item in planned:
            if not item.pending.future.done():
                item.pending.future.set_exception(error)

    def _write(self, payloads: dict[int, list[bytes]], created: set[int]) -> _BatchResult:
        """Worker thread: append to and fsync every log of the batch, and fsync
        ``events/`` when the batch created logs.

        The logs are written by a pool: creating a file and syncing it is mostly waiting
        on the file system, which overlaps, and concurrent fsyncs share journal commits.
        The folder's fsync runs beside them, as soon as every new log has its name.
        """
        started = time.monotonic()
        jobs = [(i, b"".join(lines), i in created) for i, lines in payloads.items()]
        named = threading.Semaphore(0)
        folder: Future[OSError | None] | None = None
        if created:
            folder = self._fsyncs.submit(self._sync_folder, named, len(created))
        if len(jobs) > 1 or folder is not None:
            done = list(self._fsyncs.map(lambda job: self._append_one(job, named), jobs))
        else:
            done = [self._append_one(jobs[0], named)]
        touched = [t for t, _ in done if t is not None]
        failure = next((exc for _, exc in done if exc is not None), None)
        if folder is not None:
            failure = failure or folder.result()
        if failure is not None:
            self._cut_back(touched)
            raise failure
        self.write_seconds += time.monotonic() - started
        self.write_batches += 1
        return _BatchResult(before={t.issue_id: t.before for t in touched})

    def _sync_folder(self, named: threading.Semaphore, count: int) -> OSError | None:
        """fsync ``events/`` once every new log of the batch exists (or failed to)."""
        for _ in range(count):
            named.acquire()
        try:
            fsync_dir(self.dir)
        except OSError as exc:
            return exc
        return None

    def _append_one(
        self, job: tuple[int, bytes, bool], named: threading.Semaphore
    ) -> tuple[_Touched | None, OSError | None]:
        """One log: open (create), append, fsync. Returns what it touched, and its error."""
        issue_id, payload, new = job
        path = f"{self._prefix}{issue_id}{SUFFIX}"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if new else 0)
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            return None, exc
        finally:
            if new:
                named.release()
        entry = _Touched(issue_id, path, fd, 0, new)
        try:
            if not new:
                entry.before = os.fstat(fd).st_size
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            return entry, None
        except OSError as exc:
            return entry, exc
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _cut_back(self, touched: list[_Touched]) -> None:
        """Undo a failed batch: every touched log back to its size before it."""
        self._cut([(entry.path, entry.before, entry.new) for entry in touched])

    def _cut(self, cuts: list[tuple[str, int, bool]]) -> None:
        """Cut logs back durably; raises _CleanupFailed with the cuts still to do."""
        removed = False
        for done, (path, size, remove) in enumerate(cuts):
            try:
                if remove:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    removed = True
                else:
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        if os.fstat(fd).st_size != size:
                            os.ftruncate(fd, size)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except OSError as exc:
                raise _CleanupFailed(exc.strerror or str(exc), cuts[done:]) from exc
        if removed:
            try:
                fsync_dir(self.dir)
            except OSError as exc:
                raise _CleanupFailed(exc.strerror or str(exc), [c for c in cuts if c[2]]) from exc

    async def _finish_cuts(self) -> bool:
        """Retry the cut-back of a failed batch before anything else is written."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._commit_thread, self._cut, self._pending_cuts)
        except _CleanupFailed as exc:
            self._pending_cuts = exc.cuts
            return False
        log.info("event store: the failed write was cut back; writing again")
        self._pending_cuts = []
        self._failure = None
        return True

    def _publish(self, planned: list[_Planned], before: dict[int, int]) -> None:
        """The batch is durable: record it, tell the listeners, then the callers."""
        committed: list[Event] = []
        first = self._head + 1
        for item in planned:
            committed.extend(item.events)
            issue_id = item.issue_id
            size = self._size_of(issue_id)
            offset = 0 if item.new else (before[issue_id] if size is None else size)
            for line, event in zip(item.lines, item.events, strict=True):
                self.index.set(event.pos, issue_id, offset, line)
                offset += line
            self._set_log(issue_id, item.events[-1].seq, offset)
        self._head = committed[-1].pos
        try:
            self.index.write_from(first)
        except OSError as exc:
            log.warning("event store: position index not written (%s); rebuilt at start", exc)
        self._keep_recent(committed, [n for item in planned for n in item.lines])
        for listener in self._listeners:
            try:
                listener(committed)
            except Exception:
                log.exception("commit listener %r failed", listener)
        for item in planned:
            if not item.pending.future.done():
                item.pending.future.set_result(item.events)
        assert self._committed is not None
        done, self._committed = self._committed, asyncio.get_running_loop().create_future()
        done.set_result(None)

    # -- reading -------------------------------------------------------------------

    async def read_issue(self, issue_id: int) -> list[Event]:
        return await asyncio.to_thread(self._read_issue, issue_id)

    def _read_issue(self, issue_id: int) -> list[Event]:
        if issue_id in self._damaged:
            raise IssueUnavailable(issue_id, self._damaged[issue_id])
        if issue_id not in self._logs:
            raise UnknownIssue(issue_id)
        return self._parse(issue_id).events

    def _parse(self, issue_id: int) -> ParsedLog:
        # Only the committed part: an append may be in flight, and a read-only open
        # leaves a torn tail where it is.
        fd = os.open(f"{self._prefix}{issue_id}{SUFFIX}", os.O_RDONLY)
        try:
            data = os.read(fd, self._size_of(issue_id) or 0)
        finally:
            os.close(fd)
        return parse_log(issue_id, data)

    async def read_many(
        self, issue_ids: Sequence[int]
    ) -> list[tuple[int, list[Event] | StoreError]]:
        """Many logs, read in few worker-thread calls (replay, start-up catch-up)."""
        out: list[tuple[int, list[Event] | StoreError]] = []
        for start in range(0, len(issue_ids), READ_CHUNK):
            chunk = issue_ids[start : start + READ_CHUNK]
            out.extend(await asyncio.to_thread(self._read_chunk, chunk))
        return out

    def read_logs(self, issue_ids: Sequence[int]) -> list[tuple[int, list[Event] | StoreError]]:
        """``read_many`` without an event loop: for offline tools and their worker
        processes (replay). Safe beside appends: it reads committed bytes only."""
        return self._read_chunk(issue_ids)

    def _read_chunk(self, issue_ids: Sequence[int]) -> list[tuple[int, list[Event] | StoreError]]:
        out: list[tuple[int, list[Event] | StoreError]] = []
        for issue_id in issue_ids:
            try:
                out.append((issue_id, self._read_issue(issue_id)))
            except StoreError as exc:
                out.append((issue_id, exc))
            except (OSError, LogDamaged) as exc:
                out.append((issue_id, IssueUnavailable(issue_id, str(exc))))
        return out

    def _keep_recent(self, committed: list[Event], lengths: list[int]) -> None:
        """Keep the newest events for readers, at most ``recent`` of them and
        ``RECENT_BYTES`` of their size (trimmed when either is an eighth over: trimming at
        twice over made the memory they hold swing by the window's whole size)."""
        self._recent.extend(committed)
        self._recent_lengths.extend(lengths)
        self._recent_bytes += sum(lengths)
        count = len(self._recent)
        if count <= self._recent_size * 9 // 8 and self._recent_bytes <= RECENT_BYTES * 9 // 8:
            return
        drop = max(0, count - self._recent_size)
        dropped = sum(self._recent_lengths[:drop])
        while drop < count - 1 and self._recent_bytes - dropped > RECENT_BYTES:
            dropped += self._recent_lengths[drop]
            drop += 1
        del self._recent[:drop]
        del self._recent_lengths[:drop]
        self._recent_bytes -= dropped
        self._recent_base += drop

    async def read_after(self, position: int, limit: int) -> list[Event]:
        events: list[Event] = []
        position = max(position, 0)
        while len(events) < limit and position < self._head:
            base = self._recent_base
            if position + 1 >= base:
                start = position + 1 - base
                events.extend(self._recent[start : start + limit - len(events)])
                break
            found, position = await asyncio.to_thread(
                self._read_positions, position + 1, base - 1, limit - len(events)
            )
            events.extend(found)
        return events

    def _read_positions(self, first: int, last: int, limit: int) -> tuple[list[Event], int]:
        """Events at positions first..last from the logs (skipping empty positions), and
        the last position looked at."""
        wanted: dict[int, list[tuple[int, int, int]]] = {}
        count = 0
        covered = last
        for pos in range(first, last + 1):
            issue_id, offset, length = self.index.get(pos)
            if issue_id:
                wanted.setdefault(issue_id, []).append((pos, offset, length))
                count += 1
                if count >= limit:
                    covered = pos
                    break
        found: list[Event] = []
        for issue_id, spots in wanted.items():
            try:
                with open(self.path(issue_id), "rb") as handle:
                    fd = handle.fileno()
                    for pos, offset, length in spots:
                        line = os.pread(fd, length, offset)
                        try:
                            event = parse_event_line(line.rstrip(b"\r\n"))
                        except ValueError as exc:
                            log.warning("position %d: events/%s.yaml: %s", pos, issue_id, exc)
                            continue
                        if event.pos != pos or event.issue_id != issue_id:
                            log.warning("position %d: the index points at another event", pos)
                            continue
                        found.append(event)
            except OSError as exc:
                log.warning("reading events/%s.yaml for the stream failed: %s", issue_id, exc)
        found.sort(key=lambda e: e.pos)
        return found, covered

    async def changed_after(self, position: int, up_to: int | None = None) -> set[int]:
        last = self._head if up_to is None else min(up_to, self._head)
        if position >= last:
            return set()
        ids = self.index.issue_column(position + 1, last)
        changed = set(ids)
        changed.discard(0)
        return changed

    async def wait_for(self, position: int, timeout: float | None = None) -> bool:
        # asyncio.wait, not asyncio.wait_for: on Python 3.11 wait_for swallows a cancel
        # that arrives as the commit resolves the future, and a subscriber cancelled at
        # shutdown then ran on; wait neither swallows it nor touches the shared future.
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._head <= position:
            if self._committed is None or self._closing:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            done, _ = await asyncio.wait({self._committed}, timeout=left)
            if not done:
                return False
        return True
