"""The application service: the one write path, start-up, shutdown, and the queries
the web layer asks. This is the composition root of the storage side.

Write path: under the issue's lock, take its state from the read model, ``decide``,
then ``store.append`` (the commit: durable, positioned in commit order, applied to the
read model before it returns). Idempotent requests carry their key into the event's
``meta``, so a retry, even after a crash, finds the first result and appends nothing.

Start-up: the store opens (repairing torn tails), the read model starts from the index
snapshot, and only the issues changed after the snapshot's checkpoint are folded from
their logs; then the background subscribers resume from their checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from events import store as store_errors
from events.clock import utc_now
from events.dispatcher import Dispatcher
from events.filestore import FileEventStore
from events.model import Actor, Event
from events.store import Append
from hydraissue.commands import (
    CREATE_FIELDS,
    AddAttachment,
    Command,
    CreateIssue,
    RejectPlan,
    UpdateIssue,
)
from hydraissue.config import Config
from hydraissue.decide import decide
from hydraissue.delivery import Deliveries, Policy
from hydraissue.errors import (
    Conflict,
    IssueUnavailable,
    KeyReused,
    NotFound,
    StorageUnavailable,
)
from hydraissue.evolve import fold
from hydraissue.feed import LiveFeed
from hydraissue.migrate import refuse_original
from hydraissue.model import Issue, display_key
from hydraissue.refusals import RefusalLog
from hydraissue.targets import TargetPolicy, check_target
from hydraissue.uploads import Received, UploadStore
from hydraissue.webhooks import Webhook, WebhookInput, WebhookRegistry
from projections.files import ProjectionFiles
from projections.keys import KeyRecord, key_meta
from projections.nims import NAME as NIM_SUBSCRIBER
from projections.nims import NIM_META, NimTrails
from projections.quality import STUCK_IN
from projections.quality import Report as QualityReport
from projections.quality import build as build_quality
from projections.query import ListQuery
from projections.readmodel import IssueReadModel
from projections.rebuild import fold_events
from projections.rows import IndexRow
from projections.writer import NAME as FILES_SUBSCRIBER
from projections.writer import ProjectionWriter

log = logging.getLogger("hydraissue.service")
WARM_CHUNK = 256  # issues loaded per slice of the background warm-up
CLEANUP_SUBSCRIBER = "uploads-cleanup"
# A disk that refuses writes at start-up: serve reads, refuse writes (see start()).
DISK_REFUSES = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})
WEBHOOK_SUBSCRIBER = "webhooks"


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An idempotent request: its scoped key and the fingerprint of what it asked."""

    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did: the issue afterwards, the committed events, and for a retried
    idempotent request the record of the first result (and no new events)."""

    issue: Issue
    events: list[Event]
    replayed: KeyRecord | None = None


@dataclass(slots=True)
class StartupReport:
    issues: int = 0
    events: int = 0
    head: int = 0
    caught_up: int = 0  # issues folded from their logs because they changed after the index
    index_missing: bool = False
    repairs: list[str] = field(default_factory=list)
    damaged: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class IssueService:
    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Callable[[], str] = utc_now,
        config: Config | None = None,
        delivery_policy: Policy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config or Config(data_dir=str(data_dir))
        self.clock = clock
        self.store = FileEventStore(data_dir, clock=clock)
        self.files = ProjectionFiles(data_dir)
        self.read_model = IssueReadModel(loader=self.files.read_issue)
        self.uploads = UploadStore(data_dir)
        self.feed = LiveFeed()
        self.dispatcher = Dispatcher(self.store, data_dir / "subscribers")
        self.writer: ProjectionWriter | None = None
        self.webhooks = WebhookRegistry(data_dir)
        self.deliveries = Deliveries(
            data_dir,
            self.webhooks,
            self.issue_at,
            self._project_of,
            self.target_policy(),
            policy=delivery_policy
            or Policy(disable_after=self.config.webhooks_disable_after_hours * 3600.0),
            resolver=resolver,
        )
        self.resolver = resolver
        self._trails = NimTrails(data_dir)  # through trails(): it loads in the background
        self.refusals = RefusalLog(data_dir)
        self.startup = StartupReport()
        # Weak: a lock lives while some request holds or awaits it, not forever.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._warm_task: asyncio.Task[None] | None = None
        self._trails_task: asyncio.Task[None] | None = None
        self._trails_failed: str | None = None
        self._started = False
        self._index_absent = False
        self.read_only: str | None = None  # why writes are refused (a full disk at start)

    # -- start-up and shutdown -----------------------------------------------------

    async def start(self) -> StartupReport:
        """Start; a disk that is full or read-only at start-up does not stop the service:
        it starts read-only (reads served, writes 503, health degraded).

        The cyclic collector is off while start-up loads: what it builds (a row per
        issue) is all kept, yet each of its allocations counted towards a
        collection that walked everything loaded so far (at 100,000 issues reading the
        index took 2.9 s with it, 1.5 s without). ``gc.freeze`` at the end keeps it out
        of later full passes too.
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            await asyncio.to_thread(self._probe_write)
            return await self._start()
        except OSError as exc:
            if exc.errno not in DISK_REFUSES:
                raise
            return await self._start_read_only(exc)
        finally:
            if collecting:
                gc.enable()

    async def _start_read_only(self, exc: OSError) -> StartupReport:
        where = f" ({exc.filename})" if exc.filename else ""
        self.read_only = (
            f"the data dir's disk refused a write at start-up: {exc.strerror}{where}; "
            "serving reads only, writes answer 503: make room, then restart the service"
        )
        log.error("start-up: %s", self.read_only)
        with contextlib.suppress(Exception):
            await self.store.close()
        self.store = FileEventStore(self.data_dir, clock=self.clock, read_only=True)
        self.read_model = IssueReadModel(loader=self.files.read_issue)
        self.dispatcher = Dispatcher(self.store, self.data_dir / "subscribers")
        self.writer = None
        self._started = False
        started = time.monotonic()
        report = self.startup = StartupReport()
        opened = await self.store.open()
        report.repairs, report.damaged, report.notes = opened.repairs, opened.damaged, opened.notes
        await self._load_snapshot(report, *await asyncio.to_thread(self._read_snapshots))
        if self._trails_task is not None:  # the writable start got that far: let it end
            await self._trails_task
            self._trails_task, self._trails_failed = None, None
        for load in (self.webhooks.load, self._trails.load, self.refusals.load):
            try:
                await asyncio.to_thread(load)
            except OSError as error:
                log.warning("start-up (read-only): %s", error)
        return self._started_up(report, opened.events, started)

    def _started_up(self, report: StartupReport, events: int, started: float) -> StartupReport:
        """The last step of either start: warm-up in the background, the report logged."""
        self._warm_task = asyncio.create_task(self._warm(), name="warm-up")
        report.issues = self.read_model.count()
        report.events = events
        report.head = self.store.head
        report.seconds = time.monotonic() - started
        self._log_startup(report)
        return report

    def _probe_write(self) -> None:
        """A page written and fsynced: a disk that is full or read-only says so now
        (start-up may have nothing else to write), not at the first request."""
        probe = self.data_dir / ".write-probe.tmp"  # a `.*.tmp`: cleared if a crash left it
        try:
            with probe.open("wb") as out:
                out.write(b"\0" * 4096)
                out.flush()
                os.fsync(out.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _writable(self) -> None:
        if self.read_only is not None:
            raise StorageUnavailable(self.read_only, {"reason": "read-only"})

    async def _start(self) -> StartupReport:
        started = time.monotonic()
        report = self.startup
        # Before anything is written: a data dir of the original service is imported first.
        await asyncio.to_thread(refuse_original, self.data_dir)
        await asyncio.to_thread(self.uploads.clear_incoming)  # halves cut off by a crash
        opened = await self.store.open()
        report.repairs, report.damaged, report.notes = opened.repairs, opened.damaged, opened.notes
        removed = await asyncio.to_thread(self.files.prepare)
        if removed:
            report.notes.append(f"removed {len(removed)} temp file(s) left by a crash")
        checkpoint = await self._load_snapshot(
            report, *await asyncio.to_thread(self._read_snapshots)
        )
        orphans = await asyncio.to_thread(
            self.uploads.remove_folders_without_issue, set(self.store.issue_ids())
        )
        if orphans:
            report.notes.append(
                f"removed {len(orphans)} upload folder(s) of reports that never committed"
            )
        self.store.listen(self.read_model.apply)
        self.store.listen(self.feed.publish)
        self.writer = ProjectionWriter(self.files, self.read_model, position=checkpoint)
        if self._index_absent:
            self.writer.snapshot_position = -1  # write one soon, even with no events yet
        # Issue files cost a file system commit per batch: write them in few, large ones.
        self.dispatcher.add(
            FILES_SUBSCRIBER, self.writer.handle, initial=checkpoint, batch=4096, coalesce=0.2
        )
        self.dispatcher.add(CLEANUP_SUBSCRIBER, self._remove_uploads, initial=self.store.head)
        # Webhooks see what is committed from their first start on, never the history.
        # At most one journal fsync per webhook per 20 ms: under a burst of writes the
        # deliveries queue in batches; a lone event is still handled at once.
        self.dispatcher.add(
            WEBHOOK_SUBSCRIBER, self.deliveries.handle, initial=self.store.head, coalesce=0.02
        )
        # Audit trails start from the beginning: a first start builds them (background).
        self.dispatcher.add(NIM_SUBSCRIBER, self._audit, initial=0, batch=1024)
        await asyncio.to_thread(self.webhooks.load)
        # The trails grow with everything agents ever did (0.6 s of start-up at 100,000
        # issues): they load in the background, and what reads them waits (trails()).
        self._trails_task = asyncio.create_task(self._load_trails(), name="audit-trails")
        await asyncio.to_thread(self.refusals.load)
        await self.deliveries.start()
        self.dispatcher.start()
        self.writer.position = self.dispatcher.subscribers[FILES_SUBSCRIBER].position
        self.writer.start_timer()
        # What start-up loaded lives as long as the process: keep it out of the cyclic
        # collector's full passes, which at 100,000 issues paused every request ~100 ms.
        gc.freeze()
        self._started = True
        return self._started_up(report, opened.events, started)

    def _read_snapshots(
        self,
    ) -> tuple[tuple[int, list[IndexRow]] | None, tuple[int, list[KeyRecord]] | None]:
        return self.files.read_index(), self.files.read_keys()

    async def _load_snapshot(
        self,
        report: StartupReport,
        index: tuple[int, list[IndexRow]] | None,
        keys: tuple[int, list[KeyRecord]] | None,
    ) -> int:
        """Rows from the index, then fold every issue changed after its checkpoint."""
        logged = set(self.store.issue_ids())
        self._index_absent = index is None
        if index is None:
            report.index_missing = bool(logged)
            checkpoint = 0
            changed = logged
        else:
            checkpoint, rows = index
            # Without the keys snapshot, keys are re-derived from every log (rare: the
            # file was lost); a retry must never miss the record of its first answer.
            checkpoint = min(checkpoint, keys[0] if keys is not None else 0, self.store.head)
            self.read_model.load(rows, keys[1] if keys else (), checkpoint)
            for issue_id in [i for i in self.read_model.rows if i not in logged]:
                self.read_model.forget(issue_id)  # a row without a log: the log is the truth
            changed = await self.store.changed_after(checkpoint)
        for issue_id, reason in self.store.damaged.items():
            self.read_model.mark_unavailable(issue_id, reason)
        await self._fold_into_read_model(sorted(changed - self.store.damaged.keys()), checkpoint)
        report.caught_up = len(changed)
        self.read_model.position = self.store.head
        return checkpoint

    async def _fold_into_read_model(self, ids: Sequence[int], after: int) -> None:
        for start in range(0, len(ids), 512):
            for issue_id, result in await self.store.read_many(ids[start : start + 512]):
                if isinstance(result, list):
                    folded = fold_events(result, after)
                    self.read_model.put(folded.issue)
                    for record in folded.keys:
                        self.read_model.remember(record)
                else:
                    self.read_model.mark_unavailable(issue_id, str(result))
            await asyncio.sleep(0)

    def _log_startup(self, report: StartupReport) -> None:
        log.info(
            "loaded %d issues (%d events, position %d) from %s in %.2fs "
            "(%d folded from their logs%s)",
            report.issues,
            report.events,
            report.head,
            self.data_dir,
            report.seconds,
            report.caught_up,
            ", the index was missing" if report.index_missing else "",
        )
        for repair in report.repairs:
            log.warning("repaired on start-up: %s", repair)
        for note in report.notes:
            log.info("start-up: %s", note)
        for issue_id, reason in sorted(report.damaged.items()):
            log.error(
                "%s is unavailable: %s (every other issue is served; see `hydraissue verify`)",
                display_key(issue_id),
                reason,
            )

    async def stop(self) -> None:
        """Commit what is queued, let subscribers catch up, write the snapshots."""
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
        if self._trails_task is not None:
            await self._trails_task  # a thread: it cannot be cancelled; it never raises
        await self.store.close()
        if self._started:
            await self.dispatcher.stop()
            await self.deliveries.stop()
            if self.writer is not None:
                await self.writer.close()

    async def _warm(self) -> None:
        """Load every full issue in the background: the files are read and parsed in a
        worker thread, slice by slice, and handed to the read model on the loop, so
        requests are served meanwhile (an issue not loaded yet is loaded on demand)."""
        pending = self.read_model.unloaded()
        started = time.monotonic()
        for start in range(0, len(pending), WARM_CHUNK):
            chunk = pending[start : start + WARM_CHUNK]
            loaded = await asyncio.to_thread(self._read_issue_files, chunk)
            for issue_id, issue in zip(chunk, loaded, strict=True):
                self.read_model.offer(issue_id, issue)
        await self._fold_pending()
        gc.freeze()  # see start()
        log.info("warmed %d issues in %.2fs", len(pending), time.monotonic() - started)

    def _read_issue_files(self, ids: Sequence[int]) -> list[Issue | None]:
        return [self.files.read_issue(issue_id) for issue_id in ids]

    async def _fold_pending(self) -> None:
        """Issues whose file did not match their row: fold them from their logs, and
        have their files rewritten (a file edited or damaged by hand)."""
        repaired: list[int] = []
        for issue_id in sorted(self.read_model.needs_fold):
            async with self._lock(issue_id):
                if await self._ensure_state(issue_id) is not None:
                    repaired.append(issue_id)
        if repaired and self.writer is not None:
            log.warning(
                "issue file(s) %s did not match their logs; rewritten from the logs",
                ", ".join(f"issues/{i}.yaml" for i in repaired),
            )
            await self.writer.rewrite(repaired)

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until background work is done: the warm-up, the trails' load, and every
        subscriber has handled everything committed so far (a seam for tests and tools)."""
        for task in (self._warm_task, self._trails_task):
            if task is not None:
                await asyncio.wait_for(asyncio.shield(task), timeout)
        await self.dispatcher.idle(timeout)

    # -- reads ---------------------------------------------------------------------

    def _unavailable(self, issue_id: int) -> IssueUnavailable:
        return IssueUnavailable(
            f"{display_key(issue_id)} is unavailable: its event log is damaged; every other "
            "issue works (`hydraissue verify` lists the problem)",
            {"id": issue_id, "reason": self.read_model.unavailable.get(issue_id)},
        )

    def issue(self, issue_id: int) -> Issue | None:
        """The live issue from memory, None if there is none; 503 for a damaged one."""
        if issue_id in self.read_model.unavailable:
            raise self._unavailable(issue_id)
        return self.read_model.issue(issue_id)

    async def get(self, issue_id: int) -> Issue:
        """The live issue, folding it from its log if memory could not load it."""
        issue = self.issue(issue_id)
        if issue is None and issue_id in self.read_model.needs_fold:
            async with self._lock(issue_id):
                issue = await self._ensure_state(issue_id)
        if issue is None or issue.deleted:
            raise NotFound(f"{display_key(issue_id)} does not exist", {"id": issue_id})
        return issue

    def live_row(self, issue_id: int) -> IndexRow | None:
        """The index row of a live issue (None if there is none; 503 if damaged)."""
        if issue_id in self.read_model.unavailable:
            raise self._unavailable(issue_id)
        row = self.read_model.rows.get(issue_id)
        return None if row is None or row.deleted else row

    def query(self, query: ListQuery) -> tuple[int, list[int]]:
        """Total matches and the ids of the requested page."""
        return self.read_model.query(query)

    def key(self, key: str) -> KeyRecord | None:
        return self.read_model.key(key)

    async def history(self, issue_id: int) -> list[Event]:
        """The audit query: every committed event of a live issue, oldest first."""
        await self.get(issue_id)
        return await self.store.read_issue(issue_id)

    async def events_after(self, position: int, limit: int) -> list[Event]:
        return await self.store.read_after(position, limit)

    @property
    def head(self) -> int:
        return self.store.head

    def health(self) -> tuple[str, dict[str, Any]]:
        """("ok" | "degraded", details for the health check's ``extra``)."""
        problems: list[str] = []
        if self.read_only is not None:
            problems.append(self.read_only)
        if self.read_model.unavailable:
            problems.append(f"{len(self.read_model.unavailable)} issue(s) unavailable")
        if self.store.failure:
            problems.append(self.store.failure)
        subscribers = self.dispatcher.status()
        failing = [name for name, s in subscribers.items() if s["failures"]]
        if failing:
            problems.append(f"subscriber(s) failing: {', '.join(failing)}")
        extra: dict[str, Any] = {
            "issues": self.read_model.count(),
            "position": self.store.head,
            "subscribers": subscribers,
        }
        if self.read_model.unavailable:
            extra["unavailable"] = {
                display_key(i): reason for i, reason in sorted(self.read_model.unavailable.items())
            }
        if self.read_only is not None:
            extra["storage"] = self.read_only
        if problems:
            extra["problems"] = problems
        return ("degraded" if problems else "ok"), extra

    # -- writes --------------------------------------------------------------------

    def _lock(self, issue_id: int) -> asyncio.Lock:
        lock = self._locks.get(issue_id)
        if lock is None:
            lock = self._locks[issue_id] = asyncio.Lock()
        return lock

    async def _ensure_state(self, issue_id: int) -> Issue | None:
        """The issue's state for a decision (caller holds its lock); folds if needed."""
        if issue_id in self.read_model.unavailable:
            raise self._unavailable(issue_id)
        state = self.read_model.issue(issue_id)
        if state is None and issue_id in self.read_model.needs_fold:
            try:
                events = await self.store.read_issue(issue_id)
            except store_errors.IssueUnavailable as exc:
                self.read_model.mark_unavailable(issue_id, exc.reason)
                raise self._unavailable(issue_id) from exc
            except store_errors.UnknownIssue:
                self.read_model.forget(issue_id)
                return None
            self.read_model.put(fold_events(events).issue)
            state = self.read_model.issue(issue_id)
        return state

    def _replayed(self, idem: Idempotency | None) -> KeyRecord | None:
        if idem is None:
            return None
        record = self.read_model.key(idem.key)
        if record is not None and record.fingerprint != idem.fingerprint:
            raise KeyReused(
                "Idempotency-Key was already used with a different request; use a new key",
                {"key": idem.key.partition(":")[2]},
            )
        return record

    def _replay_outcome(self, record: KeyRecord) -> Outcome:
        issue = self.read_model.loaded(record.issue_id) or self.read_model.issue(record.issue_id)
        if issue is None or issue.deleted:
            raise NotFound(
                f"{display_key(record.issue_id)} does not exist any more",
                {"id": record.issue_id},
            )
        return Outcome(issue, [], replayed=record)

    async def _commit(self, append: Append) -> list[Event]:
        self._writable()
        try:
            return await self.store.append(append)
        except store_errors.StorageFailed as exc:
            raise StorageUnavailable(str(exc), {"reason": exc.reason}) from exc
        except store_errors.IssueUnavailable as exc:
            self.read_model.mark_unavailable(exc.issue_id, exc.reason)
            raise self._unavailable(exc.issue_id) from exc
        except store_errors.UnknownIssue as exc:
            raise NotFound(
                f"{display_key(exc.issue_id)} does not exist", {"id": exc.issue_id}
            ) from exc
        except store_errors.SequenceConflict as exc:
            raise Conflict(
                f"{display_key(exc.issue_id)} changed meanwhile; fetch it again and retry",
                {"expected_seq": exc.expected, "seq": exc.actual},
            ) from exc

    def _outcome(self, issue_id: int, events: list[Event]) -> Outcome:
        issue = self.read_model.loaded(issue_id)
        assert issue is not None  # applied by the commit listener before append returned
        return Outcome(issue, events)

    async def handle(
        self,
        command: Command,
        actor: Actor,
        idem: Idempotency | None = None,
        *,
        nim: str | None = None,
    ) -> Outcome:
        """``nim``: the agent that says it sent this (``X-Nim-Name``), for its audit trail."""
        if isinstance(command, UpdateIssue | RejectPlan):
            # Whose moves the caller may make is decided here, once, from who it is.
            approving = actor.kind == "admin" or self.config.lifecycle_agents_may_approve
            command = replace(command, approving=approving)
        if isinstance(command, CreateIssue):
            record = self._replayed(idem)
            if record is not None:
                return self._replay_outcome(record)
            meta = _meta(idem, nim)
            events = await self._commit(Append(None, 0, decide(None, command), actor, meta))
            return self._outcome(events[0].issue_id, events)
        async with self._lock(command.issue_id):
            return await self._handle_locked(command, actor, idem, nim)

    async def _handle_locked(
        self, command: Command, actor: Actor, idem: Idempotency | None, nim: str | None = None
    ) -> Outcome:
        record = self._replayed(idem)
        if record is not None:
            return self._replay_outcome(record)
        issue_id = getattr(command, "issue_id")  # noqa: B009 - every non-create command has one
        state = await self._ensure_state(issue_id)
        try:
            decided = decide(state, command)
        except Conflict as exc:
            await self._refused(issue_id, exc, actor, nim)
            raise
        if not decided:
            assert state is not None  # only updates that change nothing decide nothing
            return Outcome(state, [])
        assert state is not None
        meta = _meta(idem, nim)
        events = await self._commit(Append(issue_id, state.seq, decided, actor, meta))
        return self._outcome(issue_id, events)

    async def _refused(self, issue_id: int, exc: Conflict, actor: Actor, nim: str | None) -> None:
        """A lifecycle move refused (409): logged for the quality report."""
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        entry = {
            "at": self.clock(),
            "issue_id": issue_id,
            "current": detail.get("current"),
            "requested": detail.get("requested"),
            "actor": actor.kind,
            "nim": nim,
        }
        try:
            await asyncio.to_thread(self.refusals.record, entry)
        except OSError as error:
            log.warning("could not log a refused move: %s", error)

    async def attach(
        self,
        issue_id: int,
        received: Received,
        actor: Actor,
        idem: Idempotency | None = None,
        *,
        nim: str | None = None,
    ) -> Outcome:
        """Place a received file in the issue's folder, then record it (one commit)."""
        self._writable()
        async with self._lock(issue_id):
            try:
                record = self._replayed(idem)
                if record is not None:
                    return self._replay_outcome(record)
                state = await self._ensure_state(issue_id)
                if state is None or state.deleted:
                    raise NotFound(f"{display_key(issue_id)} does not exist", {"id": issue_id})
                placed = await asyncio.to_thread(self.uploads.place, issue_id, [received])
            finally:
                self.uploads.discard([received])  # gone already once placed
            stored = placed[0]
            command = AddAttachment(
                issue_id, stored.name, stored.filename, stored.size, stored.content_type
            )
            try:
                return await self._handle_locked(command, actor, idem, nim)
            except BaseException:
                # Not recorded, so not the issue's: a file no event names must not linger.
                self.uploads.unplace(issue_id, [stored.filename], remove_folder=False)
                raise

    async def create_with_attachments(
        self,
        command: CreateIssue,
        files: Sequence[Received],
        actor: Actor,
        idem: Idempotency | None = None,
    ) -> Outcome:
        """A report: the issue and its files in one commit, so after a crash the issue
        exists with all its files or not at all."""
        self._writable()
        try:
            record = self._replayed(idem)
            if record is not None:
                return self._replay_outcome(record)
            if not files:
                return await self.handle(command, actor, idem)
            issue_id = self.store.reserve_id()
            placed = await asyncio.to_thread(self.uploads.place, issue_id, files)
        finally:
            self.uploads.discard(files)  # only those not moved into place still exist
        full = CreateIssue(
            **{name: getattr(command, name) for name in CREATE_FIELDS}, attachments=tuple(placed)
        )
        try:
            events = await self._commit(
                Append(issue_id, 0, decide(None, full), actor, _meta(idem, None))
            )
        except BaseException:
            self.uploads.unplace(issue_id, [p.filename for p in placed], remove_folder=True)
            raise
        return self._outcome(issue_id, events)

    async def _load_trails(self) -> None:
        try:
            await asyncio.to_thread(self._trails.load)
            gc.freeze()  # kept for good, as what start() loaded
        except Exception as exc:  # said by trails() and in the log, not a crash later
            self._trails_failed = f"the agents' audit trails could not be read: {exc}"
            log.error("start-up: %s (`hydraissue replay` rebuilds them)", self._trails_failed)

    async def trails(self) -> NimTrails:
        """The agents' audit trails, once start-up has loaded them (in the background);
        503 if they could not be read (the nim-audit subscriber then waits too)."""
        if self._trails_task is not None:
            await asyncio.shield(self._trails_task)
        if self._trails_failed is not None:
            raise StorageUnavailable(
                f"{self._trails_failed}; `hydraissue replay` rebuilds them",
                {"reason": "audit-trails"},
            )
        return self._trails

    async def _audit(self, events: Sequence[Event]) -> None:
        """Subscriber: agents' audit trails, in memory and in their files."""
        trails = await self.trails()
        added = trails.apply(events)
        if added:
            await asyncio.to_thread(trails.append_files, added)

    def target_policy(self) -> TargetPolicy:
        return TargetPolicy.from_config(
            self.config.webhooks_allow_private_targets, self.config.webhooks_allowed_targets
        )

    def _project_of(self, issue_id: int) -> str | None:
        row = self.read_model.rows.get(issue_id)
        return row.project if row is not None else None

    async def issue_at(self, issue_id: int, seq: int) -> Issue | None:
        """The issue as it was right after its event ``seq`` (for webhook payloads)."""
        current = self.read_model.loaded(issue_id)
        if current is not None and current.seq == seq:
            return current
        try:
            events = await self.store.read_issue(issue_id)
        except store_errors.StoreError:
            return None
        return fold(events[:seq])

    # -- webhooks ------------------------------------------------------------------

    async def create_webhook(self, values: WebhookInput) -> Webhook:
        self._writable()
        await check_target(values.fields["url"], self.target_policy(), self._resolver())
        hook = await asyncio.to_thread(self.webhooks.create, values.fields, self.store.head)
        await self.deliveries.added(hook)
        return hook

    async def update_webhook(self, hook_id: str, values: WebhookInput) -> Webhook:
        self._writable()
        self.webhooks.get(hook_id)
        if "url" in values.fields:
            await check_target(values.fields["url"], self.target_policy(), self._resolver())
        hook = await asyncio.to_thread(self.webhooks.update, hook_id, values.fields)
        await self.deliveries.changed(hook)
        return hook

    async def delete_webhook(self, hook_id: str) -> None:
        self._writable()
        hook = await asyncio.to_thread(self.webhooks.delete, hook_id)
        await self.deliveries.removed(hook.id)

    def _resolver(self) -> AbstractResolver:
        return self.resolver or ThreadedResolver()

    # -- audit, stats and the quality report ---------------------------------------

    async def position_at(self, stamp: str, *, inclusive: bool = False) -> int:
        """A position every event up to which was committed before ``stamp`` (or at it,
        ``inclusive``), and after which every event was committed later (times rise with
        positions): a binary search, a few reads."""
        low, high = 0, self.store.head  # events <= low are before; events > high are not
        while low < high:
            middle = (low + high + 1) // 2
            found = await self.store.read_after(middle - 1, 1)  # the first event >= middle
            if not found or found[0].pos > high:
                high = middle - 1  # no event in [middle, high]
            elif found[0].at < stamp or (inclusive and found[0].at == stamp):
                low = found[0].pos
            else:
                high = middle - 1
        return low

    async def quality(self, since: str, until: str, project: str | None) -> QualityReport:
        """The quality report for [since, until]: the issues with events in the window
        come from the position index (no event is parsed to find them), then their
        whole logs are read for the times of earlier stages."""
        start = await self.position_at(since)
        end = await self.position_at(until, inclusive=True)
        touched = await self.store.changed_after(start, end)
        histories: dict[int, list[Event]] = {}
        for issue_id, result in await self.store.read_many(sorted(touched)):
            if isinstance(result, list):
                histories[issue_id] = result
        # In a worker thread: ~0.1 s of folding for a month of 10,000 issues' history
        # would otherwise hold up every other request for that long.
        return await asyncio.to_thread(
            build_quality,
            since,
            until,
            histories,
            self.read_model.rows_with_status(STUCK_IN),
            list(self.refusals.entries),
            stuck_days=self.config.quality_stuck_days,
            now=self.clock(),
            project=project,
        )

    async def _remove_uploads(self, events: Sequence[Event]) -> None:
        """Subscriber: a deleted issue's files go (idempotent: repeats are harmless)."""
        for event in events:
            if event.type == "issue.deleted":
                await asyncio.to_thread(self.uploads.remove_issue, event.issue_id)


def _meta(idem: Idempotency | None, nim: str | None) -> dict[str, Any] | None:
    """What an append commits besides its events: the idempotency key, the agent."""
    meta: dict[str, Any] = key_meta(idem.key, idem.fingerprint) if idem is not None else {}
    if nim is not None:
        meta[NIM_META] = nim
    return meta or None
