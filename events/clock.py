"""UTC timestamps as RFC 3339 strings with ``Z``; fixed width, so they sort as text."""

from __future__ import annotations

import time
from functools import lru_cache


@lru_cache(maxsize=1)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def utc_now() -> str:
    """Milliseconds, UTC, e.g. 2026-11-25T14:23:28.341Z (one strftime per second)."""
    now = time.time()
    second = int(now)
    return f"{_second(second)}.{int((now - second) * 1000):03d}Z"
