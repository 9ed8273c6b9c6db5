"""The wire format of the fleet's swarm log: what one hub's tracker tells the others
(sans-IO: bytes, ``now`` and wall-clock time in; :class:`~smartget.hub.tracker.SharedChanges`
out).

A batch is what one hub's tracker accepted in one flush (hub/state/swarms.py: about
every 50 ms), or one swarm of its snapshot. It travels as base64 text (the engine's
Redis client decodes replies as text), holding big-endian binary::

    u8  version (1)           u64 wall-clock ms of the sender when it encoded the batch
    u16 tracked torrents      then 20 bytes each
    u16 swarms                then, for each:
        20s info_hash  u32 downloads (a delta in the log, a total in a snapshot)
        u16 peers      then, for each:
            u8 flags (1 gone, 2 IPv6, 4 source given, 8 source IPv6)
            4|16 bytes IP, u16 port (not 0)
            unless gone: 20s peer_id, u64 left, u32 age (ms before the wall time),
                         u8 key length (<= 64), key, and the source address if given

A peer's age travels, not its time: the receiver puts ``last_seen`` at its own ``now``
minus the age minus the lag (its wall clock minus the sender's, clamped to
``[0, max_lag]``), so hubs need no common monotonic clock and a skewed wall clock moves
a peer's expiry by the skew at most.

Bounds, checked before anything is built: :data:`MAX_TEXT` characters,
:data:`MAX_TRACKED` torrents, :data:`MAX_SWARMS` swarms and :data:`MAX_PEERS` peers per
batch. Any other input gives :class:`BatchError` (a ``TrackerError``), never another
exception: the follower skips that entry and goes on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from smartget.errors import TrackerError
from smartget.hub.tracker import SharedChanges, SharedPeer

__all__ = [
    "MAX_PEERS",
    "MAX_SWARMS",
    "MAX_TEXT",
    "MAX_TRACKED",
    "VERSION",
    "Batch",
    "BatchError",
    "decode",
    "decode_changes",
    "encode",
    "encode_changes",
]

VERSION = 1
MAX_TRACKED = 1000  # torrents per batch
MAX_SWARMS = 2000  # swarms per batch
MAX_PEERS = 2000  # peers per batch
MAX_KEY = 64  # the tracker keeps at most 64 bytes of a key
MAX_AGE_MS = 2**32 - 1
_LARGEST_PEER = 1 + 16 + 2 + 20 + 8 + 4 + 1 + MAX_KEY + 16
MAX_BYTES = 11 + 20 * MAX_TRACKED + 26 * MAX_SWARMS + _LARGEST_PEER * MAX_PEERS
MAX_TEXT = (MAX_BYTES + 2) // 3 * 4

GONE, IPV6, SOURCE, SOURCE6 = 1, 2, 4, 8
_HEAD = struct.Struct("!BQH")
_COUNT = struct.Struct("!H")
_SWARM = struct.Struct("!20sIH")
_PORT = struct.Struct("!H")
_STATE = struct.Struct("!20sQIB")


class BatchError(TrackerError):
    """Bytes that are not a swarm-log batch (or one past the bounds)."""


@dataclass(frozen=True, slots=True)
class WirePeer:
    ip: str
    port: int
    gone: bool = False
    peer_id: bytes = b""
    left: int = 0
    age_ms: int = 0
    key: bytes | None = None
    source: str = ""  # "": the peer's ip


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch as it travels: ``wall_ms`` is the sender's wall clock at encoding."""

    wall_ms: int
    tracked: tuple[bytes, ...] = ()
    swarms: tuple[tuple[bytes, int, tuple[WirePeer, ...]], ...] = ()  # hash, downloads, peers


def _packed(ip: str) -> bytes:
    try:
        return ipaddress.ip_address(ip).packed
    except ValueError:
        raise BatchError(f"not an IP address: {ip[:48]!r}") from None


def encode(batch: Batch) -> str:
    """The batch as base64 text; BatchError past a bound or for a malformed field."""
    if len(batch.tracked) > MAX_TRACKED or len(batch.swarms) > MAX_SWARMS:
        raise BatchError(f"at most {MAX_TRACKED} torrents and {MAX_SWARMS} swarms a batch")
    if sum(len(s[2]) for s in batch.swarms) > MAX_PEERS:
        raise BatchError(f"at most {MAX_PEERS} peers a batch")
    out = [_HEAD.pack(VERSION, max(0, batch.wall_ms), len(batch.tracked))]
    for info_hash in batch.tracked:
        out.append(_hash(info_hash))
    out.append(_COUNT.pack(len(batch.swarms)))
    for info_hash, downloads, peers in batch.swarms:
        out.append(_SWARM.pack(_hash(info_hash), min(max(0, downloads), 2**32 - 1), len(peers)))
        for peer in peers:
            out.append(_peer(peer))
    return base64.b64encode(b"".join(out)).decode("ascii")


def _hash(info_hash: bytes) -> bytes:
    if len(info_hash) != 20:
        raise BatchError(f"an info-hash is 20 bytes, got {len(info_hash)}")
    return info_hash


def _peer(peer: WirePeer) -> bytes:
    ip = _packed(peer.ip)
    if not 0 < peer.port <= 65535:
        raise BatchError(f"port must be from 1 to 65535, got {peer.port}")
    flags = (IPV6 if len(ip) == 16 else 0) | (GONE if peer.gone else 0)
    if peer.gone:
        return bytes((flags,)) + ip + _PORT.pack(peer.port)
    source = _packed(peer.source) if peer.source and peer.source != peer.ip else b""
    if source:
        flags |= SOURCE | (SOURCE6 if len(source) == 16 else 0)
    key = peer.key or b""
    if len(peer.peer_id) != 20 or len(key) > MAX_KEY or not 0 <= peer.left < 2**64:
        raise BatchError("a peer has a 20-byte peer_id, a key of at most 64 bytes, left >= 0")
    age = min(max(0, peer.age_ms), MAX_AGE_MS)
    # A key given but empty travels as absent: the tracker never keeps an empty key.
    state = _STATE.pack(peer.peer_id, peer.left, age, len(key))
    return bytes((flags,)) + ip + _PORT.pack(peer.port) + state + key + source


def decode(text: str | bytes) -> Batch:
    """A batch from its base64 text; BatchError for anything else."""
    if len(text) > MAX_TEXT:
        raise BatchError(f"a batch is at most {MAX_TEXT} characters, got {len(text)}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BatchError(f"a batch is base64: {exc}") from None
    return _Reader(data).batch()


class _Reader:
    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        end = self.at + n
        if end > len(self.data):
            raise BatchError(f"a batch ends early ({len(self.data)} bytes)")
        chunk = self.data[self.at : end]
        self.at = end
        return chunk

    def unpack(self, shape: struct.Struct) -> tuple[Any, ...]:
        return shape.unpack(self.take(shape.size))

    def batch(self) -> Batch:
        version, wall_ms, n_tracked = self.unpack(_HEAD)
        if version != VERSION:
            raise BatchError(f"swarm-log version {version!r}; this hub reads {VERSION}")
        if n_tracked > MAX_TRACKED:
            raise BatchError(f"{n_tracked} torrents in a batch; at most {MAX_TRACKED}")
        tracked = tuple(self.take(20) for _ in range(n_tracked))
        (n_swarms,) = self.unpack(_COUNT)
        if n_swarms > MAX_SWARMS:
            raise BatchError(f"{n_swarms} swarms in a batch; at most {MAX_SWARMS}")
        swarms = []
        total = 0
        for _ in range(n_swarms):
            info_hash, downloads, n_peers = self.unpack(_SWARM)
            total += n_peers
            if total > MAX_PEERS:
                raise BatchError(f"more than {MAX_PEERS} peers in a batch")
            swarms.append((info_hash, downloads, tuple(self.peer() for _ in range(n_peers))))
        if self.at != len(self.data):
            raise BatchError(f"{len(self.data) - self.at} bytes after the batch")
        return Batch(wall_ms, tracked, tuple(swarms))

    def address(self, v6: bool) -> str:
        return str(ipaddress.ip_address(self.take(16 if v6 else 4)))

    def peer(self) -> WirePeer:
        (flags,) = self.take(1)
        if flags & ~(GONE | IPV6 | SOURCE | SOURCE6) or (flags & SOURCE6 and not flags & SOURCE):
            raise BatchError(f"unknown peer flags {flags:#x}")
        ip = self.address(bool(flags & IPV6))
        (port,) = self.unpack(_PORT)
        if port == 0:
            raise BatchError("a peer's port is not 0")
        if flags & GONE:
            if flags & (SOURCE | SOURCE6):
                raise BatchError("a peer gone carries nothing but its address")
            return WirePeer(ip, port, gone=True)
        peer_id, left, age, key_length = self.unpack(_STATE)
        if key_length > MAX_KEY:
            raise BatchError(f"a key is at most {MAX_KEY} bytes, got {key_length}")
        key = self.take(key_length) if key_length else None
        source = self.address(bool(flags & SOURCE6)) if flags & SOURCE else ""
        return WirePeer(ip, port, False, peer_id, left, age, key, source)


# -- between the tracker's changes and batches ------------------------------------------


def encode_changes(changes: SharedChanges, now: float, wall: float) -> list[str]:
    """A tracker's drained changes as batches (several if past a bound); ``now`` is the
    tracker's clock, ``wall`` the wall clock (seconds) at the same moment."""
    wall_ms = int(wall * 1000)
    by_swarm: dict[bytes, list[WirePeer]] = {}
    for p in changes.peers:
        age = int((now - p.last_seen) * 1000)
        by_swarm.setdefault(p.info_hash, []).append(
            WirePeer(p.ip, p.port, p.gone, p.peer_id, p.left, age, p.key, p.source)
        )
    swarms = [(h, changes.downloaded.get(h, 0), peers) for h, peers in by_swarm.items()]
    swarms += [(h, n, []) for h, n in changes.downloaded.items() if h not in by_swarm]
    batches: list[str] = []
    tracked = list(changes.tracked)
    current: list[tuple[bytes, int, tuple[WirePeer, ...]]] = []
    room = MAX_PEERS

    def close() -> None:
        nonlocal tracked, current, room
        batches.append(encode(Batch(wall_ms, tuple(tracked[:MAX_TRACKED]), tuple(current))))
        tracked, current, room = tracked[MAX_TRACKED:], [], MAX_PEERS

    for info_hash, downloads, peers in swarms:
        while True:
            if room == 0 or len(current) == MAX_SWARMS:
                close()
            part, peers = peers[:room], peers[room:]
            current.append((info_hash, downloads, tuple(part)))
            downloads, room = 0, room - len(part)  # a count goes once, with the first part
            if not peers:
                break
    while current or tracked:
        close()
    return batches


def decode_changes(
    text: str | bytes, now: float, wall: float, max_lag: float
) -> tuple[SharedChanges, float]:
    """A batch as changes for :meth:`~smartget.hub.tracker.Tracker.merge_shared`, with
    ``last_seen`` on the receiving tracker's clock ``now`` (``wall``: the wall clock at
    the same moment); also the lag (seconds) taken. BatchError if it is no batch."""
    batch = decode(text)
    lag = min(max(0.0, wall - batch.wall_ms / 1000), max_lag)
    peers = []
    downloaded: dict[bytes, int] = {}
    for info_hash, downloads, wire in batch.swarms:
        if downloads:
            downloaded[info_hash] = downloaded.get(info_hash, 0) + downloads
        for p in wire:
            last_seen = now - lag - p.age_ms / 1000
            peers.append(
                SharedPeer(
                    info_hash, p.ip, p.port, p.peer_id, p.left, last_seen, p.source, p.key, p.gone
                )
            )
    return SharedChanges(list(batch.tracked), peers, downloaded), lag
