"""The hub on a real Redis Cluster (issue 13): three masters on loopback, two hubs.

``--state redis://HOST:PORT/0`` names any node of the cluster: the hub finds that it
is one (``INFO cluster``) and talks through redis-py's cluster client. Hub ``one`` is
given a master that does not serve the ``{fleet}`` slot, hub ``two`` the one that does.
Through them: the registry (register on one, requestnodes on the other), the status
collector (a report taken by one is in the other's ``/api/progress`` and its copy), the
push jobs (a submit through the hub that does not run them) and the durability check
on every node (one node set to ``everysec``: a warning naming that node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from smartget.errors import ConfigError
from smartget.hub.app import Hub, running
from smartget.hub.state.keys import Keys
from tests.helpers import wait_until

from .conftest import TOKEN, send
from .redis_server import RedisClusterServers, needs_redis_cluster
from .test_state_redis import redis_settings

pytestmark = [pytest.mark.asyncio, needs_redis_cluster]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE = "127.0.0.77"  # a fleet node's address (it registers and reports from there)
SHA1 = "c1" * 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield servers
    finally:
        servers.stop()


@contextlib.asynccontextmanager
async def two_hubs(urls: tuple[str, str], base: Path) -> AsyncIterator[tuple[Hub, Hub]]:
    async with (
        running(redis_settings(base / "one", urls[0])) as one,
        running(redis_settings(base / "two", urls[1])) as two,
    ):
        yield one, two


async def test_two_hubs_share_one_fleet_on_a_redis_cluster(
    cluster: RedisClusterServers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.flush()
    owner = cluster.owner(Keys().next_id)
    elsewhere = (owner + 1) % 3
    weak = cluster.nodes[(owner + 2) % 3]  # neither hub's address: found all the same
    with redis.Redis(host=weak.host, port=weak.port) as direct:
        direct.config_set("appendfsync", "everysec")
    try:
        with caplog.at_level(logging.WARNING, logger="smartget.hub.state.redisengine"):
            async with (
                two_hubs((cluster.url(elsewhere), cluster.url(owner)), tmp_path) as (one, two),
                httpx.AsyncClient(headers=AUTH, timeout=10) as http,
            ):
                await _durability_is_checked_on_every_node(one, two, weak.port)
                await _a_job_through_the_hub_that_does_not_run_them(one, two, http)
                await _registry_and_reports(one, two, http)
    finally:
        with redis.Redis(host=weak.host, port=weak.port) as direct:
            direct.config_set("appendfsync", "always")
    assert any(
        f":{weak.port}" in r.getMessage() and "appendfsync is 'everysec'" in r.getMessage()
        for r in caplog.records
    )


async def _durability_is_checked_on_every_node(one: Hub, two: Hub, weak_port: int) -> None:
    for hub in (one, two):
        assert hub.redis is not None
        assert hub.redis.cluster
        (problem,) = hub.redis.durability_problems
        assert f":{weak_port}: appendfsync is 'everysec'" in problem


async def _a_job_through_the_hub_that_does_not_run_them(
    one: Hub, two: Hub, http: httpx.AsyncClient
) -> None:
    """The request list (a script), the leader's transaction, the records: one slot."""
    await wait_until(lambda: one.jobs.leading or two.jobs.leading, 15, "a hub runs the jobs")
    leader, other = (one, two) if one.jobs.leading else (two, one)
    body = {"urls": ["http://127.0.49.30:9/a.bin"]}  # no node yet: it fails at its start
    reply = await http.post(f"{other.http_url}/api/jobs", json=body)
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]

    async def failed() -> bool:
        view = (await http.get(f"{other.http_url}/api/jobs/{job_id}")).json()
        return bool(view["state"] == "failed")

    await wait_until(failed, 15, "the hub running the jobs ran it")
    views = [(await http.get(f"{h.http_url}/api/jobs/{job_id}")).json() for h in (leader, other)]
    assert views[0] == views[1]
    assert "no live node" in views[0]["reason"]


async def _registry_and_reports(one: Hub, two: Hub, http: httpx.AsyncClient) -> None:
    assert await send(one, b"`register 8000\n", src=NODE) == b"200 OK\r\n1\r\n"
    assert await send(one, b"`setstatus 1 2\n", src=NODE) == b"200 OK\r\n"
    # Hub two has never seen the node, and hands it out (one FCALL on the slot's master).
    assert await send(two, b"`requestnodes 3\n", src="127.0.0.9") == (
        b"200 OK\r\n%s 8000\r\n" % NODE.encode()
    )
    assert (await http.get(f"{one.http_url}/api/nodes/1")).json()["status"] == 1
    for hub in (one, two):  # each hub's copy follows the change log (XREAD BLOCK)
        await wait_until(
            lambda h=hub: 1 in h.registry and h.registry.get_node_status(1) == 1,
            10,
            "mirror follows",
        )
    stats = (await http.get(f"{two.http_url}/api/stats")).json()
    assert stats["nodes"] == 1
    assert sorted(h["id"] for h in stats["hubs"]) == sorted((one.hub_id, two.hub_id))

    transport = httpx.AsyncHTTPTransport(local_address=NODE)
    async with httpx.AsyncClient(transport=transport, timeout=10) as node:
        taken = await node.post(f"{one.http_url}/report_peerstatus", json=_report())
    assert taken.json() == {"result": "received"}
    shown = await http.get(f"{two.http_url}/api/progress", params={"sha1": SHA1})
    (got,) = shown.json()
    assert got["nodeid"] == f"z_{NODE}"
    assert int(shown.headers["X-Progress-Seq"]) >= 1
    await wait_until(lambda: len(two.collector.progress(SHA1)) == 1, 10, "hub two's copy")


async def test_the_fleet_slot_moves_to_another_master(
    cluster: RedisClusterServers, tmp_path: Path
) -> None:
    """A resharding under running hubs: they follow MOVED (the functions are on every
    primary already), and their followers' blocking XREADs move with the slot."""
    cluster.flush()
    key = Keys().next_id
    owner = cluster.owner(key)
    urls = (cluster.url(owner), cluster.url((owner + 1) % 3))
    async with (
        two_hubs(urls, tmp_path) as (one, two),
        httpx.AsyncClient(headers=AUTH, timeout=10) as http,
    ):
        assert await send(one, b"`register 8100\n", src=NODE) == b"200 OK\r\n1\r\n"
        assert await send(one, b"`setstatus 1 3\n", src=NODE) == b"200 OK\r\n"
        await wait_until(
            lambda: 1 in two.registry and two.registry.get_node_status(1) == 3, 10, "hub two's copy"
        )

        target = (owner + 2) % 3
        await asyncio.wait_for(asyncio.to_thread(cluster.move_slot, key, target), 30)
        assert cluster.owner(key) == target

        assert await send(two, b"`requestnodes 1\n", src="127.0.0.9") == (
            b"200 OK\r\n%s 8100\r\n" % NODE.encode()
        )
        assert await send(two, b"`register 8101\n", src=NODE) == b"200 OK\r\n2\r\n"
        await wait_until(lambda: 2 in one.registry, 10, "hub one's copy follows the moved log")
        transport = httpx.AsyncHTTPTransport(local_address=NODE)
        async with httpx.AsyncClient(transport=transport, timeout=10) as node:
            taken = await node.post(f"{one.http_url}/report_peerstatus", json=_report())
        assert taken.json() == {"result": "received"}
        await wait_until(lambda: len(two.collector.progress(SHA1)) == 1, 10, "hub two's copy")
        nodes = (await http.get(f"{one.http_url}/api/nodes")).json()
        assert sorted(n["port"] for n in nodes) == [8100, 8101]


def _report() -> dict[str, object]:
    return {
        "event": "report",
        "nodeid": f"z_{NODE}",
        "status": "downloading",
        "args": {"sha1": SHA1, "percent": 40.0, "downrate": 1000, "numpeers": 2},
    }


async def test_a_db_other_than_0_is_refused_on_a_cluster(
    cluster: RedisClusterServers, tmp_path: Path
) -> None:
    url = cluster.url(0).removesuffix("/0") + "/3"
    with pytest.raises(ConfigError, match=r"Redis Cluster, which has only DB 0 \(not 3\)"):
        async with running(redis_settings(tmp_path / "hub", url)):
            pass
