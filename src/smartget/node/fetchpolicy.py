"""Which addresses the node may fetch from (issue 12, item 5). Sans-IO: addresses in,
decisions out.

Theory of operation
-------------------
A task names a URL (``fileurl``, ``torrentfileurl``) and the node fetches it, following
redirects. Whoever can post a task, or answer one of its fetches with a redirect,
could otherwise make the node fetch from its own network (a loopback admin port, a
cloud metadata service at 169.254.169.254, an intranet host) and store the reply in
wwwroot, which the file server hands to anyone. So every hop's address is checked, the
first one and each redirect alike:

* an address inside a network the operator allowed (``--fetch-allow NET``, repeatable)
  is fetched from, whatever it is;
* otherwise loopback, link-local, private (RFC 1918, ULA), shared (100.64/10),
  reserved, documentation, unspecified and multicast addresses are refused: only
  globally routable ones are fetched from. IPv4 addresses inside IPv6 (``::ffff:a.b.c.d``,
  6to4) are judged as the IPv4 address they carry.

The decision is taken on the *resolved* address the driver then connects to (the
fetcher resolves a name once, asks :meth:`FetchPolicy.refusal` of each address and
dials only an allowed one), so a name that answers differently on a second lookup (DNS
rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from smartget.errors import ConfigError

__all__ = ["FetchPolicy", "Network", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

FLAG = "--fetch-allow"


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """``("10.0.0.0/8", "127.0.0.1")`` -> networks; a bare address is a /32 (or /128)."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{FLAG}: expected a network such as 10.0.0.0/8, 127.0.0.1 or fd00::/8, "
                f"got {text[:80]!r}"
            ) from None
    return tuple(networks)


def _judged(address: Address) -> Address:
    """The address a packet to ``address`` really goes to, for IPv4 carried in IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return inner
    return address


def _kind(address: Address) -> str | None:
    """What makes ``address`` one the node does not fetch from by default, or None."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-global"
    return None


@dataclass(frozen=True)
class FetchPolicy:
    """The networks an operator allowed beyond the globally routable addresses."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> FetchPolicy:
        return cls(parse_networks(texts))

    def refusal(self, address: str) -> str | None:
        """Why the node must not fetch from ``address`` (an IP literal), or None if it may."""
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])  # drop an IPv6 zone
        except ValueError:
            return f"{address[:80]!r} is not an IP address"
        judged = _judged(ip)
        for net in self.allow:
            if any(a.version == net.version and a in net for a in (ip, judged)):
                return None
        kind = _kind(judged)
        if kind is None:
            return None
        return (
            f"{address} is a {kind} address; the node fetches from such addresses only "
            f"in networks allowed with {FLAG} NET"
        )
