"""Draining nodes: an operator takes a node out of rotation, and it stays out (sans-IO).

A node's status is its free capacity, and its heartbeat (``setstatus``, every 20 s by
default) sets it again. So "drain" is not one ``setstatus 0``: the hub remembers the
drained nodes and holds each at status 0 whatever its heartbeats say, while still
counting them as heartbeats (a drained node is alive, not a zombie). The last status a
drained node asked for is kept, and "bring it back" restores it at once.

:class:`DrainingCommands` is the hub's command core (:class:`HubCommands`) with that one
rule added to ``set_status``; every front end (text protocol, JSON API) goes through it.
The drained set is saved by the console (DATA_DIR/console-drained.json) so that a
restart keeps it; :meth:`DrainList.dump` and :meth:`DrainList.load` are its format.

On Redis (``--state redis://``) the same rule is the fleet's, in its functions
(``hub/state/functions.py``, ``smartget_drains1``: the ``P drained`` hash, at most
``MAX_DRAINED`` entries), and the console's :class:`DrainList` is a copy of that set
(:meth:`DrainList.replace`) for its page.
"""

from __future__ import annotations

import json
from typing import Any

from smartget.errors import NodeNotFoundError, RegistryError
from smartget.hub.collector import Collector
from smartget.hub.commands import Caller, CommandRules, HubCommands
from smartget.hub.registry import STATUS_NOT_AVAILABLE, STATUS_ZOMBIE, Node, Registry
from smartget.hub.tracker import Tracker

__all__ = ["DrainList", "DrainingCommands"]

MAX_DRAINED = 100_000


class DrainList:
    """Drained node ids, each with the status its heartbeats last asked for."""

    def __init__(self, max_drained: int = MAX_DRAINED) -> None:
        self.max_drained = max_drained
        self._wanted: dict[int, int] = {}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._wanted

    def __len__(self) -> int:
        return len(self._wanted)

    def ids(self) -> list[int]:
        return sorted(self._wanted)

    def add(self, node_id: int, wanted: int) -> None:
        if node_id not in self._wanted and len(self._wanted) >= self.max_drained:
            raise RegistryError(f"{self.max_drained} nodes are drained already")
        self._wanted[node_id] = max(wanted, self._wanted.get(node_id, 0))

    def wanted(self, node_id: int) -> int | None:
        return self._wanted.get(node_id)

    def ask(self, node_id: int, status: int) -> None:
        """A drained node's heartbeat: remember what it asked for."""
        self._wanted[node_id] = status

    def remove(self, node_id: int) -> int | None:
        """Undrain; the status its last heartbeat asked for (None if it was not drained)."""
        return self._wanted.pop(node_id, None)

    def replace(self, wanted: dict[int, int]) -> None:
        """Hold exactly ``wanted`` (a copy of the fleet's set, on Redis)."""
        if len(wanted) > self.max_drained:
            raise RegistryError(f"{len(wanted)} drained nodes: more than {self.max_drained}")
        self._wanted = dict(wanted)

    def prune(self, known: set[int]) -> None:
        """Forget nodes the registry no longer has (removed zombies, deregistered)."""
        self._wanted = {k: v for k, v in self._wanted.items() if k in known}

    def dump(self) -> bytes:
        return json.dumps({"drained": self._wanted}, sort_keys=True).encode()

    def load(self, data: bytes, known: set[int] | None = None) -> None:
        """Restore from :meth:`dump`; ids not ``known`` (if given) are dropped."""
        try:
            parsed: Any = json.loads(data)
            items = parsed["drained"].items()
            restored = {int(k): int(v) for k, v in items}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RegistryError(f"the saved drain list is unreadable: {exc}") from None
        self._wanted = {k: v for k, v in restored.items() if known is None or k in known}


class DrainingCommands(HubCommands):
    """The hub's commands, with drained nodes held at status 0."""

    def __init__(
        self,
        registry: Registry,
        tracker: Tracker,
        collector: Collector,
        rules: CommandRules | None = None,
        drains: DrainList | None = None,
    ) -> None:
        super().__init__(registry, tracker, collector, rules)
        self.drains = drains if drains is not None else DrainList()

    def set_status(self, caller: Caller, node_id: int, status: int, now: float) -> Node:
        if node_id in self.drains and status != STATUS_ZOMBIE:
            node = super().set_status(caller, node_id, STATUS_NOT_AVAILABLE, now)
            self.drains.ask(node_id, status)  # after the check of who may set it
            return node
        return super().set_status(caller, node_id, status, now)

    def deregister(self, caller: Caller, node_id: int) -> Node:
        node = super().deregister(caller, node_id)
        self.drains.remove(node_id)
        return node

    def drain(self, node_id: int, now: float) -> Node:
        """Take a node out of rotation (status 0) until :meth:`undrain`."""
        node = self._node(node_id)
        if node.is_zombie:
            raise RegistryError(f"node {node_id} is a zombie: deregister it instead")
        self.drains.add(node_id, node.status)
        return self.registry.set_node_status(node_id, STATUS_NOT_AVAILABLE, now)

    def undrain(self, node_id: int, now: float) -> Node:
        """Back in rotation with the status its last heartbeat asked for."""
        node = self._node(node_id)
        wanted = self.drains.remove(node_id)
        if wanted is None or node.is_zombie:  # a silent node stays a zombie
            return node
        return self.registry.set_node_status(node_id, wanted, now)

    def _node(self, node_id: int) -> Node:
        node = self.registry.get_node_by_id(node_id)
        if node is None:
            raise NodeNotFoundError(f"no node has id {node_id}")
        return node
