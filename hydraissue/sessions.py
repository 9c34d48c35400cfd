"""Admin sessions: random ids in a cookie, kept in ``sessions.yaml`` so they survive a
restart, and a throttle on failed logins.

The cookie carries a random session id, never the admin token. The file stores only
the SHA-256 of each id (a copy of the data dir opens no session) with its CSRF token
and expiry, and a fingerprint of the admin token the sessions were opened with: when
the token changes, every session ends at the next start.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.codec import dump_item, load_items
from events.fsio import replace_atomically

FORMAT = 1
MAX_SESSIONS = 1000  # the oldest go first; an admin is a handful of people


def _digest(session_id: str) -> str:
    # a cookie may carry bytes that are not UTF-8 (kept as surrogates): hashed as sent
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def token_fingerprint(admin_token: str) -> str:
    """Which admin token opened the sessions (a salted hash, not the token)."""
    return hashlib.sha256(b"hydraissue-admin-sessions\n" + admin_token.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Session:
    digest: str
    csrf: str
    created: float
    expires: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id_sha256": self.digest,
            "csrf": self.csrf,
            "created": round(self.created, 3),
            "expires": round(self.expires, 3),
        }


class Sessions:
    """Every open admin session, in memory and in ``sessions.yaml`` (0600)."""

    def __init__(self, data_dir: Path, admin_token: str, max_age: float) -> None:
        self.path = data_dir / "sessions.yaml"
        self.fingerprint = token_fingerprint(admin_token)
        self.max_age = max_age
        self._by_digest: OrderedDict[str, Session] = OrderedDict()

    def load(self) -> None:
        """Sessions of an earlier run, unless the admin token changed since."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        head, sep, body = data.partition(b"\nsessions:\n")
        if f"token: {self.fingerprint}".encode() not in head or not sep:
            self._save()  # another token (or an unreadable file): all sessions end
            return
        now = time.time()
        for raw in load_items(body):
            session = Session(
                str(raw["id_sha256"]),
                str(raw["csrf"]),
                float(raw["created"]),
                float(raw["expires"]),
            )
            if session.expires > now:
                self._by_digest[session.digest] = session

    def _save(self) -> None:
        body = (
            b"# HydraIssue admin sessions (log in at /login). Hashes of the session ids.\n"
            + f"format: {FORMAT}\ntoken: {self.fingerprint}\nsessions:\n".encode()
            + b"".join(dump_item(s.to_dict()) for s in self._by_digest.values())
        )
        replace_atomically(self.path, body, mode=0o600)

    def open(self) -> tuple[str, Session]:
        """A new session (a fresh id at every login): the cookie's value and its record."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(_digest(session_id), secrets.token_urlsafe(24), now, now + self.max_age)
        self._prune(now)
        self._by_digest[session.digest] = session
        while len(self._by_digest) > MAX_SESSIONS:
            self._by_digest.popitem(last=False)
        self._save()
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        """The open session with this id (looked up by its hash), if not expired."""
        if not session_id or len(session_id) > 200:
            return None
        session = self._by_digest.get(_digest(session_id))
        if session is None or session.expires <= time.time():
            return None
        return session

    def close(self, session_id: str) -> None:
        if self._by_digest.pop(_digest(session_id), None) is not None:
            self._save()

    def _prune(self, now: float) -> None:
        for digest in [d for d, s in self._by_digest.items() if s.expires <= now]:
            del self._by_digest[digest]

    def __len__(self) -> int:
        return len(self._by_digest)


class LoginThrottle:
    """Failed logins per client address: a growing wait, then a refusal for a while.

    Only failures count, and only from that address: the admin logging in from
    elsewhere is never locked out by someone guessing.
    """

    def __init__(
        self,
        free: int = 3,
        limit: int = 10,
        window: float = 900.0,
        unit: float = 1.0,
        max_clients: int = 10_000,
    ) -> None:
        self.free = free  # failures before the waits start
        self.limit = limit  # failures in the window before a 429
        self.window = window
        self.unit = unit  # the first wait; each next one doubles, up to 8 of them
        self.max_clients = max_clients
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, ()) if now - t < self.window]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds until this address may try again (0: now)."""
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        if len(times) < self.limit:
            return 0
        return max(1, int(times[-self.limit] + self.window - now) + 1)

    def delay(self, client: str, now: float | None = None) -> float:
        """How long to hold this address's next attempt: 0, then 1 s, 2 s, 4 s, … 8 s."""
        now = time.monotonic() if now is None else now
        over = len(self._recent(client, now)) - self.free
        return 0.0 if over < 0 else self.unit * min(2**over, 8)

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._failures.setdefault(client, []).append(now)
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
