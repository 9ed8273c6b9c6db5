"""Real UDP sockets on 127.0.1.x: our DHT nodes talking to each other."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from fastbencode import bdecode, bencode

from smartget.dht import DHT, BlockingDHT, RoutingTable, krpc


async def _network(count: int, host_base: int = 10) -> list[DHT]:
    nodes = [DHT(f"127.0.1.{host_base + i % 3}", 0, query_timeout=0.5) for i in range(count)]
    for node in nodes:
        await node.start()
    first = nodes[0]
    for node in nodes[1:]:
        await node.bootstrap([(first.bind_ip, first.bind_port)], max_wait=5)
    return nodes


async def _stop(nodes: list[DHT]) -> None:
    for node in nodes:
        await node.stop()


@pytest.mark.asyncio
async def test_announce_and_find_over_udp() -> None:
    nodes = await _network(25)
    try:
        ih = os.urandom(20)
        accepted = await nodes[3].announce_peer(ih, 4242, max_wait=10)
        assert accepted >= 5
        seen: list[tuple[str, int]] = []
        peers = await nodes[20].get_peers(ih, callback=seen.extend, max_wait=10)
        assert peers == [(nodes[3].bind_ip, 4242)]
        assert seen == peers
        stats = nodes[20].statistics()
        assert stats["nodes"] >= 8
        assert stats["lookups_get_peers"] == 1
        compact = nodes[20].get_closest_nodes(ih, compact=True)
        assert isinstance(compact, bytes)
        assert len(compact) == 26 * 8
    finally:
        await _stop(nodes)


@pytest.mark.asyncio
async def test_garbage_flood_is_counted_and_node_keeps_answering() -> None:
    async with DHT("127.0.1.20", 0, rate_limit=1000) as node:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.1.21", 0))
        sock.setblocking(False)
        try:
            target = (node.bind_ip, node.bind_port)
            for i in range(300):
                junk = [b"", b"i01e", os.urandom(40), b"d1:t2:aa1:y1:qe", b"x" * 2100][i % 5]
                sock.sendto(junk, target)
                if i % 10 == 0:
                    await asyncio.sleep(0)  # let the node drain: the socket buffer is finite
            ping = bencode({b"t": b"pp", b"y": b"q", b"q": b"ping", b"a": {b"id": b"\x01" * 20}})
            sock.sendto(ping, target)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(5):
                while True:
                    data = await loop.sock_recv(sock, 4096)
                    msg = bdecode(data)
                    if msg[b"t"] == b"pp":
                        break
            assert msg[b"r"][b"id"] == node.myid
            assert msg[b"ip"] == krpc.compact_addr(sock.getsockname())
            stats = node.statistics()
            assert stats["malformed"] >= 240
        finally:
            sock.close()


@pytest.mark.asyncio
async def test_save_load_roundtrip(tmp_path: Path) -> None:
    nodes = await _network(12, host_base=30)
    try:
        path = tmp_path / "dht.state"
        saved = nodes[1].save(path, max_node=50)
        assert saved == len(nodes[1].root)
        assert path.stat().st_size == 26 * saved
        fresh = DHT("127.0.1.40", 0)
        async with fresh:
            assert fresh.load(path) == saved
            assert fresh.load(tmp_path / "missing") == 0
            # the loaded table is enough to bootstrap without any address
            assert await fresh.bootstrap([], max_wait=5) >= 8
    finally:
        await _stop(nodes)


@pytest.mark.asyncio
async def test_shared_routing_table_and_hooks() -> None:
    seen: list[bytes] = []
    pinged = asyncio.Event()

    class Logging(DHT):
        def on_ping_query(self, query: krpc.Query) -> None:
            seen.append(query.method)
            pinged.set()

        def on_find_node_response(
            self, query: dict[bytes, object], response: krpc.Response
        ) -> None:
            seen.append(b"find_node-response")

    table = RoutingTable()
    a, b = DHT("127.0.1.50", 0, routing_table=table), Logging("127.0.1.51", 0, routing_table=table)
    other = DHT("127.0.1.52", 0)
    async with a, b, other:
        await b.bootstrap([(other.bind_ip, other.bind_port)], max_wait=5)
        assert a.root is b.root
        assert len(a.root) >= 1
        await other.ping((b.bind_ip, b.bind_port))
        async with asyncio.timeout(5):
            await pinged.wait()
        assert b"find_node-response" in seen


def test_blocking_wrapper() -> None:
    server = BlockingDHT("127.0.1.60", 0)
    client = BlockingDHT("127.0.1.61", 0)
    server.start()
    client.start()
    try:
        assert client.bootstrap([("127.0.1.60", server.dht.bind_port)]) >= 1
        ih = os.urandom(20)
        assert client.announce_peer(ih, 999, max_wait=5) == 1
        assert server.dht.get_closest_nodes(ih)  # the client is in the server's table
        assert client.get_peers(ih, max_wait=5) == [("127.0.1.61", 999)]
        assert client.statistics()["announces_accepted"] == 1
    finally:
        client.stop()
        server.stop()
    assert not client.is_alive()
