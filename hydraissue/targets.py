"""Where a webhook may send: URLs checked, and every address dialled checked again.

By default a webhook may not reach this machine or its networks: loopback, private,
link-local (cloud metadata lives there), unique-local, shared (CGNAT), multicast,
reserved or unspecified addresses, in IPv4, IPv6 and IPv4-mapped IPv6 forms, nor a host
name that resolves to one. The check runs at registration (a clear 400) and again at
connect time on the address actually dialled (``GuardedResolver``), so a name that
resolves differently the second time (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SHARED = ipaddress.ip_network("100.64.0.0/10")  # CGNAT: not "private" to ipaddress


class TargetRefused(Exception):
    """A webhook URL or address this deployment does not send to; says why."""


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()

    @staticmethod
    def from_config(allow_private: bool, allowed: Sequence[str]) -> TargetPolicy:
        hosts: set[str] = set()
        networks: list[Network] = []
        for entry in allowed:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return TargetPolicy(allow_private, frozenset(hosts), tuple(networks))

    def as_config(self) -> tuple[bool, list[str]]:
        """The arguments of ``from_config`` that make this policy again (how the webhook
        helper process is told it, hydraissue/sender.py)."""
        allowed = sorted(self.allowed_hosts) + [str(n) for n in self.allowed_networks]
        return self.allow_private, allowed

    def host_allowed(self, host: str) -> bool:
        return self.allow_private or host.lower().rstrip(".") in self.allowed_hosts

    def refusal(self, address: IPAddress, host: str) -> str | None:
        """Why ``address`` (what ``host`` resolved to) is refused, or None."""
        if self.host_allowed(host):
            return None
        if any(address in network for network in self.allowed_networks):
            return None
        reason = non_public(address)
        return f"{address} is {reason}" if reason else None


def non_public(address: IPAddress) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return non_public(address.ipv4_mapped)
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address (cloud metadata lives there)"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_multicast, "a multicast address"),
        (
            isinstance(address, ipaddress.IPv4Address) and address in SHARED,
            "a shared (CGNAT) address",
        ),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def parse_target(url: str) -> SplitResult:
    """A webhook URL's parts; TargetRefused naming what is wrong with it."""
    if not isinstance(url, str) or not url.strip():
        raise TargetRefused("must be an http:// or https:// URL")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"must be http:// or https://, not {parts.scheme or 'no scheme'}")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials (user:password@); use a secret")
    if not parts.hostname:
        raise TargetRefused("has no host")
    if port == 0:
        raise TargetRefused("has port 0")
    return parts


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver with the policy applied to every address it hands back.

    Used by the delivery client's connector, so the address actually dialled is the
    one checked. ``inner`` is the resolver doing the lookups (a test gives its own).
    """

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        literal = literal_address(host)
        if literal is not None:
            found: list[ResolveResult] = [
                {
                    "hostname": host,
                    "host": str(literal),
                    "port": port,
                    "family": socket.AF_INET6 if literal.version == 6 else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]
        else:
            found = await self.inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for item in found:
            address = literal_address(item["host"])
            reason = (
                "an address that is not an IP"
                if address is None
                else self.policy.refusal(address, host)
            )
            if reason is None:
                allowed.append(item)
            else:
                reasons.append(reason)
        if not allowed:
            # An errno and strerror, so aiohttp's connector error keeps the reason.
            reason = "; ".join(reasons) or "no address"
            raise OSError(errno.EACCES, f"refused to connect to {host}: {reason}")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


async def check_target(url: str, policy: TargetPolicy, resolver: AbstractResolver) -> None:
    """At registration: the URL is well formed and *every* address it names may be used
    (a name with one private address among public ones is refused)."""
    parts = parse_target(url)
    host = parts.hostname or ""
    if policy.host_allowed(host):
        return
    literal = literal_address(host)
    if literal is not None:
        addresses: list[IPAddress | None] = [literal]
    else:
        try:
            found = await resolver.resolve(host, parts.port or 0, socket.AF_UNSPEC)
        except OSError as exc:
            raise TargetRefused(f"host {host!r} cannot be resolved ({exc})") from None
        addresses = [literal_address(item["host"]) for item in found]
    for address in addresses:
        reason = (
            "an address that is not an IP" if address is None else policy.refusal(address, host)
        )
        if reason is not None:
            raise TargetRefused(
                f"refused: {host} resolves to {reason}" if literal is None else f"refused: {reason}"
            )
