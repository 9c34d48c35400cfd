"""Typed application and request keys: the only way handlers reach shared objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from hydraissue.config import Config
from hydraissue.ratelimit import RateLimiter
from hydraissue.service import Idempotency, IssueService
from hydraissue.sessions import LoginThrottle, Sessions
from web.representation import IssueJson

# What a middleware calls next: the rest of the chain, then the route's handler.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Methods that change nothing: safe to send again, and exempt from CSRF checks.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
IDEMPOTENCY_HEADER = "Idempotency-Key"

CONFIG = web.AppKey("config", Config)
# serve's automatic updates, as health and /metrics show them (hydraissue/updater.py)
UPDATE_STATUS: web.AppKey[Callable[[], dict[str, object]]] = web.AppKey("update_status")
SERVICE = web.AppKey("service", IssueService)
ISSUE_JSON = web.AppKey("issue_json", IssueJson)
STARTED = web.AppKey("started", float)
RUNBOOK = web.AppKey("runbook", bytes)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)
KEY_LOCKS = web.AppKey("key_locks", dict)
FEED_KEEPALIVE = web.AppKey("feed_keepalive", float)
SESSIONS = web.AppKey("sessions", Sessions)
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)

# Set by the idempotency middleware: the scoped key, and (for bodies it can read whole)
# the request's fingerprint; multipart handlers compute theirs from what they received.
IDEMPOTENCY_KEY = web.RequestKey("idempotency_key", str)
IDEMPOTENCY = web.RequestKey("idempotency", Idempotency)
