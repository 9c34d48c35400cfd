"""Webhook deliveries: queued durably before the first attempt, sent in order per
webhook, signed, retried, logged, and never in the way of anything else.

The ``webhooks`` subscriber turns committed events into deliveries: for every active
webhook that wants an event, one delivery with a fixed id (``whd_<position>_<hook>``)
and its payload rendered once, appended and fsynced to the webhook's journal
(``subscribers/webhooks/wh_N.yaml``) before the subscriber's checkpoint moves on. A
restart, even after ``kill -9``, finds them there and sends what was not sent
(at-least-once: the same id every time, so receivers can de-duplicate).

Each webhook has its own worker task, so a slow, hanging or dead receiver holds up
only its own queue: each attempt has a 5 s timeout, there are 3 attempts waiting 1 s
and then 2 s between them, a 2xx ends it; after the third failure the delivery is
recorded as failed and the next one goes. When every delivery of a webhook has failed
for ``disable_after_hours``, the webhook is switched off with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp.abc import AbstractResolver

from events.clock import utc_now
from events.codec import dump_item, load_items
from events.fsio import fsync_dir, remove_stale_temps, replace_atomically
from hydraissue.model import Event, Issue
from hydraissue.representation import issue_dict
from hydraissue.sender import HelperProcessSender, InProcessSender, Sender
from hydraissue.targets import TargetPolicy
from hydraissue.webhooks import Webhook, WebhookRegistry, webhook_names

log = logging.getLogger("hydraissue.webhooks")

KEEP = 1000  # attempts (and deliveries, for redelivery) kept per webhook
COMPACT_AFTER = 2000  # finished deliveries in a journal before it is rewritten

IssueAt = Callable[[int, int], Awaitable[Issue | None]]


@dataclass(frozen=True, slots=True)
class Policy:
    """How hard to try: the seed's numbers, a parameter so tests can shorten them."""

    timeout: float = 5.0
    attempts: int = 3
    waits: tuple[float, ...] = (1.0, 2.0)
    disable_after: float = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    webhook: str
    event: str
    issue_id: int | None
    pos: int
    body: bytes
    queued_at: str

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhook": self.webhook,
            "event": self.event,
            "issue_id": self.issue_id,
            "pos": self.pos,
            "body": self.body.decode(),
            "queued_at": self.queued_at,
        }

    @staticmethod
    def from_record(raw: dict[str, Any]) -> Delivery:
        return Delivery(
            id=str(raw["id"]),
            webhook=str(raw["webhook"]),
            event=str(raw["event"]),
            issue_id=raw.get("issue_id"),
            pos=int(raw.get("pos", 0)),
            body=str(raw["body"]).encode(),
            queued_at=str(raw.get("queued_at", "")),
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    event: str
    issue_id: int | None
    attempt: int
    status: int | None
    duration_ms: float
    error: str | None
    at: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "event": self.event,
            "issue_id": self.issue_id,
            "attempt": self.attempt,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 1),
            "error": self.error,
            "at": self.at,
        }


def epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: a Standard Webhooks ``whsec_<base64>`` secret is its
    decoded bytes, any other secret its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        with contextlib.suppress(ValueError):
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode()


def signed_headers(
    secret: str | None, delivery_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """``webhook-id``/``webhook-timestamp`` always; with a secret, the signatures: GitHub's
    ``X-Signature-256`` over the body, Standard Webhooks' over "id.timestamp.body"."""
    timestamp = str(int(time.time() if now is None else now))
    headers = {"webhook-id": delivery_id, "webhook-timestamp": timestamp}
    if secret:
        key = signing_key(secret)
        headers["X-Signature-256"] = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        signed = f"{delivery_id}.{timestamp}.".encode() + body
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        headers["webhook-signature"] = "v1," + base64.b64encode(digest).decode()
    return headers


def payload(name: str, event: Event, issue: Issue | dict[str, Any], delivery_id: str) -> bytes:
    """``{"event", "timestamp", "data", "changes"?, "delivery_id"}`` as the seed shows it.
    ``issue`` may be given as its ``issue_dict`` already (one per event, not per hook)."""
    body: dict[str, Any] = {
        "event": name,
        "timestamp": event.at[:19] + "Z",
        "data": issue if isinstance(issue, dict) else issue_dict(issue),
    }
    if event.type == "issue.updated":
        changes = event.data.get("changes") or {}
        previous = event.data.get("previous") or {}
        if isinstance(changes, dict) and changes:
            body["changes"] = {
                k: {"from": previous.get(k) if isinstance(previous, dict) else None, "to": v}
                for k, v in changes.items()
            }
    body["delivery_id"] = delivery_id
    # A copy of exact size: orjson's buffer is often several times larger than its
    # content, and a delivery may wait in memory for a long time behind a dead receiver.
    return memoryview(orjson.dumps(body)).tobytes()


class Journal:
    """One webhook's file: deliveries queued, their outcomes, and the attempts made."""

    def __init__(self, folder: Path, hook_id: str) -> None:
        self.path = folder / f"{hook_id}.yaml"
        self.pending: deque[Delivery] = deque()
        self.known: set[str] = set()  # ids queued or finished (no delivery twice)
        self.recent: OrderedDict[str, Delivery] = OrderedDict()  # for redelivery
        self.attempts: deque[Attempt] = deque(maxlen=KEEP)
        self.last_success: float | None = None
        self.failing_since: float | None = None
        self._finished = 0
        self._unwritten: list[bytes] = []  # attempt records waiting for finish()
        self._lock = asyncio.Lock()

    def load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        queued: OrderedDict[str, Delivery] = OrderedDict()
        # Line by line: a record torn by a crash costs only itself.
        for number, line in enumerate(data.splitlines()):
            if number % 256 == 255:
                time.sleep(0)  # the GIL to the loop now and then: this can take seconds
            try:
                items = load_items(line)
            except ValueError:
                continue
            for item in items:
                self._replay(item, queued)
        self.pending = deque(queued.values())

    def _replay(self, item: dict[str, Any], queued: OrderedDict[str, Delivery]) -> None:
        if "queued" in item:
            delivery = Delivery.from_record(item["queued"])
            queued[delivery.id] = delivery
            self.known.add(delivery.id)
            self._remember(delivery)
        elif "done" in item:
            queued.pop(str(item["done"]), None)
            self._finished += 1
        elif "attempt" in item:
            raw = item["attempt"]
            attempt = Attempt(**raw)
            self.attempts.append(attempt)
            self._note(attempt)

    def _remember(self, delivery: Delivery) -> None:
        self.recent[delivery.id] = delivery
        self.recent.move_to_end(delivery.id)
        while len(self.recent) > KEEP:
            self.recent.popitem(last=False)

    def _note(self, attempt: Attempt) -> None:
        at = epoch(attempt.at)
        if attempt.ok:
            self.last_success = at
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = at

    async def queue(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Append new deliveries durably; those already known are left out."""
        new = [d for d in deliveries if d.id not in self.known]
        if not new:
            return []
        data = b"".join(dump_item({"queued": d.record()}) for d in new)
        async with self._lock:
            await asyncio.to_thread(_append, self.path, data, True)
        for delivery in new:
            self.known.add(delivery.id)
            self.pending.append(delivery)
            self._remember(delivery)
        return new

    async def requeue(self, delivery: Delivery) -> None:
        """A redelivery by hand: the same delivery (same id) at the end of the queue."""
        async with self._lock:
            await asyncio.to_thread(
                _append, self.path, dump_item({"queued": delivery.record()}), True
            )
        self.pending.append(delivery)

    def attempted(self, attempt: Attempt) -> None:
        """In the delivery log now; on disk with the delivery's ``done`` mark."""
        self.attempts.append(attempt)
        self._note(attempt)
        self._unwritten.append(dump_item({"attempt": attempt.to_dict()}))

    async def flush(self) -> None:
        """Attempts not yet on disk (a ping's), without a ``done`` mark."""
        if self._unwritten:
            data, self._unwritten = b"".join(self._unwritten), []
            async with self._lock:
                await asyncio.to_thread(_append, self.path, data, False)

    async def finish(self, delivery: Delivery) -> None:
        """The delivery's attempts and its ``done`` mark, in one write and not fsynced:
        a crash that loses them sends the delivery again under its id, which
        at-least-once allows (an fsync per delivery would cost each webhook a disk
        commit per event)."""
        data = b"".join([*self._unwritten, dump_item({"done": delivery.id})])
        self._unwritten = []
        async with self._lock:
            await asyncio.to_thread(_append, self.path, data, False)
        if self.pending and self.pending[0].id == delivery.id:
            self.pending.popleft()
        self._finished += 1
        if self._finished >= COMPACT_AFTER:
            await self.compact()

    async def compact(self) -> None:
        """Rewrite the journal with what is still queued, the recent deliveries (for
        redelivery, as finished) and the attempts kept. Rendered in the worker thread,
        from copies of the (frozen) records: 3,000 lines cost about 16 ms (measured
        alone), which on the loop held back every answer due meanwhile. The copies are
        taken under the lock: a ``queue`` that appended before it has recorded its
        deliveries in memory too, so the rewrite cannot drop them."""
        async with self._lock:
            recent, pending = self.recent.copy(), list(self.pending)
            attempts = list(self.attempts)
            await asyncio.to_thread(_rewrite, self.path, recent, pending, attempts)
        self._finished = 0

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _rewrite(
    path: Path,
    recent: Mapping[str, Delivery],
    pending: list[Delivery],
    attempts: list[Attempt],
) -> None:
    """A compacted journal: the recent deliveries (finished unless still pending), the
    pending ones that are not recent, the attempts kept."""
    pending_ids = {d.id for d in pending}
    lines = [dump_item({"queued": d.record()}) for d in recent.values()]
    lines += [dump_item({"done": i}) for i in recent if i not in pending_ids]
    lines += [dump_item({"queued": d.record()}) for d in pending if d.id not in recent]
    lines += [dump_item({"attempt": a.to_dict()}) for a in attempts]
    replace_atomically(path, b"".join(lines))


def _retrieved(task: asyncio.Task[Journal]) -> None:
    """A journal read that failed is said when someone waits for it, not as an
    "exception was never retrieved" at exit."""
    if not task.cancelled():
        task.exception()


def _append(path: Path, data: bytes, durable: bool) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    if created and durable:
        fsync_dir(path.parent)


class Deliveries:
    """The ``webhooks`` subscriber and one worker per webhook."""

    def __init__(
        self,
        data_dir: Path,
        registry: WebhookRegistry,
        issue_at: IssueAt,
        project_of: Callable[[int], str | None],
        target_policy: TargetPolicy,
        *,
        policy: Policy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.folder = data_dir / "subscribers" / "webhooks"
        self.registry = registry
        self.issue_at = issue_at
        self.project_of = project_of
        self.target_policy = target_policy
        self.policy = policy or Policy()
        self.resolver = resolver
        self.journals: dict[str, Journal] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._recorded = asyncio.Event()  # an attempt was recorded (the seam of recorded())
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._loading: dict[str, asyncio.Task[Journal]] = {}  # journals being read
        # The HTTP of the attempts: a helper process, or this one when a test brings
        # its own resolver (hydraissue/sender.py says why).
        self.sender: Sender = (
            HelperProcessSender(target_policy)
            if resolver is None
            else InProcessSender(target_policy, resolver)
        )
        # Finished deliveries by outcome since start, per webhook (read by GET /metrics).
        self.outcomes: Counter[tuple[str, str]] = Counter()

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """The journals are read in the background: a dead receiver's backlog can be
        hundreds of MB (215 MB, 9 s of start-up, seen after a long bench), and the
        service must not wait for it. What needs a journal waits for it (``journal``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(remove_stale_temps, self.folder)
        for hook in self.registry.all():
            self._load_task(hook.id)

    def set_target_policy(self, policy: TargetPolicy) -> None:
        """Live config: new connections are checked against the new policy."""
        self.target_policy = policy
        self.sender.set_policy(policy)

    async def journal(self, hook_id: str) -> Journal:
        """A webhook's journal, once it is read (at once, but just after start-up)."""
        journal = self.journals.get(hook_id)
        if journal is not None:
            return journal
        return await asyncio.shield(self._load_task(hook_id))

    def _load_task(self, hook_id: str) -> asyncio.Task[Journal]:
        task = self._loading.get(hook_id)
        if task is None:
            task = self._loading[hook_id] = asyncio.create_task(
                self._load(hook_id), name=f"webhook-journal-{hook_id}"
            )
            task.add_done_callback(_retrieved)
        return task

    async def _load(self, hook_id: str) -> Journal:
        """Read a journal and start its worker; a failed read is tried again by the
        next caller."""
        journal = Journal(self.folder, hook_id)
        try:
            await asyncio.to_thread(journal.load)
        except BaseException as exc:
            self._loading.pop(hook_id, None)  # the next caller reads it again
            if not isinstance(exc, asyncio.CancelledError):
                log.error("webhook %s: its journal could not be read (%s)", hook_id, exc)
            raise
        self.journals[hook_id] = journal
        self._wake[hook_id] = asyncio.Event()
        self._workers[hook_id] = asyncio.create_task(self._work(hook_id), name=f"webhook-{hook_id}")
        if journal.pending:
            self._wake[hook_id].set()
        return journal

    async def stop(self) -> None:
        tasks = [*self._loading.values(), *self._workers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        self._workers.clear()
        self._loading.clear()
        await self.sender.close()

    async def added(self, hook: Webhook) -> None:
        await self.journal(hook.id)

    async def changed(self, hook: Webhook) -> None:
        if hook.active and hook.id in self._wake:
            self._wake[hook.id].set()  # switched on again: send what waits

    async def removed(self, hook_id: str) -> None:
        for task in (self._loading.pop(hook_id, None), self._workers.pop(hook_id, None)):
            if task is not None:
                task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
        journal = self.journals.pop(hook_id, None)
        self._wake.pop(hook_id, None)
        if journal is not None:
            await asyncio.to_thread(journal.remove)

    # -- the subscriber --------------------------------------------------------------

    async def handle(self, events: Sequence[Event]) -> None:
        hooks = [h for h in self.registry.all() if h.active]
        if not hooks:
            return
        batches: dict[str, list[Delivery]] = {}
        now = utc_now()
        for event in events:
            names = webhook_names(event)
            if not names:
                continue
            project = self.project_of(event.issue_id)
            wanted = [(h, h.wants(names, project)) for h in hooks if event.pos > h.after]
            wanted = [(h, name) for h, name in wanted if name is not None]
            if not wanted:
                continue
            issue = await self.issue_at(event.issue_id, event.seq)
            if issue is None:
                continue
            data = issue_dict(issue)
            for hook, name in wanted:
                assert name is not None
                delivery_id = f"whd_{event.pos}_{hook.number}"
                batches.setdefault(hook.id, []).append(
                    Delivery(
                        id=delivery_id,
                        webhook=hook.id,
                        event=name,
                        issue_id=event.issue_id,
                        pos=event.pos,
                        body=payload(name, event, data, delivery_id),
                        queued_at=now,
                    )
                )
        # The journals' fsyncs side by side, not one after another.
        journals = [await self.journal(hook_id) for hook_id in batches]
        queued = await asyncio.gather(
            *(j.queue(deliveries) for j, deliveries in zip(journals, batches.values(), strict=True))
        )
        for hook_id, new in zip(batches, queued, strict=True):
            if new:
                self._wake[hook_id].set()

    # -- the workers -----------------------------------------------------------------

    async def _work(self, hook_id: str) -> None:
        wake = self._wake[hook_id]
        while True:
            journal = self.journals.get(hook_id)
            hook = self.registry.find(hook_id)
            if journal is None or hook is None:
                return
            if not journal.pending or not hook.active:
                wake.clear()
                await wake.wait()
                continue
            delivery = journal.pending[0]
            ok = await self._deliver(hook_id, journal, delivery)
            self.outcomes[(hook_id, "delivered" if ok else "failed")] += 1
            await journal.finish(delivery)
            if not ok:
                await self._maybe_disable(hook_id, journal)

    async def _deliver(self, hook_id: str, journal: Journal, delivery: Delivery) -> bool:
        for number in range(1, self.policy.attempts + 1):
            hook = self.registry.find(hook_id)
            if hook is None:
                return False
            attempt = await self.attempt(hook, delivery, number)
            self._attempted(journal, attempt)
            if attempt.ok:
                return True
            if number < self.policy.attempts:
                waits = self.policy.waits
                await asyncio.sleep(waits[min(number - 1, len(waits) - 1)] if waits else 0)
        log.warning(
            "webhook %s: delivery %s (%s) failed %d times; recorded as failed",
            hook_id,
            delivery.id,
            delivery.event,
            self.policy.attempts,
        )
        return False

    async def attempt(self, hook: Webhook, delivery: Delivery, number: int) -> Attempt:
        """One POST of a delivery to its webhook, with the seed's timeout."""
        headers = {
            "Content-Type": "application/json",
            **signed_headers(hook.secret, delivery.id, delivery.body),
        }
        outcome = await self.sender.send(hook.url, delivery.body, headers, self.policy.timeout)
        return Attempt(
            delivery_id=delivery.id,
            event=delivery.event,
            issue_id=delivery.issue_id,
            attempt=number,
            status=outcome.status,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
            at=utc_now(),
        )

    def _attempted(self, journal: Journal, attempt: Attempt) -> None:
        journal.attempted(attempt)
        self._recorded.set()

    async def recorded(self, hook_id: str, count: int, timeout: float = 10.0) -> None:
        """Wait until a webhook's delivery log holds ``count`` attempts. The outcome of
        an attempt comes back from the helper process after the receiver answered, so
        a test that saw the request arrive waits on this before reading the log."""
        deadline = asyncio.get_running_loop().time() + timeout
        journal = await self.journal(hook_id)
        while len(journal.attempts) < count:
            self._recorded.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"{hook_id}: fewer than {count} attempts recorded")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recorded.wait(), left)

    async def _maybe_disable(self, hook_id: str, journal: Journal) -> None:
        since = journal.failing_since
        if since is None or time.time() - since < self.policy.disable_after:
            return
        hook = self.registry.find(hook_id)
        if hook is None or not hook.active:
            return
        last = journal.attempts[-1].error if journal.attempts else "unknown"
        hours = self.policy.disable_after / 3600
        reason = f"every delivery failed for {hours:g} h; last error: {last}"
        await asyncio.to_thread(
            self.registry.update, hook_id, {"active": False, "disabled_reason": reason}
        )
        log.error("webhook %s switched off: %s", hook_id, reason)

    # -- by hand ---------------------------------------------------------------------

    async def redeliver(self, hook_id: str, delivery_id: str) -> Delivery | None:
        journal = await self.journal(hook_id)
        delivery = journal.recent.get(delivery_id)
        if delivery is None:
            return None
        await journal.requeue(delivery)
        self._wake[hook_id].set()
        return delivery

    async def ping(self, hook: Webhook) -> Attempt:
        now = utc_now()
        delivery_id = f"whp_{int(time.time() * 1000)}_{hook.number}"
        body = orjson.dumps(
            {
                "event": "ping",
                "timestamp": now[:19] + "Z",
                "data": {"webhook": hook.public_dict()},
                "delivery_id": delivery_id,
            }
        )
        delivery = Delivery(delivery_id, hook.id, "ping", None, 0, body, now)
        journal = await self.journal(hook.id)
        attempt = await self.attempt(hook, delivery, 1)
        self._attempted(journal, attempt)
        await journal.flush()
        return attempt

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            hook_id: {"queued": len(journal.pending)} for hook_id, journal in self.journals.items()
        }
