"""The peer store: who announced which info-hash (BEP 5 "announce_peer").

Announced peers expire after 30 minutes. One IP holds at most one entry per info-hash
(its latest port, as libtorrent keeps it), so one address with one token cannot fill a
swarm and push the real peers out (issue 12, item 9); and at most :data:`MAX_PER_IP`
entries in all, so it cannot fill the store across info-hashes either. The store is
bounded per info-hash and in total: when full, the oldest entries go first.
:meth:`PeerStore.get` returns at most :data:`MAX_VALUES` peers, what fits a response in
one UDP packet beside the nodes and token. Sans-IO: callers pass ``now``.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from typing import Final

from smartget.dht.krpc import Addr, compact_addr

__all__ = ["MAX_PER_IP", "MAX_VALUES", "PEER_TTL", "PeerStore"]

PEER_TTL: Final = 30 * 60.0
MAX_VALUES: Final = 100  # 100 x 8 bytes of bencoded compact peers, ~1 kB with the rest
MAX_PER_HASH: Final = 2000
MAX_PER_IP: Final = 1000  # info-hashes one address may hold (a seeder of many torrents)
MAX_TOTAL: Final = 100_000


class PeerStore:
    def __init__(
        self,
        ttl: float = PEER_TTL,
        max_per_hash: int = MAX_PER_HASH,
        max_total: int = MAX_TOTAL,
        max_per_ip: int = MAX_PER_IP,
    ) -> None:
        self.ttl = ttl
        self.max_per_hash = max_per_hash
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        # info_hash -> ip -> (port, expiry), oldest announce first
        self._peers: dict[bytes, OrderedDict[str, tuple[int, float]]] = {}
        # every (info_hash, ip), oldest announce first: expiry and eviction in O(1)
        self._order: OrderedDict[tuple[bytes, str], float] = OrderedDict()
        self._per_ip: Counter[str] = Counter()
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._order)

    def hashes(self) -> int:
        return len(self._peers)

    def add(self, info_hash: bytes, peer: Addr, now: float) -> bool:
        """Store ``peer`` for ``info_hash`` (replacing the port its IP announced before).

        False if its IP already holds :attr:`max_per_ip` other entries.
        """
        ip, port = peer
        peers = self._peers.get(info_hash)
        known = peers is not None and ip in peers
        if not known and self._per_ip[ip] >= self.max_per_ip:
            self.refused += 1
            return False
        if known:
            self._drop(info_hash, ip)
        peers = self._peers.get(info_hash)
        if peers is None:
            peers = self._peers[info_hash] = OrderedDict()
        expiry = now + self.ttl
        peers[ip] = (port, expiry)
        self._order[(info_hash, ip)] = expiry
        self._per_ip[ip] += 1
        if len(peers) > self.max_per_hash:
            self._drop(info_hash, next(iter(peers)))
            self.evicted += 1
        if len(self._order) > self.max_total:
            self._drop(*next(iter(self._order)))
            self.evicted += 1
        return True

    def _drop(self, info_hash: bytes, ip: str) -> None:
        if self._order.pop((info_hash, ip), None) is None:
            return
        peers = self._peers[info_hash]
        del peers[ip]
        if not peers:
            del self._peers[info_hash]
        left = self._per_ip[ip] - 1
        if left:
            self._per_ip[ip] = left
        else:
            del self._per_ip[ip]

    def get(self, info_hash: bytes, now: float, limit: int = MAX_VALUES) -> list[Addr]:
        """Live peers of ``info_hash``, a random sample of at most ``limit``."""
        peers = self._peers.get(info_hash)
        if not peers:
            return []
        live = [(ip, port) for ip, (port, expiry) in peers.items() if expiry > now]
        return random.sample(live, limit) if len(live) > limit else live

    def get_compact(self, info_hash: bytes, now: float, limit: int = MAX_VALUES) -> list[bytes]:
        return [compact_addr(p) for p in self.get(info_hash, now, limit)]

    def expire(self, now: float) -> int:
        """Drop expired peers (the TTL is constant, so they are at the front)."""
        dropped = 0
        while self._order:
            key, expiry = next(iter(self._order.items()))
            if expiry > now:
                break
            self._drop(*key)
            dropped += 1
        return dropped
