"""Issue 6: the swarm under upload caps, and the origin's upload cap."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest

from smartget.demo import local_fleet, make_file
from smartget.httpserver import EmbeddedServer
from smartget.origin import create_app
from smartget.push import push, render

MiB = 1 << 20


# -- the origin's cap ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_origin_upload_limit_holds_for_all_requests_together(tmp_path: Path) -> None:
    make_file(tmp_path / "f.bin", 512 * 1024)
    sock = socket.socket()
    sock.bind(("127.0.0.199", 0))
    app = create_app(tmp_path, upload_limit=2 * MiB)
    server = EmbeddedServer(app, sock, name="origin")
    await server.start()
    url = f"http://127.0.0.199:{sock.getsockname()[1]}/f.bin"
    try:
        async with httpx.AsyncClient(timeout=20) as client:
            started = time.monotonic()
            replies = await asyncio.gather(client.get(url), client.get(url))
            elapsed = time.monotonic() - started
            stats = (await client.get(url.replace("f.bin", "__origin__/stats"))).json()
    finally:
        await server.stop()
    assert all(r.status_code == 200 and len(r.content) == 512 * 1024 for r in replies)
    # 1 MiB at 2 MiB/s, less the burst (1/20 s of credit): about 0.45 s.
    assert 0.4 < elapsed < 10
    assert stats["bytes_sent"] == 1024 * 1024


# -- a capped push --------------------------------------------------------------------------


@pytest.mark.slow
def test_capped_push_seed_sends_the_file_about_once(tmp_path: Path) -> None:
    """Upload caps on every node: the peers trade among themselves (issue 6).

    Before the swarm tuning the seed sent each byte about twice (peers had a quarter
    of the file on order from the seed, and contiguous piece runs made them fetch the
    same pieces), at a third of the possible speed.
    """
    size = 8 * MiB
    make_file(tmp_path / "origin" / "s.bin", size)
    with local_fleet(tmp_path, nodes=4, ip_base=185, upload_limit=2 * MiB) as fleet:
        result = asyncio.run(
            push(
                fleet.file_url("s.bin"),
                hub_url=fleet.hub_url,
                token=fleet.token,
                give_up_after=90,
                seed_node=fleet.node_ips[0],
            )
        )
        assert result.ok, render(result)
        status = httpx.get(
            f"{result.outcomes[0].node.api_url}/status",
            headers={"Authorization": f"Bearer {fleet.token}"},
            timeout=10,
        ).json()
        bound = result.lower_bound(fleet.caps())
    seed_up = next(t["uptotal"] for t in status["torrents"] if t["sha1"] == result.sha1)
    assert seed_up <= 1.5 * size, f"the seed sent {seed_up / size:.2f} x the file"
    assert result.origin_bytes is not None
    assert result.origin_bytes <= 1.1 * size
    assert bound == pytest.approx(4.0)  # F / u_s: 8 MiB at 2 MiB/s
    assert result.makespan < 3 * bound, render(result, fleet.caps())
