"""The hub's BitTorrent tracker (BEP 3, compact peers per BEP 23), without I/O.

Theory of operation
-------------------
:func:`parse_announce` and :func:`parse_scrape` turn a raw query string into a request
or raise :class:`~smartget.errors.TrackerError` (answered as a bencoded
``failure reason``, BEP 3). :class:`Tracker` keeps one swarm per info-hash and answers
with :func:`encode_announce` / :func:`encode_scrape`. Time comes in as ``now``.

What makes it a *fleet* tracker: the peer list it hands an announcer is ordered by
what the hub knows from its node registry (DESIGN.md, "How data flows", step 3):

1. peers in the announcer's own zone, 2. peers whose node has free capacity
   (status > 0), 3. the rest; random within each rank so load spreads.

Announcers that are not fleet nodes (any BitTorrent client) are served the same way;
they simply have no zone. By default only info-hashes the fleet knows (made by a node,
or that a node was asked to download: :meth:`Tracker.allow`) are tracked; an open
tracker tracks any.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import fastbencode

from smartget.errors import TrackerError

__all__ = [
    "DEFAULT_INTERVAL",
    "Announce",
    "AnnounceReply",
    "Scrape",
    "Tracker",
    "encode_announce",
    "encode_failure",
    "encode_scrape",
    "parse_announce",
    "parse_scrape",
]

MAX_QUERY = 4096
MAX_NUMWANT = 200
DEFAULT_NUMWANT = 50
MAX_SCRAPE_HASHES = 100
EVENTS = ("", "started", "completed", "stopped", "empty", "paused")


@dataclass(frozen=True, slots=True)
class Announce:
    """One announce (BEP 3 "Trackers"): who, for which torrent, how far along."""

    info_hash: bytes
    peer_id: bytes
    ip: str
    port: int
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: str = ""
    numwant: int = DEFAULT_NUMWANT
    compact: bool = True
    no_peer_id: bool = False


@dataclass(frozen=True, slots=True)
class Scrape:
    info_hashes: tuple[bytes, ...]


@dataclass(slots=True)
class _Peer:
    peer_id: bytes
    ip: str
    port: int
    left: int
    last_seen: float


@dataclass(slots=True)
class _Swarm:
    peers: dict[tuple[str, int], _Peer] = field(default_factory=dict)
    downloaded: int = 0  # completed events seen

    def counts(self) -> tuple[int, int]:
        seeds = sum(1 for p in self.peers.values() if p.left == 0)
        return seeds, len(self.peers) - seeds


@dataclass(frozen=True, slots=True)
class AnnounceReply:
    interval: int
    min_interval: int
    complete: int
    incomplete: int
    peers: list[tuple[str, int, bytes]]  # ip, port, peer_id


def _query(raw: str) -> list[tuple[str, str]]:
    if len(raw) > MAX_QUERY:
        raise TrackerError(f"query longer than {MAX_QUERY} bytes")
    try:
        # latin-1 maps each %XX to one code point, so binary info_hash values survive.
        return parse_qsl(
            raw, keep_blank_values=True, encoding="latin-1", errors="strict", max_num_fields=64
        )
    except ValueError as exc:
        raise TrackerError(f"malformed query string: {exc}") from None


def _hash(value: str, what: str = "info_hash") -> bytes:
    raw = value.encode("latin-1")
    if len(raw) != 20:
        raise TrackerError(f"{what} must be 20 bytes, got {len(raw)}")
    return raw


def _int(fields: dict[str, str], name: str, default: int | None = None, high: int = 2**63) -> int:
    value = fields.get(name)
    if value is None or value == "":
        if default is None:
            raise TrackerError(f"missing {name}")
        return default
    if not value.isdigit() or len(value) > 20:
        raise TrackerError(f"{name} must be a non-negative whole number, got {value[:24]!r}")
    number = int(value)
    if number > high:
        raise TrackerError(f"{name} must be at most {high}, got {number}")
    return number


def parse_announce(raw_query: str, client_ip: str) -> Announce:
    """An announce from its query string; ``client_ip`` is the TCP peer address.

    The ``ip`` parameter is honoured only when it is the same family (clients behind
    a proxy); the peer list is what other peers will dial, so it must be reachable.
    """
    fields = dict(_query(raw_query))
    if "info_hash" not in fields:
        raise TrackerError("missing info_hash")
    if "peer_id" not in fields:
        raise TrackerError("missing peer_id")
    event = fields.get("event", "")
    if event not in EVENTS:
        raise TrackerError(f"unknown event {event[:24]!r}; expected started, completed or stopped")
    ip = client_ip
    if declared := fields.get("ip"):
        try:
            ip = str(ipaddress.ip_address(declared))
        except ValueError:
            raise TrackerError(f"ip must be an IP address, got {declared[:48]!r}") from None
    port = _int(fields, "port", high=65535)
    if port == 0:
        raise TrackerError("port must be from 1 to 65535")
    return Announce(
        info_hash=_hash(fields["info_hash"]),
        peer_id=_hash(fields["peer_id"], "peer_id"),
        ip=ip,
        port=port,
        uploaded=_int(fields, "uploaded", 0),
        downloaded=_int(fields, "downloaded", 0),
        left=_int(fields, "left", 0),
        event="" if event == "empty" else event,
        numwant=min(MAX_NUMWANT, _int(fields, "numwant", DEFAULT_NUMWANT)),
        compact=fields.get("compact", "1") != "0",
        no_peer_id=fields.get("no_peer_id", "0") == "1",
    )


def parse_scrape(raw_query: str) -> Scrape:
    hashes = [_hash(v) for k, v in _query(raw_query) if k == "info_hash"]
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise TrackerError(f"at most {MAX_SCRAPE_HASHES} info_hash values per scrape")
    return Scrape(tuple(hashes))


DEFAULT_INTERVAL = 30  # seconds between announces asked of clients


class Tracker:
    """Swarms by info-hash; peers that stop announcing are forgotten after ``peer_ttl``.

    ``zone_of(ip)`` and ``has_capacity(ip)`` come from the node registry.
    """

    def __init__(
        self,
        *,
        interval: int = DEFAULT_INTERVAL,
        open_tracker: bool = False,
        zone_of: Callable[[str], str | None] = lambda ip: None,
        has_capacity: Callable[[str], bool] = lambda ip: False,
        rng: random.Random | None = None,
    ) -> None:
        self.interval = interval
        self.peer_ttl = 3 * interval
        self.open_tracker = open_tracker
        self.zone_of = zone_of
        self.has_capacity = has_capacity
        self._rng = rng or random.Random()
        self._allowed: set[bytes] = set()
        self._swarms: dict[bytes, _Swarm] = {}
        self.announces = 0
        self.refused = 0

    def allow(self, info_hash: bytes) -> bool:
        """Track this info-hash from now on; True if it was new."""
        if len(info_hash) != 20:
            raise TrackerError(f"info_hash must be 20 bytes, got {len(info_hash)}")
        new = info_hash not in self._allowed
        self._allowed.add(info_hash)
        return new

    def is_tracked(self, info_hash: bytes) -> bool:
        return self.open_tracker or info_hash in self._allowed

    @property
    def allowed(self) -> frozenset[bytes]:
        return frozenset(self._allowed)

    def announce(self, request: Announce, now: float) -> AnnounceReply:
        if not self.is_tracked(request.info_hash):
            self.refused += 1
            raise TrackerError(
                f"unknown torrent {request.info_hash.hex()}: this tracker serves only the "
                "fleet's torrents (start the hub with --open-tracker to track any)"
            )
        self.announces += 1
        swarm = self._swarms.setdefault(request.info_hash, _Swarm())
        self._expire(swarm, now)
        key = (request.ip, request.port)
        if request.event == "stopped":
            swarm.peers.pop(key, None)
        else:
            previous = swarm.peers.get(key)
            if request.event == "completed" and (previous is None or previous.left > 0):
                swarm.downloaded += 1
            swarm.peers[key] = _Peer(request.peer_id, request.ip, request.port, request.left, now)
        peers = self._pick(swarm, request) if request.event != "stopped" else []
        seeds, leechers = swarm.counts()
        if not swarm.peers:
            del self._swarms[request.info_hash]
        return AnnounceReply(self.interval, self.interval // 2, seeds, leechers, peers)

    def _pick(self, swarm: _Swarm, request: Announce) -> list[tuple[str, int, bytes]]:
        zone = self.zone_of(request.ip)
        seeding = request.left == 0
        ranked = []
        for (ip, port), peer in swarm.peers.items():
            if (ip, port) == (request.ip, request.port) or (seeding and peer.left == 0):
                continue  # never yourself; a seed needs no seeds
            same_zone = zone is not None and self.zone_of(ip) == zone
            rank = (not same_zone, not self.has_capacity(ip), self._rng.random())
            ranked.append((rank, (ip, port, peer.peer_id)))
        ranked.sort(key=lambda item: item[0])
        return [peer for _, peer in ranked[: request.numwant]]

    def scrape(self, request: Scrape, now: float) -> dict[bytes, tuple[int, int, int]]:
        """(complete, downloaded, incomplete) per tracked hash asked for (all if none)."""
        hashes: Iterable[bytes] = request.info_hashes or list(self._swarms)[:MAX_SCRAPE_HASHES]
        files = {}
        for info_hash in hashes:
            if not self.is_tracked(info_hash):
                continue
            swarm = self._swarms.get(info_hash)
            if swarm is None:
                files[info_hash] = (0, 0, 0)
                continue
            self._expire(swarm, now)
            seeds, leechers = swarm.counts()
            files[info_hash] = (seeds, swarm.downloaded, leechers)
        return files

    def swarm(self, info_hash: bytes) -> list[dict[str, object]]:
        """The peers of one torrent, for the JSON API."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return []
        return [
            {"ip": p.ip, "port": p.port, "left": p.left, "seed": p.left == 0}
            for p in swarm.peers.values()
        ]

    def expire(self, now: float) -> int:
        """Forget peers silent for peer_ttl in every swarm; returns how many."""
        before = sum(len(s.peers) for s in self._swarms.values())
        for info_hash, swarm in list(self._swarms.items()):
            self._expire(swarm, now)
            if not swarm.peers:
                del self._swarms[info_hash]
        return before - sum(len(s.peers) for s in self._swarms.values())

    def _expire(self, swarm: _Swarm, now: float) -> None:
        deadline = now - self.peer_ttl
        for key in [k for k, p in swarm.peers.items() if p.last_seen < deadline]:
            del swarm.peers[key]

    def statistics(self) -> dict[str, int]:
        return {
            "torrents": len(self._allowed),
            "swarms": len(self._swarms),
            "peers": sum(len(s.peers) for s in self._swarms.values()),
            "announces": self.announces,
            "refused": self.refused,
        }


def _compact(peers: list[tuple[str, int, bytes]]) -> tuple[bytes, bytes]:
    v4, v6 = bytearray(), bytearray()
    for ip, port, _ in peers:
        address = ipaddress.ip_address(ip)
        target = v4 if address.version == 4 else v6
        target += address.packed + struct.pack("!H", port)
    return bytes(v4), bytes(v6)


def encode_announce(reply: AnnounceReply, request: Announce) -> bytes:
    body: dict[bytes, object] = {
        b"interval": reply.interval,
        b"min interval": reply.min_interval,
        b"complete": reply.complete,
        b"incomplete": reply.incomplete,
    }
    if request.compact:
        v4, v6 = _compact(reply.peers)
        body[b"peers"] = v4  # BEP 23
        if v6:
            body[b"peers6"] = v6  # BEP 7
    else:
        body[b"peers"] = [
            {b"ip": ip.encode(), b"port": port}
            | ({} if request.no_peer_id else {b"peer id": peer_id})
            for ip, port, peer_id in reply.peers
        ]
    return bytes(fastbencode.bencode(body))


def encode_scrape(files: dict[bytes, tuple[int, int, int]]) -> bytes:
    return bytes(
        fastbencode.bencode(
            {
                b"files": {
                    info_hash: {b"complete": c, b"downloaded": d, b"incomplete": i}
                    for info_hash, (c, d, i) in files.items()
                }
            }
        )
    )


def encode_failure(reason: str) -> bytes:
    return bytes(fastbencode.bencode({b"failure reason": reason.encode("utf-8", "replace")}))
