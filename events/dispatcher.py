"""Fans committed events out to named subscribers, each from its own durable checkpoint.

A subscriber is a name and an ``async handle(events)``. It runs in its own task, off
the request path: it reads committed events in position order from the store (memory
for recent ones, the logs for older ones), handles a batch, then moves its checkpoint
past it. A subscriber that raises is retried from its checkpoint with a growing pause
and reported in the log; it never delays a response or another subscriber.

Checkpoints live in ``subscribers/{name}.yaml`` (replaced atomically). They are written
at most every ``checkpoint_every`` seconds, also when the subscriber has caught up
(``_save_when_quiet``), so a crash repeats at most that much work: handlers must
tolerate seeing an event again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from events.fsio import remove_stale_temps, replace_atomically
from events.model import Event
from events.store import EventStore

log = logging.getLogger("hydraissue.dispatcher")

Handler = Callable[[Sequence[Event]], Awaitable[None]]
_POSITION = re.compile(rb"^position: *(\d+) *$", re.MULTILINE)
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass(slots=True)
class Subscriber:
    name: str
    handle: Handler
    initial: Callable[[], int]
    batch: int
    coalesce: float = 0.0
    position: int = 0
    handled_at: float = 0.0
    saved: int = -1  # the position last written to the checkpoint file
    saved_at: float = 0.0
    failures: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = None

    def status(self, head: int) -> dict[str, object]:
        return {
            "position": self.position,
            "lag": max(0, head - self.position),
            "failures": self.failures,
            "last_error": self.last_error,
        }


def checkpoint_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.yaml"


def render_checkpoint(name: str, position: int) -> bytes:
    return (
        f"# HydraIssue: the last position subscriber {name!r} has processed.\n"
        f"# Rebuilt from events/ if removed (the subscriber then starts afresh).\n"
        f"position: {position}\n"
    ).encode()


def write_checkpoint(folder: Path, name: str, position: int) -> None:
    """Set a subscriber's checkpoint (replay does, for the projections it rebuilt)."""
    folder.mkdir(parents=True, exist_ok=True)
    replace_atomically(checkpoint_path(folder, name), render_checkpoint(name, position))


class Dispatcher:
    def __init__(
        self,
        store: EventStore,
        folder: Path,
        *,
        checkpoint_every: float = 0.5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.store = store
        self.folder = folder
        self.checkpoint_every = checkpoint_every
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._subscribers: dict[str, Subscriber] = {}
        self._progress = asyncio.Event()
        self._hurry = asyncio.Event()  # set while someone waits for idle: no coalescing

    def add(
        self,
        name: str,
        handle: Handler,
        *,
        initial: Callable[[], int] | int = 0,
        batch: int = 256,
        coalesce: float = 0.0,
    ) -> None:
        """Register before ``start``. ``initial``: where a subscriber with no checkpoint
        starts (0 replays the whole history to it). ``coalesce``: handle at most one
        batch per that many seconds, taking everything that arrived meanwhile (up to
        ``batch``), for subscribers whose cost is per call rather than per event."""
        if not NAME.match(name) or name in self._subscribers:
            raise ValueError(f"bad or duplicate subscriber name {name!r}")
        start = initial if callable(initial) else (lambda: initial)
        self._subscribers[name] = Subscriber(name, handle, start, batch, coalesce)

    @property
    def subscribers(self) -> dict[str, Subscriber]:
        return self._subscribers

    def path(self, name: str) -> Path:
        return checkpoint_path(self.folder, name)

    def read_checkpoint(self, name: str) -> int | None:
        try:
            match = _POSITION.search(self.path(name).read_bytes())
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("checkpoint of %s unreadable (%s); starting it afresh", name, exc)
            return None
        if match is None:
            log.warning("checkpoint of %s unreadable; starting it afresh", name)
            return None
        return int(match.group(1))

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.folder)
        for sub in self._subscribers.values():
            saved = self.read_checkpoint(sub.name)
            sub.position = saved if saved is not None else sub.initial()
            sub.saved = saved if saved is not None else -1
            sub.task = asyncio.create_task(self._run(sub), name=f"subscriber-{sub.name}")

    async def stop(self, drain: float = 5.0) -> None:
        """Let subscribers catch up (at most ``drain`` seconds), stop them, save checkpoints."""
        with contextlib.suppress(TimeoutError):
            await self.idle(timeout=drain)
        for sub in self._subscribers.values():
            if sub.task is not None:
                sub.task.cancel()
        for sub in self._subscribers.values():
            if sub.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await sub.task
                sub.task = None
            await self._save(sub)

    async def idle(self, timeout: float | None = None) -> None:
        """Wait until every subscriber has handled everything committed before this call
        (coalescing subscribers stop waiting for more meanwhile)."""
        target = self.store.head
        deadline = None if timeout is None else time.monotonic() + timeout
        self._hurry.set()
        try:
            while any(sub.position < target for sub in self._subscribers.values()):
                self._progress.clear()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    behind = [s.name for s in self._subscribers.values() if s.position < target]
                    raise TimeoutError(f"subscribers still behind position {target}: {behind}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._progress.wait(), 1 if left is None else min(left, 1)
                    )
        finally:
            self._hurry.clear()

    def status(self) -> dict[str, dict[str, object]]:
        head = self.store.head
        return {name: sub.status(head) for name, sub in self._subscribers.items()}

    async def _run(self, sub: Subscriber) -> None:
        pause = self.backoff
        while True:
            events = await self.store.read_after(sub.position, sub.batch)
            if events and sub.coalesce and not self._hurry.is_set():
                wait = sub.handled_at + sub.coalesce - time.monotonic()
                if wait > 0 and len(events) < sub.batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), wait)
                    events = await self.store.read_after(sub.position, sub.batch)
            if not events:
                if sub.saved != sub.position and not await self._save_when_quiet(sub):
                    continue  # more came before the checkpoint was due: handle it first
                self._progress.set()
                if not await self.store.wait_for(sub.position, timeout=30.0):
                    await asyncio.sleep(0.05)  # closing, or a quiet half minute
                continue
            try:
                await sub.handle(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                sub.failures += 1
                sub.last_error = f"{type(exc).__name__}: {exc}"
                first, last = events[0].pos, events[-1].pos
                if sub.failures == 1:
                    log.exception("subscriber %s failed on positions %d-%d", sub.name, first, last)
                log.error(
                    "subscriber %s failed (%d in a row) on positions %d-%d: %s; "
                    "retrying from its checkpoint in %.0fs",
                    sub.name,
                    sub.failures,
                    first,
                    last,
                    sub.last_error,
                    pause,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.max_backoff)
                continue
            if sub.failures:
                log.info("subscriber %s recovered after %d failures", sub.name, sub.failures)
            sub.failures = 0
            sub.last_error = None
            pause = self.backoff
            sub.position = events[-1].pos
            sub.handled_at = time.monotonic()
            self._progress.set()
            if self._save_due_in(sub) <= 0:
                await self._save(sub)

    def _save_due_in(self, sub: Subscriber) -> float:
        """Seconds until the subscriber's checkpoint may be written again (the pace)."""
        return sub.saved_at + self.checkpoint_every - time.monotonic()

    async def _save_when_quiet(self, sub: Subscriber) -> bool:
        """A subscriber that caught up saves its checkpoint, but not more often than
        ``checkpoint_every`` while events keep coming: under a stream of writes a
        subscriber catches up after every commit, and a checkpoint per commit (a file
        replaced and two fsyncs, for each subscriber) competed with the commits
        themselves. Saved at once when someone waits for ``idle``; else as soon as
        ``checkpoint_every`` has passed since the last save with nothing new. False
        when new events came first (the caller handles them; the save waits)."""
        due = self._save_due_in(sub)
        if due > 0 and not self._hurry.is_set():
            self._progress.set()  # caught up: an idle() waiter need not wait for the save
            if await self.store.wait_for(sub.position, timeout=due):
                return False
        await self._save(sub)
        return True

    async def _save(self, sub: Subscriber) -> None:
        if sub.saved == sub.position:
            return
        position = sub.position
        try:
            await asyncio.to_thread(write_checkpoint, self.folder, sub.name, position)
        except OSError as exc:
            log.warning("checkpoint of %s not written (%s); will retry", sub.name, exc)
            return
        sub.saved = position
        sub.saved_at = time.monotonic()
