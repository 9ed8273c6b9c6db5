"""Which link carries traffic to each peer, and which addresses to dial; pure bookkeeping.

Two nodes that dial each other at once end up with two links. Both ends must keep the
same one without talking about it: the link dialed by the smaller node id wins, and the
other is *retired* (link.py: the peer is told "bye" after anything already queued, so
nothing sent on it is lost). :class:`LinkRegistry` holds the links of every peer and
says what to do as they come up, go down or are retired; :class:`DialBook` remembers the
dials under way and which configured address turned out to be which node.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["MAX_DIALING", "DialBook", "LinkRegistry", "LinkUpOutcome", "PeerLink"]

MAX_DIALING = 64  # dials under way at once; the rest wait for the next heartbeat


class PeerLink(Protocol):
    """What the registry reads of a link."""

    @property
    def peer_id(self) -> str: ...
    @property
    def dialed(self) -> bool: ...
    @property
    def up(self) -> bool: ...
    @property
    def retiring(self) -> bool: ...


L = TypeVar("L", bound=PeerLink)


@dataclass(frozen=True, slots=True)
class LinkUpOutcome(Generic[L]):
    """``new``: the peer had no link (route to it now); ``retire``: a duplicate to end."""

    new: bool
    retire: L | None = None


class LinkRegistry(Generic[L]):
    """The links of one node: every connection, and the one in use per peer."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.links: dict[str, L] = {}  # the link in use, by peer id
        self.connections: set[L] = set()  # every connection with a verified peer

    def made(self, link: L) -> None:
        self.connections.add(link)

    def up(self, link: L) -> LinkUpOutcome[L]:
        """``link`` got its first packet: use it, or settle a duplicate."""
        peer = link.peer_id
        old = self.links.get(peer)
        if old is None or old is link:
            self.links[peer] = link
            return LinkUpOutcome(new=True)
        # Both sides dialed: keep the link dialed by the smaller id, on both ends.
        keep_new = link.dialed == (self.node_id < peer)
        if keep_new:
            self.links[peer] = link
        return LinkUpOutcome(new=False, retire=old if keep_new else link)

    def lost(self, link: L) -> bool:
        """``link`` closed; True when it was the peer's link in use (the peer is gone)."""
        self.connections.discard(link)
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            return True
        return False

    def retired_by_peer(self, link: L) -> bool:
        """The peer said "bye" on ``link``; True when the peer has no other link left."""
        peer = link.peer_id
        if self.links.get(peer) is not link:
            return False
        others = [
            c
            for c in self.connections
            if c is not link and c.peer_id == peer and c.up and not c.retiring
        ]
        if others:
            self.links[peer] = others[0]
            return False
        del self.links[peer]
        return True


class DialBook:
    """Dials under way, and which node each configured address turned out to be."""

    def __init__(self, node_id: str, max_dialing: int = MAX_DIALING) -> None:
        self.node_id = node_id
        self.max_dialing = max_dialing
        self.dialing: set[tuple[str, int]] = set()
        self.known: dict[tuple[str, int], str] = {}  # address -> the node id it presented

    def start(self, host: str, port: int) -> bool:
        """True when a dial to ``host:port`` may start now (none under way, room left)."""
        if (host, port) in self.dialing or len(self.dialing) >= self.max_dialing:
            return False
        self.dialing.add((host, port))
        return True

    def learned(self, host: str, port: int, peer_id: str) -> None:
        self.known[(host, port)] = peer_id

    def finished(self, host: str, port: int) -> None:
        self.dialing.discard((host, port))

    def to_redial(
        self, configured: Iterable[tuple[str, int]], linked: Iterable[str]
    ) -> list[tuple[str, int]]:
        """Configured addresses not known to be ourselves nor a peer we are linked to."""
        up = set(linked)
        return [
            address
            for address in configured
            if (known := self.known.get(address)) != self.node_id and known not in up
        ]
