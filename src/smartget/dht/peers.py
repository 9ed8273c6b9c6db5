"""The peer store: who announced which info-hash (BEP 5 "announce_peer").

Announced peers expire after 30 minutes. The store is bounded per info-hash and in
total, so a flood of announces cannot exhaust memory: when full, the oldest entries go
first. :meth:`PeerStore.get` returns at most :data:`MAX_VALUES` peers, what fits a
response in one UDP packet beside the nodes and token. Sans-IO: callers pass ``now``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Final

from smartget.dht.krpc import Addr, compact_addr

__all__ = ["MAX_VALUES", "PEER_TTL", "PeerStore"]

PEER_TTL: Final = 30 * 60.0
MAX_VALUES: Final = 100  # 100 x 8 bytes of bencoded compact peers, ~1 kB with the rest
MAX_PER_HASH: Final = 2000
MAX_TOTAL: Final = 100_000


class PeerStore:
    def __init__(
        self,
        ttl: float = PEER_TTL,
        max_per_hash: int = MAX_PER_HASH,
        max_total: int = MAX_TOTAL,
    ) -> None:
        self.ttl = ttl
        self.max_per_hash = max_per_hash
        self.max_total = max_total
        # info_hash -> peer -> expiry, oldest announce first
        self._peers: dict[bytes, OrderedDict[Addr, float]] = {}
        # every (info_hash, peer), oldest announce first: expiry and eviction in O(1)
        self._order: OrderedDict[tuple[bytes, Addr], float] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._order)

    def hashes(self) -> int:
        return len(self._peers)

    def add(self, info_hash: bytes, peer: Addr, now: float) -> None:
        peers = self._peers.get(info_hash)
        if peers is None:
            peers = self._peers[info_hash] = OrderedDict()
        self._drop(info_hash, peer)
        peers[peer] = self._order[(info_hash, peer)] = now + self.ttl
        if len(peers) > self.max_per_hash:
            self._drop(info_hash, next(iter(peers)))
            self.evicted += 1
        if len(self._order) > self.max_total:
            self._drop(*next(iter(self._order)))
            self.evicted += 1

    def _drop(self, info_hash: bytes, peer: Addr) -> None:
        if self._order.pop((info_hash, peer), None) is None:
            return
        peers = self._peers[info_hash]
        del peers[peer]
        if not peers:
            del self._peers[info_hash]

    def get(self, info_hash: bytes, now: float, limit: int = MAX_VALUES) -> list[Addr]:
        """Live peers of ``info_hash``, a random sample of at most ``limit``."""
        peers = self._peers.get(info_hash)
        if not peers:
            return []
        live = [p for p, expiry in peers.items() if expiry > now]
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
