"""Two nodes that dial each other at once end with one link and lose no packet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from smartget.mesh import Datapack, Node
from smartget.net import free_port
from tests.helpers import wait_until

from .conftest import Probe, fast


@pytest.mark.asyncio
@pytest.mark.parametrize("round_", range(3))
async def test_simultaneous_dials_keep_every_packet(
    pki: Callable[[str], Path], tmp_path: Path, round_: int
) -> None:
    hosts = {"x": "127.0.2.60", "y": "127.0.2.61"}
    ports = {name: free_port(host) for name, host in hosts.items()}
    probes = {"x": Probe(), "y": Probe()}
    nodes = {}
    for name, other in (("x", "y"), ("y", "x")):
        settings = fast(
            pki(name),
            tmp_path / name,
            hosts[name],
            peers=[(hosts[other], ports[other])],
            extra_apps={"probe": probes[name]},
        )
        settings.listen = (hosts[name], ports[name])
        nodes[name] = Node(settings)
    try:
        # Both start (and dial each other) at once: the duplicate-link race.
        await asyncio.gather(nodes["x"].start(), nodes["y"].start())
        await probes["x"].ready.wait()
        await probes["y"].ready.wait()

        async def stream(src: str, dst: str) -> None:
            # Start on whichever link comes up first: it may be the one retired.
            await wait_until(lambda: dst in nodes[src].links, 10)
            ctx = probes[src].ctx
            assert ctx is not None
            for i in range(300):
                ctx.send(Datapack("post", "probe", {"to": dst}, b"%d" % i))
                if i % 10 == 0:
                    await asyncio.sleep(0)  # spread the sends over the handshake

        await asyncio.gather(stream("x", "y"), stream("y", "x"))
        for name in ("x", "y"):
            got = [int((await probes[name].next()).body) for _ in range(300)]
            assert sorted(got) == list(range(300))
        # One link per side in the end, the same one.
        await wait_until(lambda: len([c for c in nodes["x"].connections if c.up]) == 1, 15)
    finally:
        for node in nodes.values():
            await node.aclose()
