"""A consumer slower than its senders slows the links feeding it; nothing is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from smartget.mesh import Datapack, Node
from smartget.mesh import apps as mesh_apps
from smartget.mesh import link as mesh_link
from tests.helpers import wait_until

from .conftest import Probe, fast


@pytest.mark.asyncio
async def test_slow_app_pauses_the_chain_without_loss(
    pki: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mesh_apps, "QUEUE_HIGH", 200)
    monkeypatch.setattr(mesh_link, "OUTBOX_HIGH", 200)
    probes = {name: Probe() for name in "pqr"}
    nodes: dict[str, Node] = {}
    try:
        previous = None
        for i, name in enumerate("pqr"):
            settings = fast(
                pki(name),
                tmp_path / name,
                f"127.0.2.{80 + i}",
                peers=[previous] if previous else [],
                apps=[],
                extra_apps={"probe": probes[name]},
            )
            nodes[name] = Node(settings)
            await nodes[name].start()
            previous = nodes[name].address
        p, q, r = nodes["p"], nodes["q"], nodes["r"]
        await wait_until(lambda: p.router.next_hop("r") == "q", 20)
        await wait_until(lambda: probes["p"].ctx is not None, 10)
        total = 20_000
        body = b"x" * 512
        ctx = probes["p"].ctx
        assert ctx is not None
        for i in range(total):
            ctx.send(Datapack("post", "probe", {"to": "r", "n": str(i)}, body))
        # r's probe reads nothing yet: r stops reading q, q's outbox to r fills, q stops
        # reading p. q holds a bounded number of packets, not all of them.
        await wait_until(lambda: r.links["q"].stats["paused"] > 0, 20)
        await wait_until(lambda: q.links["p"].stats["paused"] > 0, 20)
        assert q.links["r"].queued < total // 2
        assert probes["r"].ctx is not None
        got = [int((await probes["r"].next()).head["n"]) for _ in range(total)]
        assert got == list(range(total))  # all of them, in order
    finally:
        for node in nodes.values():
            await node.aclose()
