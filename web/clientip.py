"""Which IP a request came from, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_ip(request: web.Request, trusted: tuple[Network, ...]) -> str:
    peer = request.remote or "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    # Every header line: a proxy may add its own line after one the client forged.
    joined = ",".join(request.headers.getall("X-Forwarded-For", []))
    hops = [h.strip() for h in joined.split(",") if h.strip()]
    # Walk from the nearest hop outwards; the first address we do not trust is the client.
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return hops[0] if hops else peer
