"""The original datahub's names (pro711/smartget ``datahub.py``, seed 000) on SmartGet.

A program written against the original changes only its import line::

    from smartget.hub.datahub import SmartgetDataHub, SmartgetDataHubDaemon, SmartgetNode

    dh = SmartgetDataHub()
    node = dh.make_node("10.0.0.5", 1234)
    dh.add_node(node)                    # 1, or 0 (and a warning) if the id is taken
    dh.set_node_status(node.node_id, 2)  # the node id, or 0 if there is no such node
    SmartgetDataHubDaemon(20110).run()   # serves the text protocol until Ctrl-C

Return values and warnings are the original's (``add_node`` gives 1 or 0,
``set_node_status`` the id or 0, misses are written to stderr). The differences, and
why: nodes are SmartGet's registry nodes (also a zone, ports and URLs; no
``n_connections``, which the original never used); statuses are checked (-1 to
1,000,000), where the original stored anything; ``get_nodes`` returns a copy; the
daemon is SmartGet's hub (text protocol only, state in a temporary directory unless
``data_dir`` is given), not the original's one-thread accept loop, so its ``listen``
and ``process_*`` methods are not offered.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from smartget.errors import NodeExistsError, NodeNotFoundError
from smartget.hub.registry import Node, Registry

__all__ = ["AbstractDataHub", "SmartgetDataHub", "SmartgetDataHubDaemon", "SmartgetNode"]

#: ``SmartgetNode(node_id, addr, port, name='')``, status 0, as in the original.
SmartgetNode = Node


def _warn(message: str) -> None:
    sys.stderr.write(message)


class AbstractDataHub:
    """Abstract data hub class for Smartget networks (the original's base class)."""

    def make_node(self, addr: str, port: int, name: str = "") -> Node | None:
        return None


class SmartgetDataHub(AbstractDataHub):
    """The original's in-memory data hub, over SmartGet's :class:`Registry`."""

    def __init__(self) -> None:
        self.registry = Registry()

    @property
    def nodes(self) -> dict[int, Node]:
        return self.registry.get_nodes()

    @property
    def max_node_id(self) -> int:
        return self.registry.max_node_id

    def make_node(self, addr: str, port: int, name: str = "") -> Node:
        return self.registry.make_node(addr, port, name)

    def add_node(self, node: Node) -> int:
        try:
            self.registry.add_node(node, time.monotonic())
        except NodeExistsError:
            _warn(f"Warning: Attempt to add node {node.node_id} which already exists!")
            return 0
        return 1

    def rm_node(self, node_id: int) -> None:
        try:
            self.registry.rm_node(node_id)
        except NodeNotFoundError:
            _warn(f"Warning: Attempt to remove node {node_id} which does not exist!")

    def get_nodes(self) -> dict[int, Node]:
        return self.registry.get_nodes()

    def get_node_by_id(self, node_id: int) -> Node | None:
        return self.registry.get_node_by_id(node_id)

    def get_node_ids_by_status(self, status: int) -> list[int]:
        return self.registry.get_node_ids_by_status(status)

    def get_available_node_ids(self) -> list[int]:
        return self.registry.get_available_node_ids()

    def get_node_ids_by_addr(self, addr: str) -> list[int]:
        return self.registry.get_node_ids_by_addr(addr)

    def get_node_ids_by_addr_port(self, addr: str, port: int) -> list[int]:
        return self.registry.get_node_ids_by_addr_port(addr, port)

    def get_idle_node_ids(self) -> list[int]:
        return self.registry.get_idle_node_ids()

    def get_n_idle_nodes(self) -> int:
        return self.registry.get_n_idle_nodes()

    def get_node_status(self, node_id: int) -> int:
        return self.registry.get_node_status(node_id)

    def set_node_status(self, node_id: int, status: int) -> int:
        try:
            self.registry.set_node_status(node_id, status, time.monotonic())
        except NodeNotFoundError:
            _warn(f"Warning: Attempt to modify node {node_id} which does not exist!")
            return 0
        return node_id

    def decrease_node_status(self, node_id: int, n: int = 1) -> int:
        try:
            self.registry.decrease_node_status(node_id, n)
        except NodeNotFoundError:
            _warn(f"Warning: Attempt to modify node {node_id} which does not exist!")
            return 0
        return node_id


class SmartgetDataHubDaemon:
    """The original's daemon: ``SmartgetDataHubDaemon(port).run()`` serves until Ctrl-C."""

    def __init__(self, port: int, data_dir: Path | None = None) -> None:
        self.dh = SmartgetDataHub()
        self.HOST = ""
        self.PORT = port
        self.data_dir = data_dir

    def run(self) -> None:
        """Start the data hub daemon; returns after SIGINT or SIGTERM."""
        if self.data_dir is not None:
            asyncio.run(self._serve(self.data_dir))
            return
        with tempfile.TemporaryDirectory(prefix="smartget-datahub-") as tmp:
            asyncio.run(self._serve(Path(tmp)))

    async def _serve(self, data_dir: Path) -> None:
        from smartget.hub.app import HubSettings, running
        from smartget.lifecycle import on_stop_signals

        settings = HubSettings(
            data_dir=data_dir, listen=(self.HOST or "0.0.0.0", self.PORT), http=None
        )
        async with running(settings) as hub:
            self.dh.registry = hub.registry  # dh shows the live registry
            on_stop_signals(lambda _: hub.stop())
            await hub.wait_stopped()
