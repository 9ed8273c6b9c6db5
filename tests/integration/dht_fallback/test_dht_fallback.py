"""The fleet without its hub (issue 14): real processes on 127.14.x.x.

The hub runs the fleet's DHT; every node's libtorrent joins it. With the hub killed
(kill -9) a push under way completes from peers, and a node asked afterwards to
download the torrent from another node's file server finds the swarm through the DHT
and fetches it from peers, not from the origin.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.helpers import wait_until
from tests.lab.fleet import MiB, ProcFleet, PushRun, make_file
from tests.lab.lab import Host

pytestmark = pytest.mark.slow

BASE = f"127.14.{os.getpid() % 200 + 20}"  # ports are fixed per address: one range per run
SIZE = 8 * MiB


@pytest_asyncio.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[ProcFleet]:
    nodes = [Host(f"n{i}", f"{BASE}.{11 + i}") for i in range(4)]
    fleet = ProcFleet(
        tmp_path, origin=Host("origin", f"{BASE}.1"), hub=Host("hub", f"{BASE}.2"), nodes=nodes
    )
    try:
        yield fleet
    finally:
        await fleet.close()


@pytest.mark.asyncio
async def test_hub_killed_mid_push_then_a_new_download_finds_peers_by_dht(
    fleet: ProcFleet,
) -> None:
    expected = make_file(fleet.workdir / "origin" / "f.bin", SIZE)
    fleet.start_origin()
    fleet.start_hub()
    await fleet.wait_hub()
    for node in fleet.nodes:  # upload caps, so the push is still under way at 30 %
        fleet.start_node(node, "--upload-limit", "2MiB/s")
    await fleet.wait_origin()
    await fleet.wait_nodes(fleet.nodes)
    await fleet.wait_registered(len(fleet.nodes))
    await fleet.wait_dht(fleet.nodes, at_least=1, within=30)
    before = await fleet.origin_sent()
    killed_at: list[float] = []

    async def kill_hub_at_30(run: PushRun, elapsed: float) -> None:
        if not killed_at and any(p.percent >= 30 for p in run.nodes[1:]):
            fleet.kill("hub")
            killed_at.append(max(p.percent for p in run.nodes[1:]))

    seed, a, b, late = fleet.nodes
    run = await fleet.push("f.bin", [a, b], seed=seed, within=120, during=kill_hub_at_30)
    assert killed_at, "the hub was not killed"
    assert killed_at[0] < 90, "the hub was not killed mid-push"
    assert all(p.done_at is not None for p in run.nodes), run.nodes
    fleet.verify(run, expected)

    # The hub is gone: a node downloads the torrent from another node's file server.
    torrent_url = run.torrent_url.replace(seed.files_url, a.files_url)
    asked = time.monotonic()
    await fleet.task(late, "download", {"torrentfileurl": torrent_url})

    async def has_peers() -> bool:
        entry = await fleet.torrent_status(late, run.sha1)
        return entry is not None and entry["numpeers"] > 0

    await wait_until(has_peers, 30, "the late node finding peers through the DHT")
    found_in = time.monotonic() - asked

    async def complete() -> bool:
        entry = await fleet.torrent_status(late, run.sha1)
        return entry is not None and bool(entry["complete"])

    await wait_until(complete, 60, "the late node complete")
    fleet.verify(run, expected, [late])
    origin = await fleet.origin_sent() - before
    assert origin <= 1.1 * SIZE, f"origin sent {origin / SIZE:.2f} x the file"
    assert found_in < 30
