"""Typed application keys: the only way handlers reach shared objects."""

from __future__ import annotations

from aiohttp import web

from hydraissue.config import Config
from hydraissue.idempotency import IdempotencyStore
from hydraissue.service import IssueService

CONFIG = web.AppKey("config", Config)
SERVICE = web.AppKey("service", IssueService)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)
STARTED = web.AppKey("started", float)
RUNBOOK = web.AppKey("runbook", bytes)
