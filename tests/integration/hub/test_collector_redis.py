"""The status collector on Redis: several hubs, one fleet's reports (issue 13).

A real redis-server and two real hubs in this loop, on 127.0.40.x; nodes report from
127.0.41.x, strangers from 127.0.42.x. A report taken by one hub is in the other's
``/api/progress``, wakes its long-polls, and follows the same rules as with one hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from smartget.hub.app import Hub, HubSettings, running
from smartget.hub.state import reports as shared
from smartget.hub.state.keys import Keys
from tests.helpers import wait_until

from .conftest import TOKEN, send
from .redis_server import RedisServer, needs_redis, running_redis

pytestmark = [pytest.mark.asyncio, needs_redis]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE = "127.0.41.1"
OTHER_NODE = "127.0.41.2"
STRANGER = "127.0.42.1"
SHA1 = "a1" * 20


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with running_redis(tmp_path / "redis", "127.0.40.1") as server:
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
async def two_hubs(url: str, base: Path) -> AsyncIterator[tuple[Hub, Hub]]:
    async with (
        running(settings(base / "one", url, "127.0.40.2")) as one,
        running(settings(base / "two", url, "127.0.40.3")) as two,
    ):
        yield one, two


def report(nodeid: str, status: str, percent: float, sha1: str = SHA1) -> dict[str, Any]:
    return {
        "event": "report",
        "nodeid": nodeid,
        "status": status,
        "args": {"sha1": sha1, "percent": percent, "downrate": 1000, "numpeers": 2},
    }


async def post_report(hub: Hub, body: dict[str, Any], src: str) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(local_address=src)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        return await client.post(f"{hub.http_url}/report_peerstatus", json=body)


def api(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub.http_url, headers=AUTH, timeout=30)


async def register(hub: Hub, src: str, port: int) -> None:
    reply = await send(hub, b"`register %d\n" % port, src=src)
    assert reply.startswith(b"200 OK\r\n"), reply


async def test_a_report_to_one_hub_is_the_fleets(redis_server: RedisServer, tmp_path: Path) -> None:
    async with (
        two_hubs(redis_server.url, tmp_path) as (one, two),
        api(one) as one_api,
        api(two) as two_api,
    ):
        await register(one, NODE, 9000)
        first = await two_api.get("/api/progress", params={"sha1": SHA1})
        assert first.json() == []
        seq = int(first.headers["X-Progress-Seq"])

        # A long-poll on hub 2, waiting before the report reaches hub 1.
        started = time.monotonic()
        poll = asyncio.create_task(
            two_api.get("/api/progress", params={"sha1": SHA1, "after": seq, "wait": 20})
        )
        assert two.redis_reports is not None
        await wait_until(lambda: two.redis_reports.waiting == 1, 5, "hub 2's long-poll waits")
        reply = await post_report(one, report(f"z_{NODE}", "downloading", 40.0), NODE)
        assert reply.json() == {"result": "received"}
        polled = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - started < 5, "the long-poll woke for the report"
        assert int(polled.headers["X-Progress-Seq"]) > seq
        (got,) = polled.json()
        assert got["nodeid"] == f"z_{NODE}"
        assert got["percent"] == 40.0
        assert got["done"] is False
        assert 0 <= got["age"] < 5

        # The same JSON from either hub (but for its age, on each hub's clock).
        (mine,) = (await one_api.get("/api/progress", params={"sha1": SHA1})).json()
        assert mine.keys() == got.keys()
        assert {k: v for k, v in mine.items() if k not in ("age", "received_at")} == {
            k: v for k, v in got.items() if k not in ("age", "received_at")
        }
        by_node = (await two_api.get("/api/progress", params={"nodeid": f"z_{NODE}"})).json()
        assert [r["sha1"] for r in by_node] == [SHA1]
        assert [r["sha1"] for r in (await two_api.get("/api/progress")).json()] == [SHA1]

        # "done" answers success (durable in Redis first); a late "downloading" after
        # it changes nothing; both hubs see the done.
        done = await post_report(one, report(f"z_{NODE}", "seeding", 100.0), NODE)
        assert done.json() == {"result": "success"}
        keys = Keys()
        client = aioredis.Redis(
            host=redis_server.host, port=redis_server.port, decode_responses=True
        )
        try:
            entry = await client.hget(keys.reports(SHA1), f"z_{NODE}")
            assert entry is not None
            assert entry.startswith("1|")
            late = await post_report(two, report(f"z_{NODE}", "downloading", 99.0), NODE)
            assert late.json() == {"result": "received"}
            (now_done,) = (await two_api.get("/api/progress", params={"sha1": SHA1})).json()
            assert now_done["done"] is True
            assert now_done["percent"] == 100.0

            # Each hub's own copy (the console, push jobs) follows.
            for hub in (one, two):
                await wait_until(
                    lambda h=hub: [r.done for r in h.collector.progress(SHA1)] == [True],
                    5,
                    "the hub's copy follows",
                )

            # Forgotten through hub 2: gone from hub 1 and from Redis.
            assert (await two_api.delete(f"/api/progress/{SHA1}")).status_code == 204
            assert (await one_api.get("/api/progress", params={"sha1": SHA1})).json() == []
            assert (await one_api.delete(f"/api/progress/{SHA1}")).status_code == 404
            assert int(await client.get(keys.prefix + "rc") or 0) == 0
            assert not await client.exists(keys.reports_of_node(f"z_{NODE}"))
            await wait_until(lambda: not one.collector.progress(SHA1), 5, "copy forgets")
        finally:
            await client.aclose()


async def test_reports_from_anyone_but_the_node_are_refused(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with two_hubs(redis_server.url, tmp_path) as (one, two), api(two) as two_api:
        await register(one, NODE, 9000)
        await register(one, OTHER_NODE, 9000)
        # Another registered node, reporting for the first: refused at either hub.
        for hub in (one, two):
            reply = await post_report(hub, report(f"z_{NODE}", "seeding", 100.0), OTHER_NODE)
            assert reply.status_code == 400
            assert reply.json()["result"] == "failed"
            assert "reports for itself only" in reply.json()["traceback"]
        # A stranger (no registered node at its address), reporting for itself.
        reply = await post_report(two, report(f"z_{STRANGER}", "seeding", 100.0), STRANGER)
        assert reply.status_code == 400
        assert "no registered node" in reply.json()["traceback"]
        progress = await two_api.get("/api/progress")
        assert progress.json() == []
        assert progress.headers["X-Progress-Seq"] == "0"
        client = aioredis.Redis(
            host=redis_server.host, port=redis_server.port, decode_responses=True
        )
        try:
            keys = Keys()
            assert await client.get(keys.prefix + "rc") is None
            assert await client.exists(keys.prefix + f"ri:{STRANGER}") == 0
        finally:
            await client.aclose()


async def test_the_caps_hold_across_hubs_and_old_reports_expire(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared, "REPORTERS_PER_IP", 2)
    async with two_hubs(redis_server.url, tmp_path) as (one, two), api(one) as one_api:
        await register(one, NODE, 9000)
        for hub in (one, two):
            hub.collector.max_per_node = 2
        digests = ["b1" * 20, "b2" * 20, "b3" * 20]
        hubs = (one, two, one)
        replies = [
            await post_report(h, report(f"z_{NODE}", "downloading", 1.0, d), NODE)
            for h, d in zip(hubs, digests, strict=True)
        ]
        assert [r.status_code for r in replies] == [200, 200, 400]
        assert "has reports on 2 torrents already" in replies[2].json()["traceback"]
        # A report on a torrent the node has a report on still goes in.
        again = await post_report(two, report(f"z_{NODE}", "downloading", 5.0, digests[0]), NODE)
        assert again.json() == {"result": "received"}
        # Node ids one address reports as: two (patched down from 64 for the test).
        names = [f"y_{NODE}", f"x_{NODE}"]
        replies = [await post_report(two, report(n, "downloading", 1.0), NODE) for n in names]
        assert [r.status_code for r in replies] == [200, 400]
        assert "reported as 2 node ids already" in replies[1].json()["traceback"]
        assert len((await one_api.get("/api/progress")).json()) == 3

        # Torrents silent past the TTL are forgotten (here: a TTL of 0), in every copy.
        assert two.redis_reports is not None
        assert await two.redis_reports.expire(ttl=0) == 3
        assert (await one_api.get("/api/progress")).json() == []
        await wait_until(lambda: not one.collector.progress(), 5, "hub 1's copy forgets")
        # The counts went with them: the caps are free again.
        reply = await post_report(one, report(f"x_{NODE}", "downloading", 1.0, digests[2]), NODE)
        assert reply.json() == {"result": "received"}


async def test_a_hub_started_later_loads_the_fleets_reports(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with running(settings(tmp_path / "one", redis_server.url, "127.0.40.4")) as one:
        await register(one, NODE, 9000)
        done = await post_report(one, report(f"z_{NODE}", "seeding", 100.0), NODE)
        assert done.json() == {"result": "success"}
    async with running(settings(tmp_path / "two", redis_server.url, "127.0.40.5")) as two:
        (got,) = two.collector.progress(SHA1)
        assert got.done
        async with api(two) as two_api:
            reply = await two_api.get("/api/progress", params={"sha1": SHA1})
            assert [r["nodeid"] for r in reply.json()] == [f"z_{NODE}"]
            assert int(reply.headers["X-Progress-Seq"]) == 1
            # A long-poll with nothing new waits its time out, then answers.
            started = time.monotonic()
            reply = await two_api.get("/api/progress", params={"after": 1, "wait": 0.5})
            assert 0.4 < time.monotonic() - started < 5
            assert reply.headers["X-Progress-Seq"] == "1"
