"""Idempotency keys: a retried POST gets the first response and appends nothing.

Records live in memory and in ``idempotency.yaml`` (appended with fsync after the
response is decided, compacted at start-up), so a retry after a restart is still
recognised within the 24-hour window. Keys are scoped: the API and the public form
each have their own, so a stranger cannot occupy an agent's key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from events.codec import dump_item
from events.fsio import append_durably, replace_atomically

WINDOW_SECONDS = 24 * 3600
PRUNE_EVERY = 600  # seconds between sweeps of expired records from memory


@dataclass(frozen=True, slots=True)
class Stored:
    key: str
    fingerprint: str
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]
    expires: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "content_type": self.content_type,
            "body": base64.b64encode(self.body).decode(),
            "headers": self.headers,
            "expires": self.expires,
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> Stored:
        return Stored(
            key=raw["key"],
            fingerprint=raw["fingerprint"],
            status=int(raw["status"]),
            content_type=raw["content_type"],
            body=base64.b64decode(raw["body"]),
            headers=dict(raw.get("headers") or {}),
            expires=float(raw["expires"]),
        )


class IdempotencyStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "idempotency.yaml"
        self._records: dict[str, Stored] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pruned = 0.0

    def load(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        # Line by line: a record torn by a crash costs only itself, not every other one.
        for line in data.splitlines():
            try:
                record = Stored.from_dict(orjson.loads(line.removeprefix(b"- ")))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue
            if record.expires > now:
                self._records[record.key] = record
        replace_atomically(
            self.path, b"".join(dump_item(r.to_dict()) for r in self._records.values())
        )

    @contextlib.asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[None]:
        """Serialise requests with the same key so a concurrent retry waits for the first."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    def get(self, key: str, now: float | None = None) -> Stored | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record.expires <= (time.time() if now is None else now):
            del self._records[key]
            return None
        return record

    async def put(self, record: Stored, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if now - self._pruned > PRUNE_EVERY:
            self._records = {k: r for k, r in self._records.items() if r.expires > now}
            self._pruned = now
        self._records[record.key] = record
        await asyncio.to_thread(append_durably, self.path, dump_item(record.to_dict()))
