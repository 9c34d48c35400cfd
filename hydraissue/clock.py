"""UTC timestamps as RFC 3339 strings with ``Z``; fixed width, so they sort as text."""

from __future__ import annotations

import time

_last_second = -1
_prefix = ""


def utc_now() -> str:
    """Milliseconds, UTC, e.g. 2026-11-25T14:23:28.341Z (the second's text is reused)."""
    global _last_second, _prefix
    now = time.time()
    second = int(now)
    if second != _last_second:
        _prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = second
    return f"{_prefix}.{int((now - second) * 1000):03d}Z"
