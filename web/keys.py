"""Typed application keys: the only way handlers reach shared objects."""

from __future__ import annotations

from aiohttp import web

from hydraissue.config import Config
from hydraissue.idempotency import IdempotencyStore
from hydraissue.ratelimit import RateLimiter
from hydraissue.service import IssueService

CONFIG = web.AppKey("config", Config)
SERVICE = web.AppKey("service", IssueService)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)
STARTED = web.AppKey("started", float)
RUNBOOK = web.AppKey("runbook", bytes)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)
