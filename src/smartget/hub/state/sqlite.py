"""The embedded engine: the in-memory registry, durable in the hub's SQLite store.

A thin adapter: every call is the sans-IO command core's, then the hub's ``save``
(which resolves once the store has committed), exactly what the JSON API's routes did
before the interface existed. Nothing here changes the text protocol's hot path, which
runs the core synchronously and commits per read (``textserver.py``).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from smartget.hub.commands import Caller, FromOperator, HubCommands
from smartget.hub.registry import Node

__all__ = ["SqliteState"]


class SqliteState:
    """:class:`~smartget.hub.state.api.FleetState` over one hub's registry and store."""

    engine = "sqlite"

    def __init__(
        self,
        commands: HubCommands,
        save: Callable[[], Awaitable[None]],
        now: Callable[[], float],
        describe: Callable[[], dict[str, Any]],
    ) -> None:
        self.commands = commands
        self.registry = commands.registry
        self._save = save
        self._now = now
        self._describe = describe

    async def register(
        self, caller: Caller, port: int, *, ip: str | None = None, **info: Any
    ) -> Node:
        node = self.commands.register(caller, port, self._now(), ip=ip, **info)
        await self._save()
        return node

    async def deregister(self, caller: Caller, node_id: int) -> Node:
        node = self.commands.deregister(caller, node_id)
        await self._save()
        return node

    async def request_nodes(
        self, caller: Caller, n: int, *, zone: str | None = None, exclude: Iterable[int] = ()
    ) -> list[Node]:
        nodes = self.commands.request_nodes(caller, n, zone=zone, exclude=exclude)
        await self._save()
        return nodes

    async def set_status(self, caller: Caller, node_id: int, status: int) -> Node:
        node = self.commands.set_status(caller, node_id, status, self._now())
        await self._save()
        return node

    async def update_info(self, node_id: int, **info: object) -> Node:
        node = self.commands.update_info(FromOperator(), node_id, **info)
        await self._save()
        return node

    async def get_node(self, node_id: int) -> Node | None:
        return self.registry.get_node_by_id(node_id)

    async def find_node(self, addr: str, port: int) -> int | None:
        ids = self.registry.get_node_ids_by_addr_port(addr, port)
        return ids[0] if ids else None

    async def list_nodes(
        self,
        *,
        zone: str | None = None,
        status: int | None = None,
        available: bool | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Node]:
        registry = self.registry
        if status is not None:
            ids = registry.get_node_ids_by_status(status)
        elif available:
            ids = registry.get_available_node_ids()
        else:
            ids = list(registry.get_nodes())
        nodes = (registry.get_node_by_id(i) for i in ids)
        picked = [
            n
            for n in nodes
            if n is not None
            and (zone is None or n.zone == zone)
            and (available is None or (n.status > 0) == available)
        ]
        return picked[offset : offset + limit]

    async def statistics(self) -> dict[str, int]:
        return self.registry.statistics()

    async def hubs(self) -> list[dict[str, Any]]:
        return [self._describe()]


def hub_identity() -> str:
    """A name for this hub process among its peers: host, pid and a random tail."""
    return f"{platform.node()}:{os.getpid()}:{os.urandom(2).hex()}"
