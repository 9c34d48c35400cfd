"""Idempotency keys: a retried POST gets the first response and appends nothing.

Records live in memory and in ``idempotency.yaml`` (appended with fsync after the
response is decided, compacted at start-up), so a retry after a restart is still
recognised within the 24-hour window.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.codec import dump_item, load_items
from events.fsio import append_durably, replace_atomically

WINDOW_SECONDS = 24 * 3600


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

    def load(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        try:
            items = load_items(self.path.read_bytes())
        except FileNotFoundError:
            return
        except ValueError:
            items = []  # a damaged cache only costs retries their protection
        for item in items:
            try:
                record = Stored.from_dict(item)
            except (KeyError, TypeError, ValueError):
                continue
            if record.expires > now:
                self._records[record.key] = record
        replace_atomically(
            self.path, b"".join(dump_item(r.to_dict()) for r in self._records.values())
        )

    def lock(self, key: str) -> asyncio.Lock:
        """Serialise requests with the same key so a concurrent retry waits for the first."""
        return self._locks.setdefault(key, asyncio.Lock())

    def get(self, key: str, now: float | None = None) -> Stored | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record.expires <= (time.time() if now is None else now):
            del self._records[key]
            return None
        return record

    async def put(self, record: Stored) -> None:
        self._records[record.key] = record
        await asyncio.to_thread(append_durably, self.path, dump_item(record.to_dict()))
        self._locks.pop(record.key, None)
