"""The routing table (BEP 5 "Routing Table"): nodes, k-buckets, a prefix tree of buckets.

Theory of operation
-------------------
Pure logic, no clock: every call that depends on time takes ``now`` (seconds on the
driver's clock). Ids are 160-bit; internally they are Python ints so that XOR distance
is one operation.

The table is a prefix tree whose leaves are :class:`Bucket` s; because the leaves of a
prefix tree are disjoint ranges covering the whole id space, they are kept as a list
sorted by their first id, and finding the bucket of an id is one ``bisect``.

A full bucket (``max_size`` = K = 8) splits in two when it *owns* (its range contains)
the id of a registered DHT (:meth:`RoutingTable.register_dht`) or an info-hash
registered with :meth:`RoutingTable.register_torrent` (for the length of a lookup) or
:meth:`RoutingTable.register_torrent_longterm` — btdht's rule (seed 002), which gives
extra resolution near the ids we care about. When a registration is released the table
is marked ``need_merge``; :meth:`RoutingTable.merge` then folds sibling leaves that no
longer own a registered id back together. A full bucket that cannot split keeps
newcomers in a bounded replacement cache; they take the place of nodes that go bad.

Closest-node queries are exact: a bucket's range gives a lower bound of the XOR
distance of any of its nodes to the target, so buckets are visited in order of that
bound and the walk stops once K nodes closer than the next bound are in hand. Replies
use :meth:`RoutingTable.compact_closest`: when the target's bucket holds exactly K nodes,
none bad, they are the answer, and their joined 26-byte records are cached
in the bucket until it changes (a node added, replaced or removed) or any node of the
table turns bad, good again or moves (the table's epoch, bumped by :attr:`Node.failed`'s
setter). The epoch belongs to the table, not the process: one table's failures leave
every other table's caches alone.
"""

from __future__ import annotations

import bisect
import heapq
import os
import struct
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

from smartget.dht.krpc import format_ipv4, pack_ipv4

__all__ = [
    "BAD_AFTER_FAILURES",
    "GOOD_FOR",
    "AddResult",
    "Bucket",
    "K",
    "Node",
    "RoutingTable",
    "Stats",
]

K: Final = 8  # BEP 5: "Each bucket can only hold K nodes, currently eight"
GOOD_FOR: Final = 15 * 60.0  # BEP 5: good = responded / queried us within 15 minutes
BAD_AFTER_FAILURES: Final = 3  # seed: "fail to respond to 3 queries in a row"
REFRESH_AFTER: Final = 15 * 60.0  # BEP 5: refresh buckets unchanged for 15 minutes
ID_BITS: Final = 160
REPLACEMENTS: Final = 8

_NODE = struct.Struct("!20s4sH")


class _Epoch:
    """A table's change counter: bumped whenever one of its nodes turns bad or good
    again, or changes address; the buckets' cached compact "nodes" strings
    (Bucket._nodes_blob) built before are then stale."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        self.value += 1


class Node:
    """A remote DHT node (seed 002, ``btdht.dht.Node``)."""

    __slots__ = (
        "_compact",
        "_epochs",
        "_failed",
        "id",
        "id_int",
        "ip",
        "last_query",
        "last_response",
        "port",
    )

    def __init__(
        self,
        id: bytes,
        ip: str,
        port: int,
        last_response: float = 0.0,
        last_query: float = 0.0,
        failed: int = 0,
    ) -> None:
        if len(id) != 20:
            raise ValueError(f"a node id is 20 bytes, got {len(id)}")
        self.id = id
        self.id_int = int.from_bytes(id, "big")
        self.ip = ip
        self.port = port
        self.last_response = last_response  # when it last answered one of our queries
        self.last_query = last_query  # when it last sent us a query
        self._failed = failed  # queries in a row it did not answer
        self._compact: bytes | None = None
        self._epochs: tuple[_Epoch, ...] = ()  # of the tables that hold it (usually one)

    def __repr__(self) -> str:
        return f"Node({self.id.hex()[:12]}.., {self.ip}:{self.port}, failed={self.failed})"

    @property
    def addr(self) -> tuple[str, int]:
        return (self.ip, self.port)

    @property
    def failed(self) -> int:
        """Queries in a row it did not answer."""
        return self._failed

    @failed.setter
    def failed(self, value: int) -> None:
        if (value >= BAD_AFTER_FAILURES) != (self._failed >= BAD_AFTER_FAILURES):
            self._changed()  # it went bad (or came back): cached replies must drop it
        self._failed = value

    def _changed(self) -> None:
        for epoch in self._epochs:
            epoch.bump()

    def is_good(self, now: float) -> bool:
        """Seed: responded within 15 minutes, or responded ever and queried us within 15."""
        if self._failed >= BAD_AFTER_FAILURES:
            return False
        if self.last_response and now - self.last_response < GOOD_FOR:
            return True
        return bool(self.last_response) and now - self.last_query < GOOD_FOR

    @property
    def bad(self) -> bool:
        """Seed: bad once it failed to respond to 3 queries in a row."""
        return self._failed >= BAD_AFTER_FAILURES

    def compact_info(self) -> bytes:
        """26 bytes: id, IPv4, port (BEP 5 "Contact Encoding")."""
        compact = self._compact
        if compact is None:
            compact = self._compact = _NODE.pack(self.id, pack_ipv4(self.ip), self.port)
        return compact

    @classmethod
    def from_compact_info(cls, info: bytes) -> Node:
        if len(info) != 26:
            raise ValueError(f"compact node info is 26 bytes, got {len(info)}")
        nid, ip, port = _NODE.unpack(info)
        return cls(nid, format_ipv4(ip), port)

    @classmethod
    def from_compact_infos(cls, infos: bytes) -> list[Node]:
        if len(infos) % 26:
            raise ValueError(f"compact node infos are a multiple of 26 bytes, got {len(infos)}")
        return [cls.from_compact_info(infos[i : i + 26]) for i in range(0, len(infos), 26)]


class AddResult(Enum):
    ADDED = "added"  # a new node in a bucket
    UPDATED = "updated"  # already known: timestamps refreshed
    REPLACED = "replaced"  # took the place of a bad node
    CACHED = "cached"  # its bucket is full: kept in the replacement cache


class Bucket:
    """A leaf of the prefix tree: at most ``max_size`` nodes whose ids share a prefix."""

    __slots__ = (
        "_blob_epoch",
        "_epoch",
        "_nodes_blob",
        "id",
        "id_length",
        "last_changed",
        "max_size",
        "nodes",
        "replacements",
    )

    def __init__(
        self, id: int = 0, id_length: int = 0, max_size: int = K, epoch: _Epoch | None = None
    ) -> None:
        self.id = id  # the prefix, as an int of id_length bits
        self.id_length = id_length
        self.max_size = max_size
        self.last_changed = 0.0
        self.nodes: dict[int, Node] = {}
        self.replacements: OrderedDict[int, Node] = OrderedDict()
        # the compact infos of ``nodes`` joined, while valid (see RoutingTable.compact_closest)
        self._nodes_blob: bytes | None = None
        self._blob_epoch = -1
        self._epoch = epoch if epoch is not None else _Epoch()  # its table's

    def __repr__(self) -> str:
        return f"Bucket({self.prefix_str() or '*'}, {len(self.nodes)} nodes)"

    def __len__(self) -> int:
        return len(self.nodes)

    def prefix_str(self) -> str:
        return format(self.id, f"0{self.id_length}b") if self.id_length else ""

    @property
    def start(self) -> int:
        return self.id << (ID_BITS - self.id_length)

    @property
    def end(self) -> int:
        return (self.id + 1) << (ID_BITS - self.id_length)

    def own(self, id: bytes | int) -> bool:
        """True if ``id`` falls in this bucket's prefix."""
        value = int.from_bytes(id, "big") if isinstance(id, bytes) else id
        return value >> (ID_BITS - self.id_length) == self.id

    def random_id(self) -> bytes:
        """A random id inside this bucket (used to refresh it)."""
        low_bits = ID_BITS - self.id_length
        rand = int.from_bytes(os.urandom(20), "big") & ((1 << low_bits) - 1)
        return (self.start | rand).to_bytes(20, "big")

    def get_node(self, id: bytes) -> Node | None:
        return self.nodes.get(int.from_bytes(id, "big"))

    def to_refresh(self, now: float) -> bool:
        """BEP 5: a bucket unchanged for 15 minutes should be refreshed."""
        return now - self.last_changed >= REFRESH_AFTER

    @property
    def full(self) -> bool:
        return len(self.nodes) >= self.max_size

    def add(self, node: Node, now: float) -> AddResult:
        """Add ``node`` (not splitting; the table decides that)."""
        return self._add(node, now)[0]

    def _add(self, node: Node, now: float) -> tuple[AddResult, Node | None]:
        """:meth:`add`, and the bad node that ``node`` replaced if any."""
        id_int = node.id_int
        known = self.nodes.get(id_int)
        if known is not None:
            _merge_node(known, node)
            self.last_changed = now
            return AddResult.UPDATED, None
        if self._epoch not in node._epochs:
            node._epochs = (*node._epochs, self._epoch)
        if len(self.nodes) < self.max_size:
            self.nodes[id_int] = node
            self._nodes_blob = None
            self.replacements.pop(id_int, None)
            self.last_changed = now
            return AddResult.ADDED, None
        for other in self.nodes.values():
            if other._failed >= BAD_AFTER_FAILURES:
                del self.nodes[other.id_int]
                self.nodes[id_int] = node
                self._nodes_blob = None
                self.last_changed = now
                return AddResult.REPLACED, other
        replacements = self.replacements
        replacements.pop(id_int, None)
        replacements[id_int] = node
        while len(replacements) > REPLACEMENTS:
            replacements.popitem(last=False)
        return AddResult.CACHED, None

    def remove(self, node: Node) -> None:
        """Drop a node; its place goes to the freshest replacement."""
        if self.nodes.pop(node.id_int, None) is not None:
            self._nodes_blob = None
            if self.replacements:
                _, repl = self.replacements.popitem(last=True)
                self.nodes[repl.id_int] = repl

    def questionable(self, now: float) -> list[Node]:
        """Nodes neither good nor bad, least recently heard from first."""
        nodes = [n for n in self.nodes.values() if not n.bad and not n.is_good(now)]
        return sorted(nodes, key=lambda n: max(n.last_response, n.last_query))

    def split(self) -> tuple[Bucket, Bucket]:
        """Two children, one bit longer, sharing this bucket's nodes and replacements."""
        low = Bucket(self.id << 1, self.id_length + 1, self.max_size, self._epoch)
        high = Bucket((self.id << 1) | 1, self.id_length + 1, self.max_size, self._epoch)
        for child in (low, high):
            child.last_changed = self.last_changed
        shift = ID_BITS - self.id_length - 1
        for node in self.nodes.values():
            (high if (node.id_int >> shift) & 1 else low).nodes[node.id_int] = node
        for node in self.replacements.values():
            (high if (node.id_int >> shift) & 1 else low).replacements[node.id_int] = node
        return low, high

    def merge(self, bucket: Bucket) -> Bucket:
        """The parent of this bucket and its sibling ``bucket``; the best K nodes stay."""
        if self.id_length != bucket.id_length or self.id >> 1 != bucket.id >> 1:
            raise ValueError(f"{self!r} and {bucket!r} are not siblings")
        parent = Bucket(self.id >> 1, self.id_length - 1, self.max_size, self._epoch)
        parent.last_changed = max(self.last_changed, bucket.last_changed)
        ranked = sorted(
            [*self.nodes.values(), *bucket.nodes.values()],
            key=lambda n: (n.bad, -n.last_response, -n.last_query),
        )
        for node in ranked[: self.max_size]:
            parent.nodes[node.id_int] = node
        extra = [*ranked[self.max_size :], *self.replacements.values()]
        for node in [*extra, *bucket.replacements.values()][-REPLACEMENTS:]:
            parent.replacements[node.id_int] = node
        return parent


def _merge_node(known: Node, fresh: Node) -> None:
    known.last_response = max(known.last_response, fresh.last_response)
    known.last_query = max(known.last_query, fresh.last_query)
    if fresh.last_response >= known.last_response and fresh.last_response:
        known.failed = 0
    if (known.ip, known.port) != (fresh.ip, fresh.port) and fresh.last_response:
        known.ip, known.port = fresh.ip, fresh.port
        known._compact = None
        known._changed()


class HasId(Protocol):
    @property
    def myid(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Stats:
    nodes: int
    good: int
    bad: int
    buckets: int
    height: int


class RoutingTable:
    """A prefix tree of k-buckets (seed 002, ``btdht.dht.RoutingTable``); sharable."""

    def __init__(self, max_size: int = K) -> None:
        self.max_size = max_size
        self._epoch = _Epoch()  # this table's alone (see the module docstring)
        self._buckets: list[Bucket] = [Bucket(0, 0, max_size, self._epoch)]
        self._starts: list[int] = [0]
        self._by_id: dict[int, Node] = {}
        self._dhts: list[HasId] = []
        self._dht_ids: list[int] = []  # their ids as ints, in the same order
        self._torrents: Counter[int] = Counter()
        self._longterm: Counter[int] = Counter()
        self.need_merge = False
        self.splits = 0
        self.merges = 0

    # -- registrations (seed: register_torrent, register_dht, ...) --------------------

    def register_dht(self, dht: HasId) -> None:
        if dht not in self._dhts:
            self._dhts.append(dht)
            self._dht_ids.append(int.from_bytes(dht.myid, "big"))

    def release_dht(self, dht: HasId) -> None:
        if dht in self._dhts:
            del self._dht_ids[self._dhts.index(dht)]
            self._dhts.remove(dht)
            self.need_merge = True

    def register_torrent(self, id: bytes) -> None:
        """Split around ``id`` while a lookup for it runs."""
        self._torrents[int.from_bytes(id, "big")] += 1

    def release_torrent(self, id: bytes) -> None:
        self._release(self._torrents, id)

    def register_torrent_longterm(self, id: bytes) -> None:
        """Split around ``id`` until released (a hash we keep announcing)."""
        self._longterm[int.from_bytes(id, "big")] += 1

    def release_torrent_longterm(self, id: bytes) -> None:
        self._release(self._longterm, id)

    def _release(self, counter: Counter[int], id: bytes) -> None:
        key = int.from_bytes(id, "big")
        if counter[key] <= 1:
            counter.pop(key, None)
            self.need_merge = True
        else:
            counter[key] -= 1

    def _registered(self) -> Iterator[int]:
        yield from self._dht_ids
        yield from self._torrents
        yield from self._longterm

    def _wants_split(self, bucket: Bucket) -> bool:
        if bucket.id_length >= ID_BITS - 1:
            return False
        shift, prefix = ID_BITS - bucket.id_length, bucket.id
        return any(key >> shift == prefix for key in self._registered())

    # -- lookups ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._by_id.values()))

    @property
    def buckets(self) -> list[Bucket]:
        return list(self._buckets)

    def find(self, id: bytes | int) -> Bucket:
        """The bucket whose prefix ``id`` falls in."""
        value = int.from_bytes(id, "big") if isinstance(id, bytes) else id
        return self._buckets[bisect.bisect_right(self._starts, value) - 1]

    def get_node(self, id: bytes) -> Node | None:
        return self._by_id.get(int.from_bytes(id, "big"))

    def get_closest_nodes(self, id: bytes, bad: bool = False, k: int = K) -> list[Node]:
        """The ``k`` known nodes closest to ``id`` by XOR; bad nodes only if ``bad``."""
        target = int.from_bytes(id, "big")
        home = self._buckets[bisect.bisect_right(self._starts, target) - 1]
        if len(home.nodes) >= k:
            # every node outside the target's own bucket is farther than any inside it
            near = [(n.id_int ^ target, n) for n in home.nodes.values() if bad or not n.bad]
            if len(near) >= k:
                return [node for _, node in heapq.nsmallest(k, near, key=_first)]
        order = []
        for bucket in self._buckets:
            if bucket.nodes:
                shift = ID_BITS - bucket.id_length
                bound = ((target >> shift) ^ bucket.id) << shift if bucket.id_length else 0
                order.append((bound, bucket.start, bucket))
        order.sort(key=lambda item: item[0])
        found: list[tuple[int, Node]] = []
        for bound, _, bucket in order:
            if len(found) >= k and heapq.nsmallest(k, found, key=_first)[-1][0] < bound:
                break
            found.extend((n.id_int ^ target, n) for n in bucket.nodes.values() if bad or not n.bad)
        return [node for _, node in heapq.nsmallest(k, found, key=_first)]

    def compact_closest(self, id: bytes, k: int = K) -> bytes:
        """:meth:`get_closest_nodes` as a reply's ``nodes`` value (26-byte records
        joined), the set the same but not always sorted by distance (BEP 5 asks for
        no order).

        The hot path of get_peers and find_node: when the target's own bucket holds
        exactly ``k`` nodes and none is bad, those are the ``k`` closest (every node
        outside it is farther than any inside), so the answer is that bucket's joined
        records, cached until the bucket or one of its nodes changes.
        """
        bucket = self._buckets[bisect.bisect_right(self._starts, int.from_bytes(id, "big")) - 1]
        if len(bucket.nodes) == k:
            blob = bucket._nodes_blob
            if blob is not None and bucket._blob_epoch == self._epoch.value:
                return blob
            nodes = bucket.nodes.values()
            if not any(n._failed >= BAD_AFTER_FAILURES for n in nodes):
                blob = bucket._nodes_blob = b"".join([n.compact_info() for n in nodes])
                bucket._blob_epoch = self._epoch.value
                return blob
        return b"".join([n.compact_info() for n in self.get_closest_nodes(id, k=k)])

    def height(self) -> int:
        """Depth of the prefix tree (the longest bucket prefix)."""
        return max(b.id_length for b in self._buckets)

    heigth = height  # btdht's spelling (seed 002)

    def stats(self, now: float) -> Stats:
        nodes = list(self._by_id.values())
        return Stats(
            nodes=len(nodes),
            good=sum(1 for n in nodes if n.is_good(now)),
            bad=sum(1 for n in nodes if n.bad),
            buckets=len(self._buckets),
            height=self.height(),
        )

    def to_refresh(self, now: float) -> list[Bucket]:
        return [b for b in self._buckets if b.to_refresh(now)]

    # -- changes ------------------------------------------------------------------------

    def add(self, node: Node, now: float) -> AddResult:
        """Add or refresh ``node``, splitting full buckets that own a registered id."""
        id_int = node.id_int
        bucket = self._buckets[bisect.bisect_right(self._starts, id_int) - 1]
        while (
            id_int not in bucket.nodes
            and len(bucket.nodes) >= bucket.max_size
            and self._wants_split(bucket)
        ):
            self.split(bucket)
            bucket = self._buckets[bisect.bisect_right(self._starts, id_int) - 1]
        result, evicted = bucket._add(node, now)
        if evicted is not None:
            self._by_id.pop(evicted.id_int, None)
        if result is not AddResult.CACHED:
            self._by_id[id_int] = bucket.nodes[id_int]
        return result

    def heard(self, id: bytes, ip: str, port: int, now: float, responded: bool = False) -> None:
        """The node ``id`` at ``ip:port`` queried us (or, ``responded``, answered us):
        the same as ``add(Node(id, ip, port, last_query=now))`` (or
        ``last_response=now``), without building a Node when it is known at that address.
        """
        id_int = int.from_bytes(id, "big")
        known = self._by_id.get(id_int)
        if known is None or known.port != port or known.ip != ip:
            if responded:
                self.add(Node(id, ip, port, last_response=now), now)
            else:
                self.add(Node(id, ip, port, last_query=now), now)
            return
        if responded:
            if now >= known.last_response and now:
                known.last_response = now
                if known._failed:
                    known.failed = 0
        elif now > known.last_query:
            known.last_query = now
        self._buckets[bisect.bisect_right(self._starts, id_int) - 1].last_changed = now

    def remove(self, node: Node) -> None:
        """Drop ``node`` (it went bad); a replacement takes its place."""
        bucket = self.find(node.id_int)
        if node.id_int in bucket.nodes:
            bucket.remove(node)
            self._by_id.pop(node.id_int, None)
            for repl in bucket.nodes.values():
                self._by_id[repl.id_int] = repl

    def split(self, bucket: Bucket) -> None:
        index = self._buckets.index(bucket)
        low, high = bucket.split()
        self._buckets[index : index + 1] = [low, high]
        self._starts[index : index + 1] = [low.start, high.start]
        self.splits += 1

    def merge(self) -> int:
        """Fold sibling leaves that own no registered id; return how many merges."""
        registered = list(self._registered())
        done = 0
        changed = True
        while changed:
            changed = False
            for i in range(len(self._buckets) - 1):
                a, b = self._buckets[i], self._buckets[i + 1]
                if a.id_length != b.id_length or a.id_length == 0 or a.id >> 1 != b.id >> 1:
                    continue
                if any(a.own(r) or b.own(r) for r in registered):
                    continue
                parent = a.merge(b)
                for node in [*a.nodes.values(), *b.nodes.values()]:
                    if node.id_int not in parent.nodes:
                        self._by_id.pop(node.id_int, None)
                self._buckets[i : i + 2] = [parent]
                self._starts[i : i + 2] = [parent.start]
                done += 1
                changed = True
                break
        self.need_merge = False
        self.merges += done
        return done

    def empty(self) -> None:
        """Forget every node and bucket (registrations stay)."""
        self._buckets = [Bucket(0, 0, self.max_size, self._epoch)]
        self._starts = [0]
        self._by_id.clear()

    def add_many(self, nodes: Iterable[Node], now: float) -> None:
        for node in nodes:
            self.add(node, now)


def _first(item: tuple[int, Node]) -> int:
    return item[0]
