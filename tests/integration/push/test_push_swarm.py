"""Issue 6: the swarm under upload caps, and the origin's upload cap."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.demo import local_fleet, make_file
from smartget.httpserver import EmbeddedServer
from smartget.node.engine import stripe_priorities
from smartget.origin import TokenBucket, create_app
from smartget.push import push, render

MiB = 1 << 20


# -- stripes (pure) ---------------------------------------------------------------------


@given(
    members=st.lists(st.sampled_from([f"10.0.0.{i}" for i in range(20)]), min_size=2, unique=True),
    num_pieces=st.integers(min_value=0, max_value=300),
)
def test_stripes_give_every_piece_to_exactly_one_member(
    members: list[str], num_pieces: int
) -> None:
    # Every member computes its own priorities from the same set, in any order.
    lists = [stripe_priorities(num_pieces, own, list(reversed(members))) for own in members]
    assert all(p is not None and len(p) == num_pieces for p in lists)
    for index in range(num_pieces):
        favoured = [p[index] for p in lists if p is not None].count(5)
        assert favoured == 1
    assert {v for p in lists if p is not None for v in p} <= {4, 5}


def test_no_stripes_without_peers_or_membership() -> None:
    assert stripe_priorities(10, "10.0.0.1", ["10.0.0.1"]) is None
    assert stripe_priorities(10, "10.0.0.9", ["10.0.0.1", "10.0.0.2"]) is None
    assert stripe_priorities(4, "10.0.0.2", ["10.0.0.2", "10.0.0.1", "10.0.0.1"]) == [4, 5, 4, 5]


# -- the origin's cap ---------------------------------------------------------------------


def test_token_bucket_paces_after_the_burst() -> None:
    bucket = TokenBucket(rate=1000, burst=100, now=0.0)
    assert bucket.take(100, 0.0) == 0.0  # the burst
    assert bucket.take(100, 0.0) == pytest.approx(0.1)  # queued behind it
    assert bucket.take(50, 0.1) == pytest.approx(0.05)
    assert bucket.take(10, 10.0) == 0.0  # refilled, never beyond the burst
    assert bucket.tokens == pytest.approx(90)


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
