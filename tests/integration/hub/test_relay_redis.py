"""co2's relay on Redis (issue 13): the satellites and the outbox are the fleet's.

Three hubs in this loop on one real redis-server (127.0.57.1); satellites are stdlib
XML-RPC servers (threads) on 127.0.58.x calling the hubs from their own address. A
satellite registered through one hub is listed by the others, a message accepted by
any hub reaches satellites registered through the others (the lease holder delivers),
sequence numbers come from one counter, and when the delivering hub stops, the next
lease holder delivers what was still owed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import xmlrpc.client
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from smartget.hub.app import Hub, HubSettings, running
from smartget.hub.relay import RelaySettings
from smartget.hub.state.keys import Keys
from tests.helpers import wait_until

from .redis_server import RedisServer, needs_redis, running_redis
from .test_relay_durable import in_order_once_each, received
from .test_relay_hub import WAIT, FakeSatellite

pytestmark = [pytest.mark.asyncio, needs_redis]

REDIS_IP = "127.0.57.1"
HUB_IPS = ("127.0.57.2", "127.0.57.3", "127.0.57.4")
SAT_IPS = ("127.0.58.2", "127.0.58.3", "127.0.58.4")
P = Keys().prefix


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis", REDIS_IP) as server:
        yield server


@pytest.fixture
def satellites() -> Iterator[list[FakeSatellite]]:
    sats = [FakeSatellite(ip, f"pass-{n}") for n, ip in enumerate(SAT_IPS)]
    yield sats
    for sat in sats:
        sat.stop()


def settings(base: Path, n: int, url: str, **relay: Any) -> HubSettings:
    ip = HUB_IPS[n]
    defaults: dict[str, Any] = {
        "ping_interval": 3600.0,
        "ping_timeout": 2.0,
        "notify_timeout": 2.0,
        "drain_timeout": 0.5,
    }
    return HubSettings(
        data_dir=base / f"hub{n}",
        listen=(ip, 0),
        http=(ip, 0),
        token="test-token",
        udp_tracker=(ip, 0),
        no_dht=True,
        state=url,
        relay=RelaySettings(**{**defaults, **relay}),
    )


@contextlib.asynccontextmanager
async def hubs_on(url: str, base: Path, count: int, **relay: Any) -> AsyncIterator[list[Hub]]:
    async with contextlib.AsyncExitStack() as stack:
        hubs = []
        for n in range(count):
            hubs.append(await stack.enter_async_context(running(settings(base, n, url, **relay))))
        await wait_until(lambda: any(h.relay.delivering for h in hubs), WAIT, "a deliverer")
        yield hubs


async def test_a_message_accepted_by_one_hub_reaches_satellites_of_the_others(
    tmp_path: Path, redis_server: RedisServer, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    async with hubs_on(redis_server.url, tmp_path, 3) as hubs:
        for sat, hub in zip(satellites, hubs, strict=True):  # each through its own hub
            assert await sat.register(hub) == f"{sat.ip}:{sat.port}"
        everyone = [s.host_id for s in satellites]
        for hub in hubs:  # every hub lists every satellite, in registration order
            assert await a.call(hub, "relay.get_satellites") == everyone
            assert await a.call(hub, "co2.get_num_satellites") == 3

        data = {"text": "hello", "n": [1, 2, 3]}
        assert await a.call(hubs[1], "relay.relay", {"host_id": a.host_id, "data": data}) == "OK"
        for sat in (b, c):
            got = await sat.next_notify()
            assert got == {"host_id": a.host_id, "data": data, "notify_pass": sat.notify_pass}
        assert a.notified.empty()  # never to the sender

        for hub in hubs:  # the statistics are the fleet's: read through any hub
            raw = await b.call(hub, "relay.get_satellite_props_raw", {"host_id": a.host_id})
            assert raw["send_count"] == 1

        async def counted() -> bool:
            raw = await a.call(hubs[2], "relay.get_satellite_props_raw", {"host_id": b.host_id})
            return bool(raw["recv_count"] == 1)

        await wait_until(counted, WAIT, "the deliverer's statistics in Redis")

        # Only a satellite's own address may act for it, through any hub.
        with pytest.raises(xmlrpc.client.Fault, match=f"only {a.ip} may"):
            await b.call(hubs[2], "relay.deregister", {"host_id": a.host_id})
        assert await a.call(hubs[2], "relay.deregister", {"host_id": a.host_id}) == "OK"
        for hub in hubs:
            assert await b.call(hub, "relay.get_satellites") == [b.host_id, c.host_id]

        # The token is required by every hub.
        for hub in hubs:
            with (
                xmlrpc.client.ServerProxy(f"{hub.http_url}/RPC2") as anonymous,
                pytest.raises(xmlrpc.client.Fault, match="needs the hub's token"),
            ):
                await asyncio.to_thread(anonymous.relay.get_satellites)


async def test_caps_hold_across_hubs(
    tmp_path: Path, redis_server: RedisServer, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    async with hubs_on(redis_server.url, tmp_path, 2, max_satellites=2) as hubs:
        await a.register(hubs[0])
        await b.register(hubs[1])
        with pytest.raises(xmlrpc.client.Fault, match="relay is full: 2 of 2"):
            await c.register(hubs[0])
        with pytest.raises(xmlrpc.client.Fault, match="relay is full: 2 of 2"):
            await c.register(hubs[1])


async def test_ids_are_unique_across_hubs_under_concurrent_sends(
    tmp_path: Path, redis_server: RedisServer, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    async with hubs_on(redis_server.url, tmp_path, 3, rate=1000.0) as hubs:
        for sat, hub in zip(satellites, hubs, strict=True):
            await sat.register(hub)
        turn = itertools.cycle(hubs)
        sends = [(a if n % 2 else b, next(turn), n) for n in range(100)]
        replies = await asyncio.gather(
            *(
                sat.call(hub, "relay.relay", {"host_id": sat.host_id, "data": n})
                for sat, hub, n in sends
            )
        )
        assert replies == ["OK"] * 100
        from_a = [n for sat, _, n in sends if sat is a]
        from_b = [n for sat, _, n in sends if sat is b]
        got_c = await received(c, list(range(100)))
        assert sorted(got_c) == list(range(100))  # each once
        got_b = await received(b, from_a)
        got_a = await received(a, from_b)
        assert sorted(got_b) == from_a
        assert sorted(got_a) == from_b

        client = aioredis.Redis(host=redis_server.host, port=redis_server.port)
        try:
            entries = await client.xrange(f"{P}rl:log")
            seqs = [int(fields[b"q"]) for _, fields in entries]
            assert sorted(seqs) == list(range(1, 101))  # one counter: unique, none reused
            assert int(await client.get(f"{P}rl:next")) == 100

            async def emptied() -> bool:
                return int(await client.zcard(f"{P}rl:out")) == 0

            await wait_until(emptied, WAIT, "every message finished and deleted")
            assert int(await client.get(f"{P}rl:bytes") or 0) == 0
        finally:
            await client.aclose()


async def test_the_next_lease_holder_delivers_what_a_stopped_deliverer_owed(
    tmp_path: Path, redis_server: RedisServer, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    back = threading.Event()

    def hang(params: dict[str, Any]) -> str:  # b takes its first notify, then hangs
        b.notified.put(params)
        back.wait(WAIT * 3)
        return "OK"

    b.server.register_function(hang, "notify")
    url = redis_server.url
    first_hub = contextlib.AsyncExitStack()
    try:
        first = await first_hub.enter_async_context(running(settings(tmp_path, 0, url)))
        await wait_until(lambda: first.relay.delivering, WAIT, "the first hub delivers")
        async with running(settings(tmp_path, 1, url)) as second:
            for sat in satellites:
                await sat.register(second)
            for n in range(3):
                reply = await a.call(second, "relay.relay", {"host_id": a.host_id, "data": n})
                assert reply == "OK"
            assert [(await c.next_notify())["data"] for _ in range(3)] == [0, 1, 2]
            assert (await b.next_notify())["data"] == 0  # under way when its hub stops
            assert not second.relay.delivering

            # The deliverer stops (its notify to b cut short, nothing more written);
            # b comes back; the second hub takes the lease and delivers what b is owed.
            async with asyncio.timeout(WAIT * 2):
                await first_hub.aclose()
            back.set()
            await wait_until(lambda: second.relay.delivering, WAIT, "the takeover")
            got_b = [0, *await received(b, [0, 1, 2])]
            assert in_order_once_each(got_b) == [0, 1, 2]
            await a.call(second, "relay.relay", {"host_id": a.host_id, "data": "new"})
            got_c = [0, 1, 2, *await received(c, ["new"])]
            assert in_order_once_each(got_c) == [0, 1, 2, "new"]  # at least once
            assert a.notified.empty()
    finally:
        back.set()
        await first_hub.aclose()
