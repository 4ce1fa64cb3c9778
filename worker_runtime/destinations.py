"""Which addresses a webhook may be POSTed to (SSRF): a pure check plus the resolver.

A task's submitter picks the URL, and the dispatcher runs inside the cluster: without
a check, a webhook could reach the cluster's own services, the cloud metadata
endpoint, or localhost. Every address the host resolves to must be globally
routable, unless it is inside an allowed network (``--allow-cidr``) or private
destinations are allowed altogether (``--allow-private``). The addresses checked are
the ones connected to: the HTTP client resolves through ``CheckingResolver``, so a
name that resolves differently the second time (DNS rebinding) is still checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AddressRules:
    """Where webhooks may go: public addresses, plus these networks (or anywhere)."""

    allow_private: bool = False
    allowed: Sequence[IPNetwork] = field(default_factory=tuple)


def refusal(address: IPAddress, rules: AddressRules) -> str | None:
    """Why ``address`` is refused (a sentence), or None when a webhook may go there."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if rules.allow_private or any(address in net for net in rules.allowed):
        return None
    for kind, flagged in (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a reserved", address.is_reserved),
        ("a private", address.is_private),
        ("a non-public", not address.is_global),
    ):
        if flagged:
            return (
                f"{address} is {kind} address; webhooks go to public addresses only "
                "(allow it with --allow-private or --allow-cidr)"
            )
    return None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs; raises ValueError naming a bad one."""
    nets = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"not a network (CIDR): {item!r}") from None
    return tuple(nets)


class RefusedDestinationError(OSError):
    """Every address of the webhook's host is refused by the rules."""


class CheckingResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the rules allow."""

    def __init__(self, rules: AddressRules) -> None:
        self.rules = rules
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host``; raises ``RefusedDestinationError`` if any is refused."""
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            why = refusal(ipaddress.ip_address(entry["host"]), self.rules)
            if why is not None:
                raise RefusedDestinationError(f"{host}: {why}")
        return found

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


def literal_refusal(host: str, rules: AddressRules) -> str | None:
    """For a host written as an IP address, why it is refused; None otherwise."""
    try:
        address: Any = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return refusal(address, rules)
