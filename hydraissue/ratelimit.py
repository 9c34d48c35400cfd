"""A token bucket per client: a burst of ``burst`` reports, refilled at ``per_minute``.

Only what a caller spends counts: the report form takes a token for a report it is
about to create and gives it back when nothing was created (refused input, a replay),
so failed submissions never use up the limit. Clients are counted by address, IPv6 by
its /64 (one phone, or one home, gets a whole /64), and exempt networks (a venue's NAT,
a kiosk network) are never limited.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Sequence

MAX_TRACKED = 10_000
DEFAULT_BURST = 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_key(address: str) -> str:
    """The bucket of an address: IPv4 as it is, IPv6 by its /64 (mapped IPv4 unwrapped)."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        burst: int = DEFAULT_BURST,
        exempt: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.burst = max(1, burst)
        self.exempt: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in exempt
        )
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.exempt)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.per_minute / 60.0)

    def _wait(self, tokens: float) -> int:
        return max(1, math.ceil((1.0 - tokens) * 60.0 / self.per_minute))

    def peek(self, address: str) -> int:
        """0 if a report from this address would be allowed now, else seconds to wait."""
        if not self.enabled or self.is_exempt(address):
            return 0
        tokens = self._tokens(client_key(address), self.clock())
        return 0 if tokens >= 1.0 else self._wait(tokens)

    def take(self, address: str) -> int:
        """Spend a token: 0 when allowed (give it back with ``refund`` if nothing was
        created), else the seconds until the next one."""
        if not self.enabled or self.is_exempt(address):
            return 0
        key, now = client_key(address), self.clock()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            return self._wait(tokens)
        if key not in self._buckets and len(self._buckets) >= MAX_TRACKED:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0

    def refund(self, address: str) -> None:
        if not self.enabled or self.is_exempt(address):
            return
        key, now = client_key(address), self.clock()
        if key in self._buckets:
            self._buckets[key] = (min(float(self.burst), self._tokens(key, now) + 1.0), now)

    def _forget_full(self, now: float) -> None:
        """Buckets that have refilled carry no information: drop them."""
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.burst]:
            del self._buckets[key]
