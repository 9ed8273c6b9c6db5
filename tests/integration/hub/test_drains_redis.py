"""Drains on Redis (issue 13): a node drained through one hub's console is the fleet's.

Real hubs in this loop on one real redis-server, each on its own loopback address
(127.0.60.x; the nodes and the controller at 127.0.61.x). A node drained through hub 1's
console is held at status 0 in Redis: hub 2 never hands it out (text protocol and JSON
API), even after the node heartbeats a high status through hub 2; those heartbeats keep
it alive; bringing it back through hub 2 restores the status it last asked for at once;
a hub started later sees the drain; removing a node forgets its drain.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from smartget.hub.app import Hub, running
from smartget.hub.state.keys import Keys
from tests.helpers import wait_until

from .conftest import TOKEN, send
from .redis_server import (
    RedisClusterServers,
    RedisServer,
    needs_redis,
    needs_redis_cluster,
    running_redis,
)
from .test_hub_console import sign_in
from .test_state_redis import redis_settings

pytestmark = [pytest.mark.asyncio, needs_redis]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE_A, NODE_B, NODE_C = "127.0.61.1", "127.0.61.2", "127.0.61.3"
CONTROLLER = "127.0.61.9"


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with running_redis(tmp_path / "redis", "127.0.60.1") as server:
        yield server


@contextlib.asynccontextmanager
async def hub_at(url: str, data_dir: Path, host: str) -> AsyncIterator[Hub]:
    settings = redis_settings(
        data_dir,
        url,
        listen=(host, 0),
        http=(host, 0),
        udp_tracker=(host, 0),
        node_ttl=2.0,  # the liveness step waits for a silent node to become a zombie
        zombie_grace=60.0,
    )
    async with running(settings) as hub:
        yield hub


async def text(hub: Hub, line: str, src: str) -> bytes:
    return await send(hub, f"`{line}\n".encode(), src=src)


async def handed_out_by_text(hub: Hub, n: int = 5) -> list[str]:
    reply = await text(hub, f"requestnodes {n}", CONTROLLER)
    lines = reply.decode().split("\r\n")
    return [line for line in lines[1:] if line] if lines[0] == "200 OK" else []


async def status_of(client: httpx.AsyncClient, node_id: int) -> int:
    reply = await client.get(f"/api/nodes/{node_id}")
    assert reply.status_code == 200, reply.text
    return int(reply.json()["status"])


async def node_states(client: httpx.AsyncClient) -> dict[int, str]:
    snap = (await client.get("/console/api/snapshot")).json()
    return {n["id"]: n["state"] for n in snap["fleet"]["nodes"]}


async def test_a_drain_through_one_hub_holds_in_every_hub(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    async with (
        hub_at(url, tmp_path / "hub1", "127.0.60.2") as one,
        hub_at(url, tmp_path / "hub2", "127.0.60.3") as two,
        httpx.AsyncClient(base_url=one.http_url, headers=AUTH, timeout=5) as c1,
        httpx.AsyncClient(base_url=two.http_url, headers=AUTH, timeout=5) as c2,
    ):
        assert await text(one, "register 8001", NODE_A) == b"200 OK\r\n1\r\n"
        assert await text(two, "register 8002", NODE_B) == b"200 OK\r\n2\r\n"
        assert await text(one, "register 8003", NODE_C) == b"200 OK\r\n3\r\n"
        assert await text(one, "setstatus 1 3", NODE_A) == b"200 OK\r\n"
        a_line = f"{NODE_A} 8001"
        b_line = f"{NODE_B} 8002"

        # Drained through hub 1's console.
        csrf1 = await sign_in(c1)
        drained = await c1.post("/console/api/nodes/1/drain", headers={"X-CSRF-Token": csrf1})
        assert drained.status_code == 200, drained.text
        assert "drained" in drained.json()["message"]
        assert await status_of(c2, 1) == 0
        assert not (tmp_path / "hub1" / "console-drained.json").exists()  # Redis holds it

        # Its heartbeats through hub 2 (JSON API, then the text protocol) ask for more:
        # held at 0, and hub 2 never hands it out, by text or by the API.
        beat = await c2.put("/api/nodes/1/status", json={"status": 8})
        assert beat.json()["status"] == 0
        assert await text(two, "setstatus 1 9", NODE_A) == b"200 OK\r\n"
        assert await status_of(c2, 1) == 0
        for _ in range(3):
            assert await text(two, "setstatus 1 9", NODE_A) == b"200 OK\r\n"
            assert await text(one, "setstatus 2 3", NODE_B) == b"200 OK\r\n"
            assert await handed_out_by_text(two) == [b_line]  # B is, A is not
            assert await text(one, "setstatus 2 3", NODE_B) == b"200 OK\r\n"
            handed = await c2.post("/api/nodes/request", json={"n": 5})
            assert [n["id"] for n in handed.json()["nodes"]] == [2]
        # Hub 2's mirror holds it at 0 too (a heartbeat it took, and the change log).
        await wait_until(lambda: two.registry.get_node_status(1) == 0, 5, "hub 2's mirror")

        # Its heartbeats are liveness: silent C becomes a zombie, A (drained) does not.
        async def beat_a_until_c_is_a_zombie() -> bool:
            assert await text(two, "setstatus 1 9", NODE_A) == b"200 OK\r\n"
            return await status_of(c2, 3) == -1

        await wait_until(beat_a_until_c_is_a_zombie, 15, "node 3 a zombie")
        assert await status_of(c1, 1) == 0

        # Hub 2's console shows it drained (its copy of the fleet's set).
        csrf2 = await sign_in(c2)
        assert (await node_states(c2))[1] == "drained"

        # A hub started later sees the drain (it lives in Redis) and holds it too.
        async with (
            hub_at(url, tmp_path / "hub3", "127.0.60.4") as three,
            httpx.AsyncClient(base_url=three.http_url, headers=AUTH, timeout=5) as c3,
        ):
            await sign_in(c3)
            snap = (await c3.get("/console/api/snapshot")).json()
            assert {n["id"]: n["state"] for n in snap["fleet"]["nodes"]}[1] == "drained"
            assert snap["fleet"]["stats"]["drained"] == 1
            assert await text(three, "setstatus 1 9", NODE_A) == b"200 OK\r\n"
            assert a_line not in await handed_out_by_text(three)

            # Brought back through hub 2: the status it last asked for, at once.
            back = await c2.post("/console/api/nodes/1/undrain", headers={"X-CSRF-Token": csrf2})
            assert back.status_code == 200, back.text
            assert back.json()["message"].endswith("status 9")
            assert await status_of(c1, 1) == 9
            assert await handed_out_by_text(two, 1) == [a_line]
            handed = await c1.post("/api/nodes/request", json={"n": 1})
            assert [n["id"] for n in handed.json()["nodes"]] == [1]
            # Every console follows (hub 3's and hub 1's copies of the set).
            for client in (c3, c1):
                await wait_until(
                    lambda c=client: _state_is(c, 1, "available"), 5, "the console follows"
                )

        # Removing a drained node forgets its drain: drained through hub 2, deregistered
        # through hub 1's API.
        assert await text(one, "setstatus 2 3", NODE_B) == b"200 OK\r\n"  # silent so far
        again = await c2.post("/console/api/nodes/2/drain", headers={"X-CSRF-Token": csrf2})
        assert again.status_code == 200, again.text
        keys = Keys()
        raw = aioredis.Redis(host=redis_server.host, port=redis_server.port)
        try:
            assert await raw.hexists(keys.drained, "2")
            assert (await c1.delete("/api/nodes/2")).status_code in (200, 204)
            assert not await raw.hexists(keys.drained, "2")
            assert await raw.hlen(keys.drained) == 0
        finally:
            await raw.aclose()
        await wait_until(lambda: _state_gone(c2, 2), 5, "hub 2's console forgets node 2")
        # The console removes a zombie from the fleet (Redis), not from its mirror alone.
        gone = await c2.post("/console/api/nodes/3/deregister", headers={"X-CSRF-Token": csrf2})
        assert gone.status_code == 200, gone.text
        assert (await c1.get("/api/nodes/3")).status_code == 404


async def _state_is(client: httpx.AsyncClient, node_id: int, state: str) -> bool:
    return (await node_states(client)).get(node_id) == state


async def _state_gone(client: httpx.AsyncClient, node_id: int) -> bool:
    snap = (await client.get("/console/api/snapshot")).json()
    return node_id not in {n["id"] for n in snap["fleet"]["nodes"]} and (
        snap["fleet"]["stats"]["drained"] == 0
    )


async def test_a_drained_zombie_that_is_swept_is_forgotten(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The sweep removes a silent drained node after the grace, and its drain with it."""
    settings = redis_settings(
        tmp_path / "hub",
        redis_server.url,
        listen=("127.0.60.5", 0),
        http=("127.0.60.5", 0),
        udp_tracker=("127.0.60.5", 0),
        node_ttl=0.3,
        zombie_grace=0.5,
    )
    keys = Keys()
    raw = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        async with (
            running(settings) as hub,
            httpx.AsyncClient(base_url=hub.http_url, headers=AUTH, timeout=5) as client,
        ):
            assert await text(hub, "register 8001", NODE_A) == b"200 OK\r\n1\r\n"
            csrf = await sign_in(client)
            drained = await client.post(
                "/console/api/nodes/1/drain", headers={"X-CSRF-Token": csrf}
            )
            assert drained.status_code == 200, drained.text
            assert await raw.hexists(keys.drained, "1")

            async def swept() -> bool:
                return (await client.get("/api/nodes/1")).status_code == 404

            await wait_until(swept, 15, "node 1 removed by the sweep")
            assert not await raw.hexists(keys.drained, "1")
    finally:
        await raw.aclose()


@needs_redis_cluster
async def test_drains_on_a_redis_cluster(tmp_path: Path) -> None:
    """The drain steps run on a real 3-master cluster: loaded on every primary, routed to
    the {fleet} slot's master through either hub (one given another master)."""
    cluster = RedisClusterServers(tmp_path / "cluster").start()
    try:
        owner = cluster.owner(Keys().next_id)
        urls = (cluster.url((owner + 1) % 3), cluster.url(owner))
        async with (
            hub_at(urls[0], tmp_path / "one", "127.0.60.6") as one,
            hub_at(urls[1], tmp_path / "two", "127.0.60.7") as two,
            httpx.AsyncClient(base_url=one.http_url, headers=AUTH, timeout=10) as c1,
            httpx.AsyncClient(base_url=two.http_url, headers=AUTH, timeout=10) as c2,
        ):
            assert await text(one, "register 8001", NODE_A) == b"200 OK\r\n1\r\n"
            assert await text(two, "setstatus 1 4", NODE_A) == b"200 OK\r\n"
            csrf = await sign_in(c1)
            drained = await c1.post("/console/api/nodes/1/drain", headers={"X-CSRF-Token": csrf})
            assert drained.status_code == 200, drained.text
            assert await text(two, "setstatus 1 6", NODE_A) == b"200 OK\r\n"
            assert await handed_out_by_text(two) == []
            assert (await c2.post("/api/nodes/request", json={"n": 3})).json() == {"nodes": []}
            await sign_in(c2)
            assert (await node_states(c2))[1] == "drained"
            back = await c1.post("/console/api/nodes/1/undrain", headers={"X-CSRF-Token": csrf})
            assert back.json()["message"].endswith("status 6")
            assert await handed_out_by_text(two, 1) == [f"{NODE_A} 8001"]
            assert (await c2.delete("/api/nodes/1")).status_code in (200, 204)
    finally:
        cluster.stop()
