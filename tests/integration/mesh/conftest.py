"""Fixtures for mesh tests on real TLS sockets in 127.0.2.0/24 (this service's range)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from smartget.mesh import App, AppContext, MeshSettings, Node, Received
from smartget.mesh.ca import init_ca, issue_node
from tests.helpers import wait_until

LINE = ["a", "b", "c", "d", "e"]


class Probe(App):
    """An app that keeps what it receives, for tests to await."""

    name = "probe"
    verify_origin = True

    def __init__(self) -> None:
        self.ctx: AppContext | None = None
        self.ready = asyncio.Event()

    async def run(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.ready.set()
        await asyncio.Event().wait()

    async def next(self, within: float = 10.0) -> Received:
        assert self.ctx is not None
        async with asyncio.timeout(within):
            return await self.ctx.receive()

    def empty(self) -> bool:
        return self.ctx is None or self.ctx.queue.empty()


@pytest.fixture
def pki(tmp_path: Path) -> Callable[[str], Path]:
    """issue(node_id) -> NODE_DIR, all from one CA in tmp_path/ca."""
    init_ca(tmp_path / "ca")

    def issue(node_id: str, ca: str = "ca") -> Path:
        if not (tmp_path / ca / "ca.key").exists():
            init_ca(tmp_path / ca)
        return issue_node(tmp_path / ca, node_id, tmp_path / "nodes" / ca / node_id).parent

    return issue


def fast(tls_dir: Path, data_dir: Path, host: str, **kw: Any) -> MeshSettings:
    """Settings with test-speed timers on an address of our range."""
    kw.setdefault("apps", ["logger", "shell", "update"])
    return MeshSettings(
        tls_dir=tls_dir,
        data_dir=data_dir,
        listen=(host, 0),
        heartbeat=0.2,
        retry_interval=0.1,
        retry_count=200,
        dial_learned=False,
        connect_timeout=5.0,
        **kw,
    )


@pytest_asyncio.fixture
async def line(
    pki: Callable[[str], Path], tmp_path: Path
) -> AsyncIterator[tuple[dict[str, Node], dict[str, Probe]]]:
    """Nodes a-b-c-d-e in a line on 127.0.2.1-5; each dials only its predecessor."""
    nodes: dict[str, Node] = {}
    probes: dict[str, Probe] = {}
    try:
        previous: tuple[str, int] | None = None
        for i, name in enumerate(LINE, 1):
            probes[name] = Probe()
            settings = fast(
                pki(name),
                tmp_path / "data" / name,
                f"127.0.2.{i}",
                peers=[previous] if previous else [],
                extra_apps={"probe": probes[name]},
                allow={"shell": ["a"], "update": ["a"]} if name == "e" else {},
            )
            node = Node(settings)
            nodes[name] = node
            await node.start()
            assert node.address is not None
            previous = node.address
        async with asyncio.timeout(20):
            for name in LINE:
                await probes[name].ready.wait()
        # Converged: a has a route to e, and e to a.
        await wait_until(
            lambda: bool(nodes["a"].router.next_hop("e") and nodes["e"].router.next_hop("a")), 20
        )
        yield nodes, probes
    finally:
        for node in nodes.values():
            await node.aclose()
