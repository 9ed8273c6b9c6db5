"""The hub's node registry: who is in the fleet and how much each node can take.

Theory of operation
-------------------
Pure logic: no I/O, no clock. Every call that depends on time takes ``now`` (seconds on
any monotonic clock). The seed's datahub (``SmartgetDataHub`` in seed 000) is the API;
its method names are kept, and what the original did with a pass over every node is
done here with indexes, so that handing out nodes costs O(n handed out + distinct
statuses), not O(fleet):

* ``_by_status[s]`` holds every node of status ``s`` in insertion order; a node whose
  status changes goes to the *end* of its new bucket. Handing out takes from the front
  of the highest bucket and lowers the node by one, so nodes with the same free
  capacity take turns (ties rotate).
* ``_free`` is the sorted list of statuses > 0 that have a non-empty bucket, so the
  highest is found without scanning; ``_zones[zone]`` repeats both for zone preference.
* ``_alive`` and ``_zombies`` are ordered by last heartbeat (``setstatus``), so
  :meth:`expire` looks only at nodes that are actually due.

Statuses (seed 000, ``SmartgetNode``): ``0`` not available, ``N > 0`` can accept N more
connections, ``-1`` zombie. Node ids start at 1 (0 is the hub) and are never reused.

Every change is recorded; :meth:`drain_changes` hands the store what to persist, and
:attr:`Registry.change_count` tells a caller whether its own call changed anything. A
heartbeat that repeats the node's status changes nothing durable: only ``last_seen`` and
the liveness order move, and those are not persisted (every restart counts each node as
just seen), so it needs no commit.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from smartget.errors import (
    ConfigError,
    NodeExistsError,
    NodeNotFoundError,
    NotPermittedError,
    RegistryError,
)

__all__ = [
    "DEFAULT_NODE_TTL",
    "DEFAULT_ZOMBIE_GRACE",
    "HUB_ID",
    "MAX_STATUS",
    "STATUS_NOT_AVAILABLE",
    "STATUS_ZOMBIE",
    "Changes",
    "Node",
    "Registry",
]

HUB_ID = 0
STATUS_ZOMBIE = -1
STATUS_NOT_AVAILABLE = 0
MAX_STATUS = 1_000_000


@dataclass(slots=True)
class Node:
    """One registered node (seed 000's ``SmartgetNode``, plus what the JSON API adds)."""

    node_id: int
    addr: str
    port: int
    name: str = ""
    status: int = STATUS_NOT_AVAILABLE
    zone: str = ""
    bt_port: int = 0
    api_url: str = ""
    files_url: str = ""
    last_seen: float = 0.0

    @property
    def is_zombie(self) -> bool:
        return self.status == STATUS_ZOMBIE

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.node_id,
            "ip": self.addr,
            "port": self.port,
            "name": self.name,
            "status": self.status,
            "zone": self.zone,
            "bt_port": self.bt_port,
            "api_url": self.api_url,
            "files_url": self.files_url,
        }


@dataclass(slots=True)
class Changes:
    """What changed since the last drain: rows to write, ids to delete, the id counter."""

    upserts: list[Node] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    next_id: int = 1

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes)


class _StatusIndex:
    """Nodes bucketed by status, each bucket in arrival order, free statuses sorted."""

    __slots__ = ("buckets", "free")

    def __init__(self) -> None:
        self.buckets: dict[int, dict[int, None]] = {}
        self.free: list[int] = []  # sorted statuses > 0 with a non-empty bucket

    def add(self, node_id: int, status: int) -> None:
        bucket = self.buckets.get(status)
        if bucket is None:
            bucket = self.buckets[status] = {}
            if status > 0:
                bisect.insort(self.free, status)
        bucket[node_id] = None

    def remove(self, node_id: int, status: int) -> None:
        bucket = self.buckets[status]
        del bucket[node_id]
        if not bucket:
            del self.buckets[status]
            if status > 0:
                del self.free[bisect.bisect_left(self.free, status)]

    def move(self, node_id: int, old: int, new: int) -> None:
        """remove + add in one call: a status change is the hub's most frequent write."""
        buckets = self.buckets
        left = buckets[old]
        del left[node_id]
        if not left:
            del buckets[old]
            if old > 0:
                del self.free[bisect.bisect_left(self.free, old)]
        bucket = buckets.get(new)
        if bucket is None:
            bucket = buckets[new] = {}
            if new > 0:
                bisect.insort(self.free, new)
        bucket[node_id] = None

    def most_free_first(self) -> Iterator[int]:
        """Node ids with status > 0, highest status first, arrival order within one."""
        for status in reversed(self.free):
            yield from self.buckets[status]


DEFAULT_NODE_TTL = 60.0  # seconds of silence before a node is a zombie
DEFAULT_ZOMBIE_GRACE = 300.0  # further seconds before a zombie is removed


class Registry:
    """Nodes keyed by (ip, port) with their free capacity, liveness and zone.

    ``node_ttl``: a node silent that long becomes a zombie; ``zombie_grace``: a zombie
    silent that much longer is removed.
    """

    def __init__(
        self, *, node_ttl: float = DEFAULT_NODE_TTL, zombie_grace: float = DEFAULT_ZOMBIE_GRACE
    ) -> None:
        if node_ttl <= 0 or zombie_grace < 0:
            raise ConfigError("node_ttl must be > 0 and zombie_grace >= 0")
        self.node_ttl = node_ttl
        self.zombie_grace = zombie_grace
        self.max_node_id = 0
        self._nodes: dict[int, Node] = {}
        self._by_addr: dict[str, dict[int, None]] = {}
        self._by_addr_port: dict[tuple[str, int], int] = {}
        self._status = _StatusIndex()
        self._zones: dict[str, _StatusIndex] = {}
        self._alive: dict[int, float] = {}  # id -> last heartbeat, oldest first
        self._zombies: dict[int, float] = {}  # id -> since, oldest first
        self._dirty: dict[int, Node | None] = {}
        # Grows with every recorded change: a caller compares it before and after a call
        # to learn whether that call changed anything (has_changes may be true already).
        self.change_count = 0
        self._handed_out = 0

    # -- the seed's API -------------------------------------------------------------

    def make_node(self, addr: str, port: int, name: str = "", **info: Any) -> Node:
        """A new node with the next id. The id is used up even if it is never added."""
        if not 0 < port <= 65535:
            raise RegistryError(f"port must be from 1 to 65535, got {port}")
        self.max_node_id += 1
        return Node(self.max_node_id, addr, port, name, **info)

    def add_node(self, node: Node, now: float) -> int:
        """Register ``node``; raises NodeExistsError if its id or ip+port is taken."""
        if node.node_id in self._nodes or (node.addr, node.port) in self._by_addr_port:
            raise NodeExistsError(f"node {node.addr}:{node.port} already exists")
        if not STATUS_ZOMBIE <= node.status <= MAX_STATUS:
            raise RegistryError(f"status must be from -1 to {MAX_STATUS}, got {node.status}")
        self.max_node_id = max(self.max_node_id, node.node_id)
        self._nodes[node.node_id] = node
        self._by_addr.setdefault(node.addr, {})[node.node_id] = None
        self._by_addr_port[node.addr, node.port] = node.node_id
        self._index(node)
        node.last_seen = now
        if node.is_zombie:
            self._zombies[node.node_id] = now
        else:
            self._alive[node.node_id] = now
        self._dirty[node.node_id] = node
        self.change_count += 1
        return node.node_id

    def register(self, addr: str, port: int, now: float, **info: Any) -> Node:
        """make_node + add_node, checking ip+port first so no id is wasted on a duplicate."""
        if (addr, port) in self._by_addr_port:
            raise NodeExistsError(f"node {addr}:{port} already exists")
        node = self.make_node(addr, port, **info)
        self.add_node(node, now)
        return node

    def rm_node(self, node_id: int) -> Node:
        node = self._get(node_id)
        self._unindex(node)
        del self._nodes[node_id]
        by_addr = self._by_addr[node.addr]
        del by_addr[node_id]
        if not by_addr:
            del self._by_addr[node.addr]
        del self._by_addr_port[node.addr, node.port]
        self._alive.pop(node_id, None)
        self._zombies.pop(node_id, None)
        self._dirty[node_id] = None
        self.change_count += 1
        return node

    def get_nodes(self) -> dict[int, Node]:
        """Every node by id (a copy: changing it does not change the registry)."""
        return dict(self._nodes)

    def get_node_by_id(self, node_id: int) -> Node | None:
        return self._nodes.get(node_id)

    def get_node_ids_by_status(self, status: int) -> list[int]:
        return list(self._status.buckets.get(status, ()))

    def get_available_node_ids(self) -> list[int]:
        """Nodes that can accept connections (status > 0), most free capacity first."""
        return list(self._status.most_free_first())

    def get_node_ids_by_addr(self, addr: str) -> list[int]:
        return list(self._by_addr.get(addr, ()))

    def get_node_ids_by_addr_port(self, addr: str, port: int) -> list[int]:
        node_id = self._by_addr_port.get((addr, port))
        return [] if node_id is None else [node_id]

    def get_idle_node_ids(self) -> list[int]:
        """Live nodes offering no connection right now (status 0), as in the original."""
        return self.get_node_ids_by_status(STATUS_NOT_AVAILABLE)

    def get_n_idle_nodes(self) -> int:
        return len(self._status.buckets.get(STATUS_NOT_AVAILABLE, ()))

    def get_node_status(self, node_id: int) -> int:
        return self._get(node_id).status

    def set_node_status(
        self, node_id: int, status: int, now: float, *, addr: str | None = None
    ) -> Node:
        """The heartbeat: set the free capacity, mark the node alive (a zombie comes back).

        With ``addr``, only a caller at the node's own IP may (NotPermittedError). Only
        a changed status is recorded for the store: the heartbeat's time is liveness,
        which every restart resets anyway (:meth:`restore` counts all as just seen).

        ``-1`` (seed 000: a node declaring itself a zombie, which the original accepted):
        the node is a zombie from now, no longer handed out, and removed after the
        zombie grace unless it sends a status again.
        """
        if not STATUS_NOT_AVAILABLE <= status <= MAX_STATUS:
            if status != STATUS_ZOMBIE:
                raise RegistryError(f"status must be from -1 to {MAX_STATUS}, got {status}")
            return self._declare_zombie(node_id, now, addr)
        node = self._nodes.get(node_id)
        if node is None:
            raise NodeNotFoundError(f"no node has id {node_id}")
        if addr is not None and node.addr != addr:
            raise NotPermittedError(f"node {node_id} belongs to {node.addr}, not to {addr}")
        # Inline, not a helper: this is the hub's most frequent call.
        node.last_seen = now
        alive = self._alive
        if node.status == STATUS_ZOMBIE:  # in _zombies exactly when its status is -1
            self._zombies.pop(node_id, None)
        else:
            alive.pop(node_id, None)
        alive[node_id] = now  # to the end: _alive stays ordered by last heartbeat
        if node.status != status:
            self._change_status(node, status)
        return node

    def _declare_zombie(self, node_id: int, now: float, addr: str | None) -> Node:
        node = self._get(node_id)
        if addr is not None and node.addr != addr:
            raise NotPermittedError(f"node {node_id} belongs to {node.addr}, not to {addr}")
        node.last_seen = now
        if node.status != STATUS_ZOMBIE:
            self._alive.pop(node_id, None)
            self._zombies[node_id] = now  # the grace counts from the declaration
            self._change_status(node, STATUS_ZOMBIE)
        return node

    def decrease_node_status(self, node_id: int, n: int = 1) -> Node:
        """Lower a node's free capacity by n, not below 0 (a zombie stays a zombie)."""
        node = self._get(node_id)
        if n < 0:
            raise RegistryError(f"cannot decrease status by a negative amount ({n})")
        if node.status > 0:
            self._change_status(node, max(0, node.status - n))
        return node

    # -- beyond the seed ------------------------------------------------------------

    def get_node_id(self, addr: str, port: int) -> int:
        """The id of the node at addr:port; NodeNotFoundError if there is none."""
        node_id = self._by_addr_port.get((addr, port))
        if node_id is None:
            raise NodeNotFoundError(f"no node is registered at {addr}:{port}")
        return node_id

    def check_owner(self, node_id: int, addr: str) -> Node:
        """The node, if ``addr`` is its IP; NotPermittedError otherwise."""
        node = self._get(node_id)
        if node.addr != addr:
            raise NotPermittedError(f"node {node_id} belongs to {node.addr}, not to {addr}")
        return node

    def request_nodes(
        self,
        n: int,
        *,
        zone: str | None = None,
        exclude_addr: str | None = None,
        exclude_ids: Iterable[int] = (),
    ) -> list[Node]:
        """Hand out up to ``n`` nodes with status > 0 and lower each one's status by one.

        Most free capacity first, ties in turn; nodes in ``zone`` before the rest; never
        a node at ``exclude_addr`` (the requester's own IP) nor in ``exclude_ids``.
        """
        if n <= 0:
            return []
        skip = set(exclude_ids)
        if exclude_addr is not None:
            skip.update(self._by_addr.get(exclude_addr, ()))
        chosen: list[int] = []
        taken: set[int] = set()
        sources = [self._status]
        if zone is not None and zone in self._zones:
            sources.insert(0, self._zones[zone])
        for index in sources:
            for node_id in index.most_free_first():
                if len(chosen) == n:
                    break
                if node_id in skip or node_id in taken:
                    continue
                chosen.append(node_id)
                taken.add(node_id)
        nodes = [self._nodes[node_id] for node_id in chosen]
        for node in nodes:
            self._change_status(node, node.status - 1)
        self._handed_out += len(nodes)
        return nodes

    def zone_of_addr(self, addr: str) -> str | None:
        """The zone of a node registered at addr, if any has one."""
        for node_id in self._by_addr.get(addr, ()):
            if zone := self._nodes[node_id].zone:
                return zone
        return None

    def free_capacity_of_addr(self, addr: str) -> int:
        """The most free connections any node at ``addr`` offers (0 if none)."""
        return max((self._nodes[i].status for i in self._by_addr.get(addr, ())), default=0)

    def update_info(self, node_id: int, **info: object) -> Node:
        """Change a node's descriptive fields (zone, name, urls, bt_port)."""
        node = self._get(node_id)
        allowed = {"name", "zone", "bt_port", "api_url", "files_url"}
        if unknown := set(info) - allowed:
            raise RegistryError(f"cannot update {sorted(unknown)}; allowed: {sorted(allowed)}")
        self._unindex(node)
        for key, value in info.items():
            setattr(node, key, value)
        self._index(node)
        self._dirty[node_id] = node
        self.change_count += 1
        return node

    def expire(self, now: float) -> tuple[list[Node], list[Node]]:
        """Turn nodes silent for node_ttl into zombies; remove zombies past the grace.

        Returns (new zombies, removed nodes). Costs O(nodes due), not O(fleet).
        """
        zombies: list[Node] = []
        removed: list[Node] = []
        deadline = now - self.node_ttl
        while self._alive:
            node_id, seen = next(iter(self._alive.items()))
            if seen > deadline:
                break
            del self._alive[node_id]
            node = self._nodes[node_id]
            self._change_status(node, STATUS_ZOMBIE)
            self._zombies[node_id] = now
            zombies.append(node)
        deadline = now - self.zombie_grace
        while self._zombies:
            node_id, since = next(iter(self._zombies.items()))
            if since > deadline:
                break
            removed.append(self.rm_node(node_id))
        return zombies, removed

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to do, or None if never."""
        times = []
        if self._alive:
            times.append(next(iter(self._alive.values())) + self.node_ttl)
        if self._zombies:
            times.append(next(iter(self._zombies.values())) + self.zombie_grace)
        return min(times) if times else None

    @property
    def has_changes(self) -> bool:
        return bool(self._dirty)

    def drain_changes(self) -> Changes:
        """Everything changed since the last call, for the store; resets the record."""
        changes = Changes(next_id=self.max_node_id + 1)
        for node_id, node in self._dirty.items():
            if node is None:
                changes.deletes.append(node_id)
            else:
                changes.upserts.append(node)
        self._dirty = {}
        return changes

    def restore(self, nodes: Iterable[Node], next_id: int, now: float) -> None:
        """Load persisted nodes (all count as just seen) and the id counter."""
        for node in nodes:
            self.add_node(node, now)
        self.max_node_id = max(self.max_node_id, next_id - 1)
        self._dirty = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def statistics(self) -> dict[str, int]:
        free = self._status.free
        return {
            "nodes": len(self._nodes),
            "available": sum(len(self._status.buckets[s]) for s in free),
            "idle": self.get_n_idle_nodes(),
            "zombies": len(self._zombies),
            "free_slots": sum(s * len(self._status.buckets[s]) for s in free),
            "handed_out": self._handed_out,
            "max_node_id": self.max_node_id,
        }

    # -- internals ----------------------------------------------------------------

    def _get(self, node_id: int) -> Node:
        node = self._nodes.get(node_id)
        if node is None:
            raise NodeNotFoundError(f"no node has id {node_id}")
        return node

    def _index(self, node: Node) -> None:
        self._status.add(node.node_id, node.status)
        if node.zone:
            self._zones.setdefault(node.zone, _StatusIndex()).add(node.node_id, node.status)

    def _unindex(self, node: Node) -> None:
        self._status.remove(node.node_id, node.status)
        if node.zone:
            zone = self._zones[node.zone]
            zone.remove(node.node_id, node.status)
            if not zone.buckets:
                del self._zones[node.zone]

    def _change_status(self, node: Node, status: int) -> None:
        # The node stays in its zone, so the zone's index never empties here.
        self._status.move(node.node_id, node.status, status)
        if node.zone:
            self._zones[node.zone].move(node.node_id, node.status, status)
        node.status = status
        self._dirty[node.node_id] = node
        self.change_count += 1
