"""The UDP tracker protocol (BEP 15), without I/O: datagram and ``now`` in, datagram out.

Theory of operation
-------------------
A client first sends ``connect`` and gets a connection id, then sends ``announce`` or
``scrape`` with that id. The id proves the client receives datagrams at the address it
sends from, so a spoofed source cannot make the hub reflect a large reply at a victim.
Here the id is a keyed hash (BLAKE2b, a secret made at start) of the client's address
and a time bucket of :data:`ID_LIFETIME` seconds: the hub keeps nothing per connection,
and an id is accepted in its bucket and the next one (BEP 15: a client may use an id
for one minute; libtorrent does for 60 s, its ``udp_tracker_token_expiry``).

Packets (BEP 15, big-endian)::

    connect   req: i64 protocol id 0x41727101980, i32 action 0, i32 transaction
              rep: i32 0, i32 transaction, i64 connection id
    announce  req: i64 connection id, i32 action 1, i32 transaction, 20s info_hash,
                   20s peer_id, i64 downloaded, i64 left, i64 uploaded, i32 event
                   (0 none, 1 completed, 2 started, 3 stopped), u32 ip, u32 key,
                   i32 num_want (-1: default), u16 port  [BEP 41 options follow]
              rep: i32 1, i32 transaction, i32 interval, i32 leechers, i32 seeders,
                   then 6-byte peers (18-byte over IPv6)
    scrape    req: i64 connection id, i32 action 2, i32 transaction, 20s info_hash * n
              rep: i32 2, i32 transaction, then (i32 seeders, i32 completed,
                   i32 leechers) per hash
    error     rep: i32 3, i32 transaction, message

Announces go through the same :meth:`~smartget.hub.commands.HubCommands.announce` as
HTTP, so the fleet ranking (zone, then capacity) and what is tracked are the same. The
``ip`` field is honoured as HTTP's ``ip=`` is (hub/tracker.py, issue 12.3): only when it
is the source address or the source is in a ``--tracker-trust-ip-net`` network; a peer
is otherwise listed at the address it sends from. The ``key`` field proves a later
announce (a ``stopped`` above all) comes from the client that listed the peer.

What gets no reply: datagrams shorter than 16 bytes, a connect without the protocol id,
a wrong or expired connection id. Everything else that is malformed gets an error
packet (never longer than the request that caused it).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

from smartget.errors import TrackerError
from smartget.hub import tracker as tr
from smartget.hub.commands import Announced

__all__ = [
    "ID_LIFETIME",
    "MAX_DATAGRAM",
    "PROTOCOL_ID",
    "UdpReply",
    "UdpTracker",
    "parse_request",
]

PROTOCOL_ID = 0x41727101980
ID_LIFETIME = 60.0  # seconds per time bucket; an id lives one to two of them
MAX_DATAGRAM = 1500  # anything longer is not a BEP 15 request
MAX_SCRAPE = 74  # info-hashes per scrape (BEP 15: what fits in a 1500-byte reply)
CONNECT, ANNOUNCE, SCRAPE, ERROR = 0, 1, 2, 3
EVENTS = ("", "completed", "started", "stopped")

_HEAD = struct.Struct("!qii")  # connection id (or protocol id), action, transaction
_ANNOUNCE = struct.Struct("!20s20sqqqiI4siH")  # after the head: 82 bytes
_CONNECTED = struct.Struct("!iiq")
_ANNOUNCED = struct.Struct("!iiiii")
_ERROR = struct.Struct("!ii")
_COUNTS = struct.Struct("!iii")
_INT32_MAX = 2**31 - 1
MAX_CACHED_IDS = 65536  # connection ids kept made (a keyed hash each), per time bucket


@dataclass(slots=True)  # not frozen: made per datagram (tracker._HOT)
class Connect:
    transaction: int


@dataclass(slots=True)  # not frozen: made per datagram (tracker._HOT)
class AnnounceRequest:
    connection_id: int
    transaction: int
    announce: tr.Announce


@dataclass(frozen=True, slots=True)
class ScrapeRequest:
    connection_id: int
    transaction: int
    scrape: tr.Scrape


Request = Connect | AnnounceRequest | ScrapeRequest


@dataclass(slots=True)  # not frozen: made per datagram (tracker._HOT)
class UdpReply:
    """The datagram to send back (or None), and the info-hash this announce made
    tracked, which must be saved before the reply leaves."""

    data: bytes | None
    newly_tracked: bytes | None = None


class _Silent(Exception):
    """Drop the datagram without a reply."""


def parse_request(data: bytes, ip: str, port: int) -> Request:
    """One BEP 15 request; TrackerError for a malformed one (with a transaction id to
    answer, in ``.args[1]``, when the head was readable)."""
    if len(data) > MAX_DATAGRAM:
        raise TrackerError(f"datagram longer than {MAX_DATAGRAM} bytes")
    if len(data) < 16:
        raise TrackerError(f"datagram shorter than 16 bytes ({len(data)})")
    connection_id, action, transaction = _HEAD.unpack_from(data)
    if action == CONNECT:
        if connection_id != PROTOCOL_ID:
            raise TrackerError("connect without the BEP 15 protocol id")
        return Connect(transaction)
    if action == ANNOUNCE:
        if len(data) < 98:
            raise TrackerError(f"announce shorter than 98 bytes ({len(data)})", transaction)
        info_hash, peer_id, downloaded, left, uploaded, event, declared, key, numwant, peer_port = (
            _ANNOUNCE.unpack_from(data, 16)
        )
        if not 0 <= event < len(EVENTS):
            raise TrackerError(f"unknown event {event}", transaction)
        if peer_port == 0:
            raise TrackerError("port must be from 1 to 65535", transaction)
        if numwant < 0 or numwant > tr.MAX_NUMWANT:
            numwant = tr.DEFAULT_NUMWANT if numwant < 0 else tr.MAX_NUMWANT
        # Positional, and no max() calls: this runs for every datagram (tracker._HOT).
        announce = tr.Announce(
            info_hash,
            peer_id,
            str(ipaddress.IPv4Address(declared)) if declared else ip,  # ip
            peer_port,
            uploaded if uploaded > 0 else 0,
            downloaded if downloaded > 0 else 0,
            left if left > 0 else 0,
            EVENTS[event],
            numwant,
            True,  # compact
            False,  # no_peer_id
            ip,  # source
            key,
        )
        return AnnounceRequest(connection_id, transaction, announce)
    if action == SCRAPE:
        body = data[16:]
        if not body or len(body) % 20:
            raise TrackerError("scrape takes one or more 20-byte info-hashes", transaction)
        if len(body) > 20 * MAX_SCRAPE:
            raise TrackerError(f"at most {MAX_SCRAPE} info-hashes per scrape", transaction)
        hashes = tuple(body[i : i + 20] for i in range(0, len(body), 20))
        return ScrapeRequest(connection_id, transaction, tr.Scrape(hashes))
    raise TrackerError(f"unknown action {action}", transaction)


class UdpTracker:
    """BEP 15 over the hub's tracker. ``announce`` is ``HubCommands.announce``."""

    def __init__(
        self,
        tracker: tr.Tracker,
        announce: Callable[[tr.Announce, str, float], Announced],
        secret: bytes,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the connection id secret must be at least 16 bytes")
        self.tracker = tracker
        self._announce = announce
        self._secret = secret[:64]
        self._ids: dict[tuple[str, int, int], int] = {}  # (ip, port, bucket) -> id
        self._ids_bucket = 0  # the newest bucket asked for: older entries go with it
        self.received = 0
        self.dropped = 0
        self.errors = 0
        self.announces = 0

    def connection_id(self, ip: str, port: int, now: float, bucket_offset: int = 0) -> int:
        bucket = int(now // ID_LIFETIME) + bucket_offset
        ids = self._ids
        found = ids.get((ip, port, bucket))
        if found is not None:
            return found
        digest = hashlib.blake2b(
            b"%s|%d|%d" % (ip.encode(), port, bucket), key=self._secret, digest_size=8
        ).digest()
        found = int.from_bytes(digest, "big", signed=True)
        if bucket > self._ids_bucket or len(ids) >= MAX_CACHED_IDS:
            ids.clear()  # a new bucket (the ids of the last one are made again once)
            self._ids_bucket = max(bucket, self._ids_bucket)
        ids[ip, port, bucket] = found
        return found

    def _check(self, connection_id: int, ip: str, port: int, now: float) -> None:
        if connection_id != self.connection_id(ip, port, now) and connection_id != (
            self.connection_id(ip, port, now, -1)
        ):
            raise _Silent

    def receive(self, data: bytes, ip: str, port: int, now: float) -> UdpReply:
        """The reply to one datagram from ``ip``:``port``."""
        self.received += 1
        try:
            request = parse_request(data, ip, port)
            if isinstance(request, Connect):
                reply = _CONNECTED.pack(
                    CONNECT, request.transaction, self.connection_id(ip, port, now)
                )
                return UdpReply(reply)
            self._check(request.connection_id, ip, port, now)
            if isinstance(request, AnnounceRequest):
                return self._announced(request, now)
            return UdpReply(self._scraped(request, now))
        except _Silent:
            self.dropped += 1
            return UdpReply(None)
        except TrackerError as exc:
            if len(exc.args) < 2:
                self.dropped += 1  # no readable head: nobody to answer
                return UdpReply(None)
            self.errors += 1
            message = str(exc.args[0]).encode("utf-8", "replace")
            reply = _ERROR.pack(ERROR, exc.args[1]) + message
            return UdpReply(reply[: max(len(data), 16)])

    def _announced(self, request: AnnounceRequest, now: float) -> UdpReply:
        ip = request.announce.source
        try:
            announced = self._announce(request.announce, ip, now)
        except TrackerError as exc:
            raise TrackerError(str(exc), request.transaction) from None
        self.announces += 1
        reply = announced.reply
        v4, v6 = tr.compact_peers(reply)
        peers = v6 if ":" in ip else v4  # BEP 15: a client gets peers of its own family
        head = _ANNOUNCED.pack(
            ANNOUNCE,
            request.transaction,
            reply.interval,
            min(reply.incomplete, _INT32_MAX),
            min(reply.complete, _INT32_MAX),
        )
        newly = request.announce.info_hash if announced.newly_tracked else None
        return UdpReply(head + peers, newly)

    def _scraped(self, request: ScrapeRequest, now: float) -> bytes:
        files = self.tracker.scrape(request.scrape, now)
        counts = [
            _COUNTS.pack(*(min(n, _INT32_MAX) for n in files.get(h, (0, 0, 0))))
            for h in request.scrape.info_hashes
        ]
        return _ERROR.pack(SCRAPE, request.transaction) + b"".join(counts)

    def statistics(self) -> dict[str, int]:
        return {
            "received": self.received,
            "announces": self.announces,
            "errors": self.errors,
            "dropped": self.dropped,
        }
