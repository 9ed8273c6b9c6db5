"""The hub's BitTorrent tracker (BEP 3, compact peers per BEP 23), without I/O.

Theory of operation
-------------------
:func:`parse_announce` and :func:`parse_scrape` turn a raw query string into a request
or raise :class:`~smartget.errors.TrackerError` (answered as a bencoded
``failure reason``, BEP 3). :class:`Tracker` keeps one swarm per info-hash and answers
with :func:`encode_announce` / :func:`encode_scrape`; the UDP front end (BEP 15,
hub/udptracker.py) calls the same :meth:`Tracker.announce`. Time comes in as ``now``.

What makes it a *fleet* tracker: the peer list it hands an announcer is ordered by
what the hub knows from its node registry (DESIGN.md, "How data flows", step 3):

1. peers in the announcer's own zone, 2. peers whose node has free capacity
   (status > 0), 3. the rest; random within each rank so load spreads.

Announcers that are not fleet nodes (any BitTorrent client) are served the same way;
they simply have no zone. By default only info-hashes the fleet knows (made by a node,
or that a node was asked to download: :meth:`Tracker.allow`) are tracked; an open
tracker tracks any.

Swarms that stay true (issue 18)
--------------------------------
A peer is listed until ``peer_lifetime`` seconds pass without an announce from it. The
lifetime must outlast what clients really do, not what they are asked: libtorrent
re-announces every ``max(interval, min_announce_interval)`` seconds and its
``min_announce_interval`` is 300 s by default (the fleet's nodes keep it). So the
default lifetime is ``2 * max(interval, 300) + 60``: one lost announce is forgiven,
a peer gone for good leaves within 11 minutes. ``downloaded`` (completed downloads, BEP
48) is kept per torrent, apart from the swarm, so it survives an emptied swarm; the
hub saves swarms and counts (:meth:`Tracker.drain_changes`) so a restart keeps them.

Cost of an announce: O(numwant), never O(swarm). Each swarm keeps its seeds and its
leechers in lists (swap-remove, so a random window is a slice) and the same per zone;
peers sit in a dict ordered by last announce, so expiry pops the oldest from the
front. Capacity ranks peers within a random sample twice the size asked for.

Who may list, change or remove a peer (issue 12.3)
--------------------------------------------------
A peer is listed at the address its announce came from (``source``). The ``ip`` a
client declares (BEP 3 ``ip=``, BEP 15's ip field) is honoured only when it *is* the
source, or when the source is in a network the operator trusts (``trust_ip_nets``,
``--tracker-trust-ip-net``: a proxy or NAT gateway announcing for its clients);
otherwise it is ignored, so nobody can list a victim's address (reflection) or name
another peer's entry. An entry is changed or removed only by an announce from the
source that made it, carrying the same ``peer_id`` or the same ``key``;
``event=started`` from that source begins a new session at that address and port (a
restarted client) and takes the entry over. One source address
holds at most ``max_peers_per_ip`` peers per swarm and ``max_peers_per_source`` in all.

Several hubs, one fleet's swarms (issue 13)
-------------------------------------------
With ``--state redis://`` each hub's tracker keeps its swarms in memory and tells the
others what it accepted: after :meth:`Tracker.share`, every peer that joins, changes
state (seed/leecher, peer_id) or stops, every torrent it starts to track, and every
download it counts, goes to an outbox that :meth:`Tracker.drain_shared` empties (a
re-announce that changes nothing goes only if the peer was last shared ``refresh``
seconds ago). :meth:`Tracker.merge_shared` applies another hub's
:class:`SharedChanges`, within this tracker's caps, without sharing them again. Which
peers this hub took itself (``Peer.shared`` is set) is what it snapshots
(:meth:`Tracker.own_peers`). The wire format is hub/state/swarmlog.py, the Redis I/O
hub/state/swarms.py.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from urllib.parse import unquote_to_bytes, urlsplit

import fastbencode

from smartget.errors import ConfigError, TrackerError

__all__ = [
    "CLIENT_MIN_INTERVAL",
    "DEFAULT_INTERVAL",
    "Announce",
    "AnnounceReply",
    "Peer",
    "SavedPeer",
    "Scrape",
    "SharedChanges",
    "SharedPeer",
    "SwarmChanges",
    "Tracker",
    "announce_urls",
    "default_peer_lifetime",
    "encode_announce",
    "encode_failure",
    "encode_scrape",
    "parse_announce",
    "parse_scrape",
]

MAX_QUERY = 4096
MAX_FIELDS = 64
MAX_NUMWANT = 200
DEFAULT_NUMWANT = 50
MAX_SCRAPE_HASHES = 100
EVENTS = ("", "started", "completed", "stopped", "empty", "paused")

DEFAULT_INTERVAL = 300  # seconds between announces asked of clients: libtorrent's floor
CLIENT_MIN_INTERVAL = 300  # libtorrent's min_announce_interval (the fleet's nodes keep it)
LIFETIME_GRACE = 60  # seconds beyond two announce rounds before a silent peer goes
MAX_SWARMS = 100_000
MAX_PEERS_PER_SWARM = 100_000
MAX_PEERS = 1_000_000
MAX_PEERS_PER_IP = 16  # peers one source address may list in one swarm
MAX_PEERS_PER_SOURCE = 20_000  # peers one source address may list in all swarms
OVERSAMPLE = 2  # candidates looked at per peer handed out, to rank by capacity


def default_peer_lifetime(interval: float) -> float:
    """How long a silent peer stays listed: two real announce rounds and a minute."""
    return 2 * max(interval, CLIENT_MIN_INTERVAL) + LIFETIME_GRACE


def announce_urls(http_base: str, udp_port: int | None) -> list[str]:
    """The announce URLs of a torrent the fleet makes, a tier each: UDP (BEP 15) first,
    HTTP second, both at the host of ``http_base`` (the hub as its callers reach it)."""
    http = f"{http_base.rstrip('/')}/announce"
    if udp_port is None:
        return [http]
    host = urlsplit(http_base).hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return [f"udp://{host}:{udp_port}/announce", http]


@dataclass(slots=True)  # not frozen: made per announce (see _HOT)
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
    source: str = ""  # the address the announce came from ("": ``ip``)
    key: bytes | None = None  # BEP 3 / BEP 15 ``key``: proves a later announce is the same client


@dataclass(frozen=True, slots=True)
class Scrape:
    info_hashes: tuple[bytes, ...]


# _HOT: the records made for every announce are plain slotted dataclasses, not frozen
# ones: a frozen dataclass sets each field through object.__setattr__, which made
# building an Announce 3.5 us instead of 0.6 (5 % of an HTTP announce's CPU).
_PACKED: dict[str, bytes] = {}  # IP text -> packed; cleared when it reaches 65,536
_PORT = struct.Struct("!H")


def _pack(ip: str, port: int) -> bytes:
    """The compact form of an address: 4 or 16 bytes of IP, 2 of port (BEP 23, BEP 7)."""
    packed = _PACKED.get(ip)
    if packed is None:
        try:
            packed = ipaddress.ip_address(ip).packed
        except ValueError:
            raise TrackerError(f"not an IP address: {ip[:48]!r}") from None
        if len(_PACKED) >= 65536:
            _PACKED.clear()
        _PACKED[ip] = packed
    return packed + _PORT.pack(port)


class Peer:
    """One peer of a swarm. Iterates as ``(ip, port, peer_id)``."""

    __slots__ = (
        "compact",
        "fleet",
        "ip",
        "key",
        "last_seen",
        "left",
        "peer_id",
        "port",
        "pos",
        "shared",
        "source",
        "zone",
    )
    __match_args__ = ("ip", "port", "peer_id")

    def __init__(self, ip: str, port: int, peer_id: bytes, left: int = 0, *, now: float = 0.0):
        self.ip = ip
        self.port = port
        self.peer_id = peer_id
        self.compact = _pack(ip, port)
        self.left = left
        self.last_seen = now
        self.zone: str | None = None
        self.fleet = True  # may have free capacity: a node of the registry
        self.pos = [-1, -1]  # index in its swarm's seed/leecher list, and in its zone's
        self.source = ip  # the address that announced it (ip unless a trusted proxy did)
        self.key: bytes | None = None
        self.shared: float | None = None  # when this hub last shared it; None: not its own

    def __iter__(self) -> Iterator[object]:
        return iter((self.ip, self.port, self.peer_id))

    def __repr__(self) -> str:
        return f"Peer({self.ip!r}, {self.port}, left={self.left})"


class _Bag:
    """A list of peers with O(1) add and remove (swap with the last); slot 0 or 1 of pos.

    ``packed`` holds the peers' compact forms side by side (6 bytes each, in the order of
    ``items``), so a window of an IPv4 bag is one slice, not a join of scattered objects:
    the reply to an announce that ranks nothing (:meth:`Tracker._pick_plain`). An IPv6
    peer holds zeros there and counts in ``wide``; a bag with any is never sliced.
    """

    __slots__ = ("items", "packed", "slot", "wide")

    def __init__(self, slot: int) -> None:
        self.items: list[Peer] = []
        self.packed = bytearray()
        self.wide = 0
        self.slot = slot

    def add(self, peer: Peer) -> None:
        peer.pos[self.slot] = len(self.items)
        self.items.append(peer)
        compact = peer.compact
        if len(compact) == 6:
            self.packed += compact
        else:
            self.packed += bytes(6)
            self.wide += 1

    def remove(self, peer: Peer) -> None:
        items, slot, packed = self.items, self.slot, self.packed
        index = peer.pos[slot]
        last = items.pop()
        if last is not peer:
            items[index] = last
            last.pos[slot] = index
            packed[6 * index : 6 * index + 6] = packed[-6:]
        del packed[-6:]
        if len(peer.compact) != 6:
            self.wide -= 1
        peer.pos[slot] = -1

    def window(self, rng: random.Random, k: int) -> list[Peer]:
        """k peers from a random start, wrapping: a slice, so C speed."""
        items = self.items
        n = len(items)
        if n <= k:
            return items[:]
        start = int(rng.random() * n)
        end = start + k
        return items[start:end] if end <= n else items[start:] + items[: end - n]

    def take(self, rng: random.Random, k: int, skip: int) -> tuple[list[Peer], bytearray]:
        """k peers (all there are, if fewer) from a random start, wrapping, never the
        one at index ``skip`` (-1: none), with their compact forms (IPv4 bags only)."""
        items, packed = self.items, self.packed
        n = len(items)
        if k <= 0 or n == 0:
            return [], bytearray()
        width = k + (skip >= 0)  # one more, to drop the one skipped if it is among them
        if n <= width:
            peers, raw, start = items[:], packed[:], 0
        else:
            start = int(rng.random() * n)
            end = start + width
            if end <= n:
                peers, raw = items[start:end], packed[6 * start : 6 * end]
            else:
                peers = items[start:] + items[: end - n]
                raw = packed[6 * start :] + packed[: 6 * (end - n)]
        if skip >= 0:
            at = (skip - start) % n
            if at < len(peers):
                del peers[at]
                del raw[6 * at : 6 * at + 6]
        if len(peers) > k:
            del peers[k:]
            del raw[6 * k :]
        return peers, raw


class _Swarm:
    __slots__ = ("fleet", "leechers", "peers", "seeds", "sources", "zones")

    def __init__(self) -> None:
        # Oldest announce first; OrderedDict, since a dict's first key is found by a scan.
        self.peers: OrderedDict[tuple[str, int], Peer] = OrderedDict()
        self.seeds = _Bag(0)
        self.leechers = _Bag(0)
        self.zones: dict[tuple[str, bool], _Bag] = {}  # (zone, is seed) -> peers
        self.sources: dict[str, int] = {}  # source address -> its peers here
        self.fleet = 0  # peers with ``fleet`` set: none, and capacity ranks nothing

    def add(self, peer: Peer) -> None:
        (self.seeds if peer.left == 0 else self.leechers).add(peer)
        if peer.fleet:
            self.fleet += 1
        if peer.zone is not None:
            key = (peer.zone, peer.left == 0)
            bag = self.zones.get(key)
            if bag is None:
                bag = self.zones[key] = _Bag(1)
            bag.add(peer)

    def remove(self, peer: Peer) -> None:
        (self.seeds if peer.left == 0 else self.leechers).remove(peer)
        if peer.fleet:
            self.fleet -= 1
        if peer.zone is not None:
            key = (peer.zone, peer.left == 0)
            bag = self.zones[key]
            bag.remove(peer)
            if not bag.items:
                del self.zones[key]

    def counts(self) -> tuple[int, int]:
        return len(self.seeds.items), len(self.leechers.items)


@dataclass(slots=True)  # not frozen: made per announce (see _HOT)
class AnnounceReply:
    interval: int
    min_interval: int
    complete: int
    incomplete: int
    peers: Sequence[Peer | tuple[str, int, bytes]]  # ip, port, peer_id
    compact: bytes | None = None  # the peers' compact forms, when the tracker has them


@dataclass(slots=True)  # not frozen: made per announce (see _HOT)
class SavedPeer:
    """A peer as the store keeps it; ``last_seen`` on the tracker's clock."""

    info_hash: bytes
    ip: str
    port: int
    peer_id: bytes
    left: int
    last_seen: float


@dataclass(slots=True)  # not frozen: made per announce (see _HOT)
class SharedPeer:
    """A peer as hubs tell each other (``gone``: it stopped); ``last_seen`` on the
    receiving tracker's clock once decoded."""

    info_hash: bytes
    ip: str
    port: int
    peer_id: bytes = b""
    left: int = 0
    last_seen: float = 0.0
    source: str = ""  # "": the peer's ip
    key: bytes | None = None
    gone: bool = False


@dataclass(frozen=True, slots=True)
class SharedChanges:
    """What one hub's tracker accepted, for the others: torrents it began to track,
    peers joined, changed or gone, and downloads counted (per torrent)."""

    tracked: list[bytes]
    peers: list[SharedPeer]
    downloaded: dict[bytes, int]


@dataclass(frozen=True, slots=True)
class SwarmChanges:
    """What changed since the last drain: peers to save, peers gone, counts."""

    peers: list[SavedPeer]
    gone: list[tuple[bytes, str, int]]
    downloaded: dict[bytes, int]


def _query(raw: str) -> dict[str, str]:
    """``name -> value`` (still percent-encoded) of a query string; the last one wins."""
    if len(raw) > MAX_QUERY:
        raise TrackerError(f"query longer than {MAX_QUERY} bytes")
    parts = raw.split("&")
    if len(parts) > MAX_FIELDS:
        raise TrackerError(f"more than {MAX_FIELDS} fields in the query")
    fields = {}
    for part in parts:
        if part:
            name, _, value = part.partition("=")
            fields[name] = value
    return fields


def _unquote(value: str) -> bytes:
    if len(value) == 60 and value[::3] == "%" * 20:  # every byte escaped, as clients do
        try:
            return bytes.fromhex(value.replace("%", ""))
        except ValueError:
            pass
    if "+" in value:
        value = value.replace("+", " ")
    return unquote_to_bytes(value) if "%" in value else value.encode("utf-8", "replace")


def _hash(value: str, what: str = "info_hash") -> bytes:
    raw = _unquote(value)
    if len(raw) != 20:
        raise TrackerError(f"{what} must be 20 bytes, got {len(raw)}")
    return raw


def _int(fields: dict[str, str], name: str, default: int | None = None, high: int = 2**63) -> int:
    value = fields.get(name)
    if value is None or value == "":
        if default is None:
            raise TrackerError(f"missing {name}")
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 20:
        raise TrackerError(f"{name} must be a non-negative whole number, got {value[:24]!r}")
    number = int(value)
    if number > high:
        raise TrackerError(f"{name} must be at most {high}, got {number}")
    return number


def parse_announce(raw_query: str, client_ip: str) -> Announce:
    """An announce from its query string; ``client_ip`` is the TCP peer address.

    ``ip=`` is kept as declared (it must be an IP address); :meth:`Tracker.announce`
    honours it only from the same address or a trusted network.
    """
    fields = _query(raw_query)
    if "info_hash" not in fields:
        raise TrackerError("missing info_hash")
    if "peer_id" not in fields:
        raise TrackerError("missing peer_id")
    event = fields.get("event", "")
    if event not in EVENTS:
        raise TrackerError(f"unknown event {event[:24]!r}; expected started, completed or stopped")
    ip = client_ip
    if declared := fields.get("ip"):
        text = _unquote(declared).decode("latin-1")
        try:
            ip = str(ipaddress.ip_address(text))
        except ValueError:
            raise TrackerError(f"ip must be an IP address, got {text[:48]!r}") from None
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
        source=client_ip,
        key=_unquote(fields["key"])[:64] if fields.get("key") else None,
    )


def parse_scrape(raw_query: str) -> Scrape:
    if len(raw_query) > MAX_QUERY:
        raise TrackerError(f"query longer than {MAX_QUERY} bytes")
    hashes = []
    for part in raw_query.split("&"):
        name, _, value = part.partition("=")
        if name == "info_hash":
            hashes.append(_hash(value))
            if len(hashes) > MAX_SCRAPE_HASHES:
                raise TrackerError(f"at most {MAX_SCRAPE_HASHES} info_hash values per scrape")
    return Scrape(tuple(hashes))


class Tracker:
    """Swarms by info-hash; a peer silent for ``peer_lifetime`` seconds is forgotten.

    ``zone_of(ip)``, ``has_capacity(ip)`` and ``is_fleet(ip)`` come from the node
    registry (``is_fleet`` only saves asking ``has_capacity`` about strangers).
    """

    def __init__(
        self,
        *,
        interval: int = DEFAULT_INTERVAL,
        peer_lifetime: float | None = None,
        open_tracker: bool = False,
        zone_of: Callable[[str], str | None] = lambda ip: None,
        has_capacity: Callable[[str], bool] = lambda ip: False,
        is_fleet: Callable[[str], bool] = lambda ip: True,
        rng: random.Random | None = None,
        max_swarms: int = MAX_SWARMS,
        max_peers_per_swarm: int = MAX_PEERS_PER_SWARM,
        max_peers: int = MAX_PEERS,
        max_peers_per_ip: int = MAX_PEERS_PER_IP,
        max_peers_per_source: int = MAX_PEERS_PER_SOURCE,
        trust_ip_nets: Iterable[str] = (),
    ) -> None:
        self.interval = interval
        self.min_interval = max(1, min(interval // 2, 60))
        self.peer_ttl = peer_lifetime or default_peer_lifetime(interval)
        self.open_tracker = open_tracker
        self.zone_of = zone_of
        self.has_capacity = has_capacity
        self.is_fleet = is_fleet
        self.max_swarms = max_swarms
        self.max_peers_per_swarm = max_peers_per_swarm
        self.max_peers = max_peers
        self.max_peers_per_ip = max_peers_per_ip
        self.max_peers_per_source = max_peers_per_source
        try:
            try:
                self.trust_ip_nets = tuple(
                    ipaddress.ip_network(n, strict=False) for n in trust_ip_nets
                )
            except ValueError as exc:
                raise ConfigError(
                    f"--tracker-trust-ip-net takes networks such as 10.0.0.0/8: {exc}"
                ) from None
        except ValueError as exc:
            raise TrackerError(f"not a network: {exc}") from None
        self._sources: dict[str, int] = {}  # source address -> its peers in all swarms
        self._rng = rng or random.Random()
        self._allowed: set[bytes] = set()
        self._swarms: dict[bytes, _Swarm] = {}
        self._downloaded: dict[bytes, int] = {}
        self._peer_count = 0
        # Persistence: peers to save (new, seed state changed, or saved long ago).
        self._dirty: dict[tuple[bytes, str, int], Peer] = {}
        self._gone: dict[tuple[bytes, str, int], None] = {}
        self._dirty_counts: set[bytes] = set()
        self._saved_at: dict[tuple[bytes, str, int], float] = {}
        self.announces = 0
        self.refused = 0
        # Sharing with other hubs (share()): None while this tracker is the only one.
        self._outbox: dict[tuple[bytes, str, int], Peer | None] | None = None
        self._outbox_tracked: dict[bytes, None] = {}
        self._outbox_counts: dict[bytes, int] = {}
        self._share_refresh = 0.0

    # -- what is tracked ----------------------------------------------------------------

    def allow(self, info_hash: bytes) -> bool:
        """Track this info-hash from now on; True if it was new."""
        if len(info_hash) != 20:
            raise TrackerError(f"info_hash must be 20 bytes, got {len(info_hash)}")
        new = info_hash not in self._allowed
        self._allowed.add(info_hash)
        if new and self._outbox is not None:
            self._outbox_tracked[info_hash] = None
        return new

    def is_tracked(self, info_hash: bytes) -> bool:
        return self.open_tracker or info_hash in self._allowed

    @property
    def allowed(self) -> frozenset[bytes]:
        return frozenset(self._allowed)

    # -- announce -----------------------------------------------------------------------

    def announce(self, request: Announce, now: float) -> AnnounceReply:
        info_hash = request.info_hash
        if not (self.open_tracker or info_hash in self._allowed):
            self.refused += 1
            raise TrackerError(
                f"unknown torrent {info_hash.hex()}: this tracker serves only the "
                "fleet's torrents (start the hub with --open-tracker to track any)"
            )
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            if len(self._swarms) >= self.max_swarms:
                raise TrackerError(f"the tracker holds {self.max_swarms} swarms already")
            swarm = self._swarms[info_hash] = _Swarm()
        self.announces += 1
        peers = swarm.peers
        if peers and next(iter(peers.values())).last_seen < now - self.peer_ttl:
            self._expire(info_hash, swarm, now)  # the oldest announce is too old
        source = request.source or request.ip
        ip = request.ip if request.ip == source or self._trusted(source) else source
        key = (ip, request.port)
        peer = peers.get(key)
        if peer is not None and not self._owns(peer, request, source):
            if not peers:
                self._drop(info_hash)
            self.refused += 1
            raise TrackerError(
                f"{ip}:{request.port} is listed by another client: only the peer itself "
                "(same address, and peer_id or key) may change or stop its entry"
            )
        if request.event == "stopped":
            if peer is not None:
                if peer.left > 0 and request.left == 0:  # finished, then left at once
                    self._count_download(info_hash)
                del peers[key]
                self._remove(info_hash, swarm, peer)
                self._gone[info_hash, ip, request.port] = None
                if self._outbox is not None:
                    self._outbox[info_hash, ip, request.port] = None
            seeds, leechers = swarm.counts()
            if not peers:
                self._drop(info_hash)
            return AnnounceReply(self.interval, self.min_interval, seeds, leechers, ())
        zone = self.zone_of(ip)
        if peer is None:
            try:
                peer = self._join(info_hash, swarm, request, ip, source, zone, now)
            except TrackerError:
                self.refused += 1
                if not peers:
                    self._drop(info_hash)
                raise
            peers[key] = peer
        else:
            self._update(info_hash, swarm, peer, request, zone, now)
            peers.move_to_end(key)  # the most recent announce last
        picked, compact = self._pick(swarm, peer, zone, request.numwant)
        seeds, leechers = len(swarm.seeds.items), len(swarm.leechers.items)
        return AnnounceReply(self.interval, self.min_interval, seeds, leechers, picked, compact)

    def _trusted(self, source: str) -> bool:
        """May ``source`` announce for another address (``--tracker-trust-ip-net``)?"""
        if not self.trust_ip_nets:
            return False
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(address in net for net in self.trust_ip_nets)

    @staticmethod
    def _owns(peer: Peer, request: Announce, source: str) -> bool:
        """Is this announce from the client that listed ``peer``?"""
        if peer.source != source:
            return False
        if request.event == "started":
            return True  # a new session at this address and port: a restarted client
        # The same peer_id, or the same key (BEP 3: it names a client whose peer_id
        # or address changed; aria2 sends a new key with each UDP announce, so a key
        # that differs alone proves nothing).
        return peer.peer_id == request.peer_id or (peer.key is not None and peer.key == request.key)

    def _join(
        self,
        info_hash: bytes,
        swarm: _Swarm,
        request: Announce,
        ip: str,
        source: str,
        zone: str | None,
        now: float,
    ) -> Peer:
        if len(swarm.peers) >= self.max_peers_per_swarm:
            raise TrackerError(f"swarm {info_hash.hex()} holds {self.max_peers_per_swarm} peers")
        if self._peer_count >= self.max_peers:
            raise TrackerError(f"the tracker holds {self.max_peers} peers already")
        if swarm.sources.get(source, 0) >= self.max_peers_per_ip:
            raise TrackerError(
                f"{source} lists {self.max_peers_per_ip} peers in this swarm already"
            )
        if self._sources.get(source, 0) >= self.max_peers_per_source:
            raise TrackerError(f"{source} lists {self.max_peers_per_source} peers already")
        peer = Peer(ip, request.port, request.peer_id, request.left, now=now)
        peer.source = source
        peer.key = request.key
        peer.zone = zone
        peer.fleet = zone is not None or self.is_fleet(ip)
        swarm.add(peer)
        self._count_source(swarm, source, 1)
        self._peer_count += 1
        if request.event == "completed":  # finished while the tracker did not list it
            self._count_download(info_hash)
        self._dirty[info_hash, ip, request.port] = peer
        if self._outbox is not None:
            peer.shared = now
            self._outbox[info_hash, ip, request.port] = peer
        return peer

    def _count_source(self, swarm: _Swarm, source: str, delta: int) -> None:
        for table in (swarm.sources, self._sources):
            left = table.get(source, 0) + delta
            if left > 0:
                table[source] = left
            else:
                table.pop(source, None)

    def _update(
        self,
        info_hash: bytes,
        swarm: _Swarm,
        peer: Peer,
        request: Announce,
        zone: str | None,
        now: float,
    ) -> None:
        was_seed = peer.left == 0
        is_seed = request.left == 0
        if self._outbox is not None and (
            was_seed != is_seed
            or peer.peer_id != request.peer_id
            or peer.shared is None
            or now - peer.shared >= self._share_refresh
        ):
            peer.shared = now
            self._outbox[info_hash, peer.ip, peer.port] = peer
        if was_seed != is_seed or zone != peer.zone:
            swarm.remove(peer)
            peer.left, peer.zone = request.left, zone
            swarm.add(peer)
            if is_seed and not was_seed:  # a leecher finished (completed event or not)
                self._count_download(info_hash)
        peer.left = request.left
        peer.peer_id = request.peer_id
        if request.key is not None:
            peer.key = request.key
        peer.last_seen = now
        dirty_key = (info_hash, peer.ip, peer.port)
        if was_seed != is_seed or now - self._saved_at.get(dirty_key, -1e18) > self.peer_ttl / 4:
            self._dirty[dirty_key] = peer

    def _count_download(self, info_hash: bytes) -> None:
        self._downloaded[info_hash] = self._downloaded.get(info_hash, 0) + 1
        self._dirty_counts.add(info_hash)
        if self._outbox is not None:
            self._outbox_counts[info_hash] = self._outbox_counts.get(info_hash, 0) + 1

    def _remove(self, info_hash: bytes, swarm: _Swarm, peer: Peer) -> None:
        swarm.remove(peer)
        self._count_source(swarm, peer.source, -1)
        self._peer_count -= 1
        key = (info_hash, peer.ip, peer.port)
        self._dirty.pop(key, None)
        self._saved_at.pop(key, None)

    def _drop(self, info_hash: bytes) -> None:
        """An emptied swarm goes; its ``downloaded`` stays while the torrent is tracked."""
        del self._swarms[info_hash]
        if info_hash not in self._allowed:
            self._downloaded.pop(info_hash, None)

    def _pick(
        self, swarm: _Swarm, me: Peer, zone: str | None, numwant: int
    ) -> tuple[list[Peer], bytes | None]:
        """Up to numwant peers: the zone's first, then free capacity, then the rest.

        Never the announcer; a seed gets no seeds. Each rank is a random window of its
        lists, capacity ranks a window twice the size wanted: O(numwant). With the
        picked peers, their compact forms when nothing ranked (:meth:`_pick_plain`).
        """
        if zone is None and not swarm.fleet and not (swarm.seeds.wide or swarm.leechers.wide):
            return self._pick_plain(swarm, me, numwant)
        seeding = me.left == 0
        picked: list[Peer] = []
        if numwant <= 0:
            return picked, None
        ranked = swarm.fleet > 0  # else nobody here has capacity to rank by
        if zone is not None:
            mine = [swarm.zones.get((zone, False))]
            if not seeding:
                mine.append(swarm.zones.get((zone, True)))
            for bag in mine:
                if bag is not None and len(picked) < numwant:
                    window = bag.window(self._rng, OVERSAMPLE * (numwant - len(picked)) + 1)
                    picked += self._by_capacity(window, me, numwant - len(picked), ranked)
        need = numwant - len(picked)
        if need > 0:
            # Leechers, and seeds unless a seed asks: shares of the window by their sizes.
            # Look past the zone's peers (all taken above, fewer than numwant) and yourself.
            wanted = OVERSAMPLE * need + len(picked) + 1
            leechers = len(swarm.leechers.items)
            seeds = 0 if seeding else len(swarm.seeds.items)
            total = leechers + seeds
            if total > 0:
                window = swarm.leechers.window(self._rng, leechers * wanted // total + 1)
                if not seeding:
                    window += swarm.seeds.window(self._rng, seeds * wanted // total + 1)
                if zone is not None:
                    window = [p for p in window if p.zone != zone]
                picked += self._by_capacity(window, me, need, ranked)
        return picked, None

    def _pick_plain(self, swarm: _Swarm, me: Peer, numwant: int) -> tuple[list[Peer], bytes]:
        """:meth:`_pick` where nothing ranks (no zone, no fleet peer, IPv4 only): shares
        of leechers and seeds by their sizes, each one window sliced with its compact
        forms, so the reply's peers are a few slices whatever ``numwant`` is."""
        seeding = me.left == 0
        leechers = len(swarm.leechers.items) - (not seeding)  # never the announcer
        seeds = 0 if seeding else len(swarm.seeds.items)
        total = leechers + seeds
        need = min(numwant, total)
        if need <= 0:
            return [], b""
        from_leechers = max(need - seeds, need * leechers // total)
        picked, packed = swarm.leechers.take(self._rng, from_leechers, -1 if seeding else me.pos[0])
        if need > from_leechers:
            more, more_packed = swarm.seeds.take(self._rng, need - from_leechers, -1)
            picked += more
            packed += more_packed
        return picked, bytes(packed)

    def _by_capacity(self, window: list[Peer], me: Peer, need: int, ranked: bool) -> list[Peer]:
        """The first ``need`` of ``window`` (never ``me``), those with capacity first
        (``ranked``: the swarm has fleet peers, the only ones asked about capacity)."""
        fleet = [p for p in window if p.fleet] if ranked else None
        if fleet:
            has_capacity = self.has_capacity
            free = {id(p) for p in fleet if has_capacity(p.ip)}
            if free:
                window = [p for p in window if id(p) in free] + [
                    p for p in window if id(p) not in free
                ]
        if me.pos[0] >= 0 and me in window:
            window.remove(me)
        return window[:need]

    # -- scrape, views, expiry ----------------------------------------------------------

    def scrape(self, request: Scrape, now: float) -> dict[bytes, tuple[int, int, int]]:
        """(complete, downloaded, incomplete) per tracked hash asked for.

        A scrape that names no info-hash (BEP 48's optional full scrape) lists every
        swarm: only an open tracker answers it, since the fleet's info-hashes are not
        for strangers to enumerate (issue 12.13); others get a TrackerError.
        """
        if not request.info_hashes and not self.open_tracker:
            raise TrackerError(
                "a scrape names its torrents (info_hash=...): this tracker does not list "
                "the torrents it tracks (start the hub with --open-tracker to allow it)"
            )
        hashes: Iterable[bytes] = request.info_hashes or list(self._swarms)[:MAX_SCRAPE_HASHES]
        files = {}
        for info_hash in hashes:
            if not self.is_tracked(info_hash):
                continue
            swarm = self._swarms.get(info_hash)
            downloaded = self._downloaded.get(info_hash, 0)
            if swarm is not None:
                self._expire(info_hash, swarm, now)
                if not swarm.peers:
                    self._drop(info_hash)
                    swarm = None
            if swarm is None:
                files[info_hash] = (0, downloaded, 0)
                continue
            seeds, leechers = swarm.counts()
            files[info_hash] = (seeds, downloaded, leechers)
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
        """Forget peers silent for peer_lifetime in every swarm; returns how many."""
        before = self._peer_count
        for info_hash, swarm in list(self._swarms.items()):
            self._expire(info_hash, swarm, now)
            if not swarm.peers:
                self._drop(info_hash)
        return before - self._peer_count

    def _expire(self, info_hash: bytes, swarm: _Swarm, now: float) -> None:
        """Pop peers from the front (oldest announce first): O(peers expired)."""
        deadline = now - self.peer_ttl
        peers = swarm.peers
        while peers:
            key = next(iter(peers))
            peer = peers[key]
            if peer.last_seen >= deadline:
                return
            del peers[key]
            self._remove(info_hash, swarm, peer)  # the store drops rows by age itself

    # -- persistence --------------------------------------------------------------------

    @property
    def has_changes(self) -> bool:
        return bool(self._dirty or self._gone or self._dirty_counts)

    def drain_changes(self, now: float, limit: int | None = None) -> SwarmChanges:
        """Peers to save (joined, changed state, or last saved a quarter lifetime ago),
        peers that stopped, and changed ``downloaded`` counts; at most ``limit`` peers
        (the rest stay for the next drain, so a burst costs no long pause)."""
        dirty = self._dirty
        keys = list(dirty if limit is None or len(dirty) <= limit else islice(dirty, limit))
        peers = []
        for key in keys:
            p = dirty.pop(key)
            peers.append(SavedPeer(key[0], p.ip, p.port, p.peer_id, p.left, p.last_seen))
            self._saved_at[key] = now
        counts = {h: self._downloaded.get(h, 0) for h in self._dirty_counts}
        changes = SwarmChanges(peers, list(self._gone), counts)
        self._gone, self._dirty_counts = {}, set()
        return changes

    def restore(self, peers: Iterable[SavedPeer], downloaded: dict[bytes, int], now: float) -> int:
        """Put saved peers back (those still within their lifetime); returns how many."""
        self._downloaded.update(downloaded)
        restored = 0
        for saved in sorted(peers, key=lambda s: s.last_seen):
            if now - saved.last_seen > self.peer_ttl or not self.is_tracked(saved.info_hash):
                continue
            swarm = self._swarms.get(saved.info_hash)
            if swarm is None:
                if len(self._swarms) >= self.max_swarms:
                    continue
                swarm = self._swarms[saved.info_hash] = _Swarm()
            key = (saved.ip, saved.port)
            if key in swarm.peers or len(swarm.peers) >= self.max_peers_per_swarm:
                continue
            try:
                peer = Peer(saved.ip, saved.port, saved.peer_id, saved.left, now=saved.last_seen)
            except TrackerError:
                continue
            peer.zone = self.zone_of(saved.ip)
            peer.fleet = peer.zone is not None or self.is_fleet(saved.ip)
            swarm.add(peer)
            self._count_source(swarm, peer.source, 1)
            swarm.peers[key] = peer
            self._saved_at[saved.info_hash, saved.ip, saved.port] = now
            self._peer_count += 1
            restored += 1
        return restored

    # -- sharing with other hubs (several hubs on Redis) ---------------------------------

    def share(self, refresh: float) -> None:
        """From now on keep what this tracker accepts for :meth:`drain_shared`; a peer
        re-announcing with nothing changed is shared again after ``refresh`` seconds."""
        if self._outbox is None:
            self._outbox = {}
        self._share_refresh = refresh

    @property
    def pending_shared(self) -> int:
        """Entries waiting in the outbox (0 when not sharing)."""
        if self._outbox is None:
            return 0
        return len(self._outbox) + len(self._outbox_tracked) + len(self._outbox_counts)

    def drain_shared(self, limit: int | None = None) -> SharedChanges:
        """What this tracker accepted since the last drain; at most ``limit`` peers (the
        rest stay for the next). Peers carry their ``last_seen`` on this clock."""
        outbox = self._outbox
        if outbox is None:
            return SharedChanges([], [], {})
        keys = list(outbox if limit is None or len(outbox) <= limit else islice(outbox, limit))
        peers = []
        for key in keys:
            p = outbox.pop(key)
            info_hash, ip, port = key
            if p is None:
                peers.append(SharedPeer(info_hash, ip, port, gone=True))
            else:
                source = "" if p.source == p.ip else p.source
                peers.append(
                    SharedPeer(info_hash, ip, port, p.peer_id, p.left, p.last_seen, source, p.key)
                )
        changes = SharedChanges(list(self._outbox_tracked), peers, self._outbox_counts)
        self._outbox_tracked, self._outbox_counts = {}, {}
        return changes

    def drop_shared(self) -> int:
        """Forget the outbox (the other hubs cannot be told now); how many entries."""
        dropped = self.pending_shared
        if self._outbox is not None:
            self._outbox.clear()
        self._outbox_tracked, self._outbox_counts = {}, {}
        return dropped

    def merge_shared(self, changes: SharedChanges, now: float) -> set[bytes]:
        """Apply another hub's changes (its tracked torrents, peers and downloads),
        within this tracker's caps, without sharing them again. A peer older than the
        lifetime, or older than the entry here, changes nothing. Returns the torrents
        where a peer this hub took itself was taken over or removed."""
        self._allowed.update(changes.tracked)
        for info_hash, count in changes.downloaded.items():
            if self.is_tracked(info_hash) and count > 0:
                self._downloaded[info_hash] = self._downloaded.get(info_hash, 0) + count
                self._dirty_counts.add(info_hash)
        touched: set[bytes] = set()
        for shared in changes.peers:
            info_hash = shared.info_hash
            if not self.is_tracked(info_hash):
                continue
            swarm = self._swarms.get(info_hash)
            key = (shared.ip, shared.port)
            if shared.gone:
                peer = swarm.peers.pop(key, None) if swarm is not None else None
                if swarm is None or peer is None:
                    continue
                self._remove(info_hash, swarm, peer)
                self._gone[info_hash, peer.ip, peer.port] = None
                if peer.shared is not None:
                    touched.add(info_hash)
                if not swarm.peers:
                    self._drop(info_hash)
                continue
            if now - shared.last_seen > self.peer_ttl:
                continue
            if swarm is None:
                if len(self._swarms) >= self.max_swarms:
                    continue
                swarm = self._swarms[info_hash] = _Swarm()
            peer = swarm.peers.get(key)
            if peer is None:
                self._merge_new(info_hash, swarm, shared)
            elif shared.last_seen >= peer.last_seen:
                if peer.shared is not None:
                    touched.add(info_hash)
                self._merge_update(swarm, peer, shared)
            if not swarm.peers:
                self._drop(info_hash)
        return touched

    def _merge_new(self, info_hash: bytes, swarm: _Swarm, shared: SharedPeer) -> None:
        source = shared.source or shared.ip
        if (
            len(swarm.peers) >= self.max_peers_per_swarm
            or self._peer_count >= self.max_peers
            or swarm.sources.get(source, 0) >= self.max_peers_per_ip
            or self._sources.get(source, 0) >= self.max_peers_per_source
        ):
            return
        try:
            peer = Peer(shared.ip, shared.port, shared.peer_id, shared.left, now=shared.last_seen)
        except TrackerError:
            return
        peer.source, peer.key = source, shared.key
        peer.zone = self.zone_of(shared.ip)
        peer.fleet = peer.zone is not None or self.is_fleet(shared.ip)
        swarm.add(peer)
        self._count_source(swarm, source, 1)
        swarm.peers[shared.ip, shared.port] = peer
        self._peer_count += 1

    def _merge_update(self, swarm: _Swarm, peer: Peer, shared: SharedPeer) -> None:
        if (peer.left == 0) != (shared.left == 0):
            swarm.remove(peer)
            peer.left = shared.left
            swarm.add(peer)
        source = shared.source or shared.ip
        if source != peer.source:
            self._count_source(swarm, peer.source, -1)
            self._count_source(swarm, source, 1)
            peer.source = source
        peer.left, peer.peer_id, peer.key = shared.left, shared.peer_id, shared.key
        peer.last_seen = shared.last_seen
        peer.shared = None  # another hub's now
        swarm.peers.move_to_end((peer.ip, peer.port))

    def own_peers(self, info_hash: bytes, limit: int) -> list[SharedPeer]:
        """Up to ``limit`` of the peers this hub took itself in one swarm, newest first
        (what it snapshots for hubs that start later)."""
        swarm = self._swarms.get(info_hash)
        if swarm is None or limit <= 0:
            return []
        found = []
        for peer in reversed(swarm.peers.values()):
            if peer.shared is None:
                continue
            source = "" if peer.source == peer.ip else peer.source
            found.append(
                SharedPeer(
                    info_hash, peer.ip, peer.port, peer.peer_id, peer.left, peer.last_seen,
                    source, peer.key,
                )
            )  # fmt: skip
            if len(found) >= limit:
                break
        return found

    def downloads(self, info_hash: bytes) -> int:
        return self._downloaded.get(info_hash, 0)

    def statistics(self) -> dict[str, int]:
        return {
            "torrents": len(self._allowed),
            "swarms": len(self._swarms),
            "peers": self._peer_count,
            "announces": self.announces,
            "refused": self.refused,
        }


def _compact(peers: Sequence[Peer | tuple[str, int, bytes]]) -> tuple[bytes, bytes]:
    try:
        packed = [p.compact for p in peers]  # type: ignore[union-attr]
    except AttributeError:
        packed = [_pack(p[0], p[1]) for p in peers]  # type: ignore[index]
    joined = b"".join(packed)
    if len(joined) == 6 * len(packed):
        return joined, b""  # IPv4 only: the common case
    v4: list[bytes] = []
    v6: list[bytes] = []
    for one in packed:
        (v4 if len(one) == 6 else v6).append(one)
    return b"".join(v4), b"".join(v6)


def compact_peers(reply: AnnounceReply) -> tuple[bytes, bytes]:
    """The reply's peers in compact form: IPv4 (BEP 23) and IPv6 (BEP 7)."""
    return (reply.compact, b"") if reply.compact is not None else _compact(reply.peers)


def _fields(peer: Peer | tuple[str, int, bytes]) -> tuple[str, int, bytes]:
    return (peer.ip, peer.port, peer.peer_id) if isinstance(peer, Peer) else peer


def encode_announce(reply: AnnounceReply, request: Announce) -> bytes:
    if request.compact:  # the common case, written out: bencoded keys in sorted order
        v4, v6 = compact_peers(reply)
        six = b"6:peers6%d:%s" % (len(v6), v6) if v6 else b""
        return (
            b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de5:peers%d:%s%se"
            % (
                reply.complete,
                reply.incomplete,
                reply.interval,
                reply.min_interval,
                len(v4),
                v4,
                six,
            )
        )  # BEP 23 peers, BEP 7 peers6
    body: dict[bytes, object] = {
        b"interval": reply.interval,
        b"min interval": reply.min_interval,
        b"complete": reply.complete,
        b"incomplete": reply.incomplete,
        b"peers": [
            {b"ip": ip.encode(), b"port": port}
            | ({} if request.no_peer_id else {b"peer id": peer_id})
            for ip, port, peer_id in (_fields(p) for p in reply.peers)
        ],
    }
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
