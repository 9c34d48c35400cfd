"""Comparing a token a client sent with the configured one."""

from __future__ import annotations

import hmac


def matches(sent: str, expected: str) -> bool:
    """Constant time. A header may carry bytes that are not UTF-8 (aiohttp keeps them
    as surrogates): they are compared as the bytes sent, never an encoding error (a 500
    with a traceback, as a token of ``\\xff`` once was)."""
    return hmac.compare_digest(
        sent.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
