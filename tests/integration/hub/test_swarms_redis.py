"""The tracker's swarms on Redis: several hubs, one fleet's swarms (issue 13).

A real redis-server (127.0.50.1) and real hubs in this loop (127.0.50.2-6); BitTorrent
clients announce from 127.0.51.x over HTTP and UDP (BEP 15), a fleet node from
127.0.52.1. What one hub's tracker accepts is in the others' replies, scrapes and
``/api/torrents`` within a second; a hub started later learns the swarms from the log
or, once the log is trimmed, from the other hubs' snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fastbencode
import httpx
import pytest
import redis.asyncio as aioredis

from smartget.hub.app import Hub, HubSettings, running
from smartget.hub.state import swarms as shared
from smartget.hub.udptracker import PROTOCOL_ID
from tests.helpers import wait_until

from .conftest import TOKEN, send
from .redis_server import RedisServer, needs_redis, running_redis

pytestmark = [pytest.mark.asyncio, needs_redis]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
HUB_HOSTS = ("127.0.50.2", "127.0.50.3", "127.0.50.4", "127.0.50.5", "127.0.50.6")
HTTP_PEER, UDP_PEER, THIRD_PEER = "127.0.51.1", "127.0.51.2", "127.0.51.3"
NODE = "127.0.52.1"
TORRENT = bytes.fromhex("5a" * 20)
NODE_TORRENT = bytes.fromhex("6b" * 20)
LAG = 1.0  # seconds: the target for another hub's announce to be in a hub's swarms


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with running_redis(tmp_path / "redis", "127.0.50.1") as server:
        yield server


def settings(data_dir: Path, url: str, host: str) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        listen=(host, 0),
        http=(host, 0),
        token=TOKEN,
        udp_tracker=(host, 0),
        no_dht=True,
        state=url,
    )


@contextlib.asynccontextmanager
async def hubs(url: str, base: Path, *which: int) -> AsyncIterator[list[Hub]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                running(settings(base / f"hub{i}", url, HUB_HOSTS[i - 1]))
            )
            for i in which
        ]


def quoted(raw: bytes) -> str:
    return "".join(f"%{b:02X}" for b in raw)


def peer_id(n: int) -> bytes:
    return b"-SG0001-%012d" % n


async def http_announce(
    hub: Hub, src: str, port: int, left: int, info_hash: bytes = TORRENT, event: str = ""
) -> dict[bytes, Any]:
    query = (
        f"info_hash={quoted(info_hash)}&peer_id={quoted(peer_id(port))}&port={port}"
        f"&uploaded=0&downloaded=0&left={left}&compact=1&numwant=50"
        + (f"&event={event}" if event else "")
    )
    transport = httpx.AsyncHTTPTransport(local_address=src)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        reply = await client.get(f"{hub.http_url}/announce?{query}")
    decoded = fastbencode.bdecode(reply.content)
    assert isinstance(decoded, dict)
    return decoded


def udp_announce_now(address: tuple[str, int], src: str, port: int, left: int) -> bytes:
    """BEP 15: connect, then announce from ``src``; the reply's datagram."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((src, 0))
        sock.settimeout(5)
        sock.sendto(struct.pack("!qii", PROTOCOL_ID, 0, 1), address)
        _, _, connection = struct.unpack("!iiq", sock.recv(64))
        request = struct.pack(
            "!qii20s20sqqqiIIiH",
            connection, 1, 2, TORRENT, peer_id(port), 0, left, 0, 2, 0, 7, 50, port,
        )  # fmt: skip
        sock.sendto(request, address)
        reply = sock.recv(2048)
    action, _ = struct.unpack("!ii", reply[:8])
    assert action == 1, reply
    return reply


def listed(hub: Hub, info_hash: bytes = TORRENT) -> set[tuple[str, int]]:
    return {(str(p["ip"]), int(str(p["port"]))) for p in hub.tracker.swarm(info_hash)}


def compact(peers: bytes) -> set[tuple[str, int]]:
    return {
        (socket.inet_ntoa(peers[i : i + 4]), struct.unpack("!H", peers[i + 4 : i + 6])[0])
        for i in range(0, len(peers), 6)
    }


async def track(hub: Hub, info_hash: bytes) -> None:
    async with httpx.AsyncClient(base_url=hub.http_url, headers=AUTH, timeout=10) as api:
        reply = await api.post("/api/torrents", json={"info_hash": info_hash.hex()})
    assert reply.status_code == 201, reply.text


async def test_announces_to_one_hub_are_in_every_hubs_swarms(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with hubs(redis_server.url, tmp_path, 1, 2, 3) as (one, two, three):
        await track(one, TORRENT)
        await wait_until(
            lambda: two.tracker.is_tracked(TORRENT) and three.tracker.is_tracked(TORRENT),
            5,
            "the torrent tracked through hub 1 is tracked by hubs 2 and 3",
        )

        # A seed announces over HTTP to hub 1, a leecher over UDP to hub 2.
        await http_announce(one, HTTP_PEER, 7001, left=0)
        assert two.udp_tracker_address is not None
        await asyncio.to_thread(udp_announce_now, two.udp_tracker_address, UDP_PEER, 7002, 500)
        announced = time.monotonic()
        both = {(HTTP_PEER, 7001), (UDP_PEER, 7002)}
        await wait_until(lambda: listed(three) >= both, 5, "hub 3 lists both peers")
        lag = time.monotonic() - announced
        assert lag < LAG, f"hub 3 learnt the peers after {lag:.2f} s"
        await wait_until(lambda: listed(one) == both == listed(two), 5, "every hub lists both")

        # Hub 3's announce reply and scrape list them.
        reply = await http_announce(three, THIRD_PEER, 7003, left=100)
        assert compact(reply[b"peers"]) == both
        assert (reply[b"complete"], reply[b"incomplete"]) == (1, 2)
        async with httpx.AsyncClient(timeout=10) as client:
            scrape = await client.get(f"{three.http_url}/scrape?info_hash={quoted(TORRENT)}")
        files = fastbencode.bdecode(scrape.content)[b"files"]
        assert files[TORRENT][b"complete"] == 1
        assert files[TORRENT][b"incomplete"] == 2
        async with httpx.AsyncClient(base_url=one.http_url, headers=AUTH, timeout=10) as api:
            await wait_until(lambda: len(listed(one)) == 3, 5, "hub 1 lists hub 3's peer")
            (torrent,) = (await api.get("/api/torrents")).json()
        assert (torrent["complete"], torrent["incomplete"]) == (1, 2)
        assert {(p["ip"], p["port"]) for p in torrent["peers"]} == both | {(THIRD_PEER, 7003)}

        # The seed stops through hub 2 (another hub than the one it announced to).
        stopped = await http_announce(two, HTTP_PEER, 7001, left=0, event="stopped")
        assert b"failure reason" not in stopped, stopped
        rest = {(UDP_PEER, 7002), (THIRD_PEER, 7003)}
        await wait_until(
            lambda: listed(one) == listed(two) == listed(three) == rest,
            5,
            "the stopped peer is gone from every hub",
        )

        # A hub started now (the log still holds everything) learns the swarm at once.
        async with hubs(redis_server.url, tmp_path, 4) as (four,):
            assert four.tracker.is_tracked(TORRENT)
            assert listed(four) == rest
            reply = await http_announce(four, HTTP_PEER, 7001, left=0, event="started")
            assert compact(reply[b"peers"]) == rest
            await wait_until(lambda: (HTTP_PEER, 7001) in listed(one), 5, "hub 1 sees hub 4's")


async def test_a_hub_started_after_the_log_was_trimmed_learns_from_snapshots(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared, "SNAPSHOT_EVERY", 0.2)
    async with hubs(redis_server.url, tmp_path, 1, 2) as (one, two):
        await track(two, TORRENT)
        await wait_until(lambda: one.tracker.is_tracked(TORRENT), 5, "hub 1 tracks it")
        await http_announce(one, HTTP_PEER, 7001, left=0)
        await asyncio.to_thread(udp_announce_now, two.udp_tracker_address, UDP_PEER, 7002, 500)
        both = {(HTTP_PEER, 7001), (UDP_PEER, 7002)}
        await wait_until(lambda: listed(one) == both == listed(two), 5, "both hubs list both")
        client = aioredis.Redis(
            host=redis_server.host, port=redis_server.port, decode_responses=True
        )
        try:
            prefix = one.redis.keys.prefix if one.redis else ""

            async def snapshotted() -> bool:
                mine = [await client.hlen(f"{prefix}ts:{h.hub_id}") for h in (one, two)]
                return mine == [1, 1]

            await wait_until(snapshotted, 10, "each hub's snapshot holds its own peer")
            await client.xtrim(f"{prefix}tlog", maxlen=0)
            assert await client.xlen(f"{prefix}tlog") == 0
        finally:
            await client.aclose()
        async with hubs(redis_server.url, tmp_path, 3) as (three,):
            assert three.tracker.is_tracked(TORRENT)
            assert listed(three) == both
            reply = await http_announce(three, THIRD_PEER, 7003, left=100)
            assert compact(reply[b"peers"]) == both
            assert (reply[b"complete"], reply[b"incomplete"]) == (1, 2)


async def test_a_torrent_a_fleet_node_announces_is_tracked_by_every_hub(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with hubs(redis_server.url, tmp_path, 1, 2, 3) as (one, two, three):
        reply = await send(one, b"`register 9000\n", src=NODE)
        assert reply.startswith(b"200 OK\r\n"), reply
        await wait_until(
            lambda: bool(two.registry.get_node_ids_by_addr(NODE)), 5, "hub 2 knows the node"
        )
        stranger = await http_announce(two, HTTP_PEER, 7001, 0, info_hash=NODE_TORRENT)
        assert b"failure reason" in stranger  # a stranger does not make it tracked
        announced = await http_announce(two, NODE, 7009, 0, info_hash=NODE_TORRENT)
        assert b"failure reason" not in announced, announced
        await wait_until(
            lambda: (
                all(h.tracker.is_tracked(NODE_TORRENT) for h in (one, three))
                and listed(one, NODE_TORRENT) == {(NODE, 7009)} == listed(three, NODE_TORRENT)
            ),
            5,
            "hubs 1 and 3 track the node's torrent and list it",
        )
        # Durable in the fleet: a hub started later tracks it (and its own store has
        # never seen it).
        async with hubs(redis_server.url, tmp_path, 5) as (five,):
            assert five.tracker.is_tracked(NODE_TORRENT)
            assert listed(five, NODE_TORRENT) == {(NODE, 7009)}


async def test_a_hub_on_sqlite_shares_nothing(tmp_path: Path) -> None:
    async with running(settings(tmp_path / "solo", "sqlite", HUB_HOSTS[0])) as solo:
        assert solo.shared_swarms is None
        await track(solo, TORRENT)
        await http_announce(solo, HTTP_PEER, 7001, left=0)
        assert listed(solo) == {(HTTP_PEER, 7001)}
        assert solo.tracker.pending_shared == 0
