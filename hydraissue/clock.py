"""UTC timestamps as RFC 3339 strings with ``Z``; fixed width, so they sort as text."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
