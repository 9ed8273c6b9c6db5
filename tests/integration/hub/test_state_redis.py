"""The hub on Redis (``--state redis://``): the same bytes through any of three hubs.

A real redis-server (tests/integration/hub/redis_server.py) and real hubs in this loop.
The byte-exact text-protocol tests and the JSON API's node tests of the SQLite hub run
here again, unchanged, against one Redis-backed hub and against three hubs on one Redis
taking turns (each connection goes to the next hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from smartget.hub.app import Hub, HubSettings, running
from smartget.hub.state.keys import Keys
from tests.helpers import wait_until

from . import test_hub_http as http_tests
from . import test_hub_textserver as text_tests
from .conftest import TOKEN, send
from .redis_server import RedisServer, needs_redis, running_redis

pytestmark = [pytest.mark.asyncio, needs_redis]


def redis_settings(data_dir: Path, url: str, **more: Any) -> HubSettings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "listen": ("127.0.0.1", 0),
        "http": ("127.0.0.1", 0),
        "token": TOKEN,
        "line_timeout": 0.5,
        "udp_tracker": ("127.0.0.1", 0),
        "no_dht": True,
        "allow_net": ("127.0.0.0/8",),
        "state": url,
    }
    return HubSettings(**{**base, **more})


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with running_redis(tmp_path / "redis") as server:
        yield server


@contextlib.asynccontextmanager
async def hubs_on(url: str, base: Path, count: int, **more: Any) -> AsyncIterator[list[Hub]]:
    async with contextlib.AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(running(redis_settings(base / f"hub{i}", url, **more)))
            for i in range(count)
        ]
        yield started


class TakingTurns:
    """Three hubs as one: each new connection (text or HTTP) goes to the next hub."""

    def __init__(self, hubs: list[Hub]) -> None:
        self.hubs = hubs
        self._turn = itertools.cycle(hubs)

    @property
    def text_address(self) -> tuple[str, int]:
        return next(self._turn).text_address

    @property
    def http_url(self) -> str:
        return next(self._turn).http_url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hubs[0], name)


# These read one hub's registry right after a reply: exact on the hub that served the
# command (a hub reads its own writes), a moment behind on the others (the change log).
_READS_ITS_REGISTRY = {"test_setstatus_and_requestnodes"}


@pytest_asyncio.fixture(params=["one hub", "three hubs"])
async def hub(request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path) -> Any:
    count = 1 if request.param == "one hub" else 3
    if count > 1 and request.node.originalname in _READS_ITS_REGISTRY:
        pytest.skip("reads one hub's registry at once (three hubs: see the tests below)")
    async with hubs_on(redis_server.url, tmp_path, count) as hubs:
        yield hubs[0] if count == 1 else TakingTurns(hubs)


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


# -- the SQLite hub's byte-exact tests, unchanged, on Redis ----------------------------

test_register_and_duplicate = text_tests.test_register_and_duplicate
test_deregister = text_tests.test_deregister
test_setstatus_and_requestnodes = text_tests.test_setstatus_and_requestnodes
test_malformed_requests = text_tests.test_malformed_requests
test_command_without_line_end_is_answered_at_eof = (
    text_tests.test_command_without_line_end_is_answered_at_eof
)
test_long_line_is_refused_and_closed = text_tests.test_long_line_is_refused_and_closed
test_slow_client_times_out_without_disturbing_others = (
    text_tests.test_slow_client_times_out_without_disturbing_others
)
test_silent_client_gets_a_reply_and_is_closed = (
    text_tests.test_silent_client_gets_a_reply_and_is_closed
)
test_session_mode_pipelined = text_tests.test_session_mode_pipelined
test_client_that_does_not_read_does_not_block_others = (
    text_tests.test_client_that_does_not_read_does_not_block_others
)
test_open_routes_and_auth = http_tests.test_open_routes_and_auth
test_register_list_status_request_delete = http_tests.test_register_list_status_request_delete
test_both_protocols_share_one_registry = http_tests.test_both_protocols_share_one_registry
test_bad_bodies = http_tests.test_bad_bodies


async def test_many_concurrent_clients_get_unique_ids(hub: Any) -> None:
    """300 registrations at once through the hubs: ids 1 to 300, each once (INCR)."""

    async def one(i: int) -> bytes:
        return await send(hub, b"`register %d\n" % (1000 + i), src=f"127.0.0.{2 + i % 50}")

    replies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(300))), timeout=30)
    ids = sorted(int(r.split(b"\r\n")[1]) for r in replies)
    assert ids == list(range(1, 301))
    stats = await hub.state.statistics()
    assert stats["nodes"] == 300
    assert stats["max_node_id"] == 300


# -- several hubs, one fleet ------------------------------------------------------------


async def test_a_node_registered_through_one_hub_is_handed_out_by_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with hubs_on(redis_server.url, tmp_path, 3) as (one, two, three):
        assert await send(one, b"`register 8000\n", src="127.0.0.2") == b"200 OK\r\n1\r\n"
        assert await send(two, b"`setstatus 1 2\n", src="127.0.0.2") == b"200 OK\r\n"
        # Hub 3 has never seen the node, and hands it out; hub 2 sees the lowered status.
        assert await send(three, b"`requestnodes 3\n", src="127.0.0.9") == (
            b"200 OK\r\n127.0.0.2 8000\r\n"
        )
        async with httpx.AsyncClient(
            base_url=two.http_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        ) as client:
            assert (await client.get("/api/nodes/1")).json()["status"] == 1
            # Each hub's read-only mirror (tracker, console, /metrics) follows.
            for hub in (one, two, three):
                await wait_until(
                    lambda h=hub: h.registry.get_node_status(1) == 1, 5, "mirror follows"
                )
            stats = (await client.get("/api/stats")).json()
            assert stats["nodes"] == 1
            assert sorted(h["id"] for h in stats["hubs"]) == sorted(
                h.hub_id for h in (one, two, three)
            )
            assert {h["state"] for h in stats["hubs"]} == {"redis"}


async def test_64_clients_never_get_one_slot_twice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Capacity is scarce (10 nodes x 3 slots); 64 sessions through three hubs ask for
    it all at once: every slot is handed out exactly once, and then none is left."""
    async with hubs_on(redis_server.url, tmp_path, 3) as hubs:
        turn = itertools.cycle(hubs)
        for i in range(10):
            src = f"127.0.0.{2 + i}"
            reply = await send(
                next(turn),
                b"`session\n`register 7000\n`setstatus %d 3\n" % (i + 1),
                src=src,
                eof=True,
            )
            assert reply == b"200 OK\r\n200 OK\r\n%d\r\n200 OK\r\n" % (i + 1)
        handed: list[bytes] = []

        async def client(i: int) -> None:
            host, port = hubs[i % 3].text_address
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(f"127.0.0.{100 + i % 50}", 0)
            )
            try:
                writer.write(b"`session\n")
                assert await reader.readexactly(8) == b"200 OK\r\n"
                for _ in range(50):  # bounded: far more tries than there are slots
                    writer.write(b"`requestnodes 1\n")
                    status = await reader.readline()
                    if status == b"404 NOT FOUND\r\n":
                        return
                    assert status == b"200 OK\r\n"
                    handed.append(await reader.readline())
            finally:
                writer.close()

        await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(64))), timeout=60)
        counts = {line: handed.count(line) for line in set(handed)}
        assert sum(counts.values()) == 30, counts
        assert all(n == 3 for n in counts.values()), counts
        stats = await hubs[1].state.statistics()
        assert stats["free_slots"] == 0
        assert stats["handed_out"] == 30


async def test_kill_9_redis_under_registration_load_loses_nothing_acknowledged(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    acknowledged: dict[tuple[str, int], int] = {}
    async with hubs_on(redis_server.url, tmp_path, 1) as (hub,):

        async def registrar(c: int) -> None:
            src = f"127.0.0.{10 + c}"
            for port in range(1, 17):  # the hub's --max-nodes-per-ip; the kill comes first
                try:
                    reply = await send(hub, b"`register %d\n" % port, src=src)
                except OSError:
                    return
                if not reply.startswith(b"200 OK\r\n"):
                    return  # Redis is gone: "could not save"
                acknowledged[src, port] = int(reply.split(b"\r\n")[1])

        load = [asyncio.create_task(registrar(c)) for c in range(40)]
        await wait_until(lambda: len(acknowledged) >= 200, 30, "200 registrations")
        redis_server.kill()  # SIGKILL, by PID
        await asyncio.wait_for(asyncio.gather(*load), 30)
        redis_server.start()  # the same directory: the AOF replays
        client = aioredis.Redis(
            host=redis_server.host, port=redis_server.port, decode_responses=True
        )
        try:
            keys = Keys()
            saved = await client.hgetall(keys.prefix + "ap")
            for (ip, port), node_id in acknowledged.items():
                assert saved.get(f"{ip} {port}") == str(node_id), (ip, port)
            counter = int(await client.get(keys.next_id))
            assert counter >= max(acknowledged.values())
        finally:
            await client.aclose()

        # The hub goes on once Redis is back: the next id follows the counter.
        async def registers() -> bool:
            reply = await send(hub, b"`register 9999\n", src="127.0.0.9")
            return reply.startswith(b"200 OK\r\n")

        await wait_until(registers, 15, "the hub uses the restarted Redis")
        node = await hub.state.find_node("127.0.0.9", 9999)
        assert node is not None
        assert node > counter


async def test_one_hub_sweeps_at_a_time_and_another_takes_over(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(
            running(redis_settings(tmp_path / "one", redis_server.url, node_ttl=0.3))
        )
        async with running(redis_settings(tmp_path / "two", redis_server.url, node_ttl=0.3)) as two:
            assert one.redis is not None
            assert two.redis is not None
            await wait_until(
                lambda: one.redis.lease.holds(one.now()) or two.redis.lease.holds(two.now()),
                10,
                "a hub holds the sweep lease",
            )
            other = two if one.redis.lease.holds(one.now()) else one
            assert not other.redis.lease.holds(other.now())
            await send(one, b"`session\n`register 5\n`setstatus 1 4\n", eof=True)

            await wait_until(_eq(lambda: _status(other, 1), -1), 10, "node 1 a zombie")
            assert await send(two, b"`setstatus 1 2\n") == b"200 OK\r\n"
        # ``two`` has left (its lease given back if it held it): ``one`` sweeps now.
        await wait_until(lambda: one.redis.lease.holds(one.now()), 10, "one takes over")
        await wait_until(_eq(lambda: _status(one, 1), -1), 10, "node 1 a zombie again")


async def test_a_heartbeat_that_changes_nothing_is_answered_by_the_hub_and_kept_alive(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The hub answers an unchanged heartbeat from its mirror and sends only its
    liveness (sg_touch, a quarter of the TTL later at most): the node stays alive over
    many TTLs, goes a zombie once silent, and a change right before an unchanged
    heartbeat in one read is not overtaken by it."""
    async with running(redis_settings(tmp_path / "hub", redis_server.url, node_ttl=1.0)) as hub:
        assert hub.redis is not None
        reply = await send(hub, b"`session\n`register 5\n`setstatus 1 4\n", eof=True)
        assert reply == b"200 OK\r\n200 OK\r\n1\r\n200 OK\r\n"
        await wait_until(lambda: hub.registry.get_node_status(1) == 4, 5, "mirror has 4")
        reader, writer = await asyncio.open_connection(
            *hub.text_address, local_addr=("127.0.0.2", 0)
        )
        try:
            writer.write(b"`session\n")
            assert await reader.readexactly(8) == b"200 OK\r\n"
            loop = asyncio.get_running_loop()
            until = loop.time() + 3.0  # three TTLs of unchanged heartbeats
            while loop.time() < until:
                writer.write(b"`setstatus 1 4\n")
                assert await asyncio.wait_for(reader.readline(), 5) == b"200 OK\r\n"
                assert await _status(hub, 1) == 4
                await asyncio.sleep(0.1)
            assert hub.redis.touches > 0  # answered here, liveness sent
            # 3 then 4 in one read, the mirror at 4: the 4 must follow the 3 to Redis.
            writer.write(b"`setstatus 1 3\n`setstatus 1 4\n")
            for _ in range(2):
                assert await asyncio.wait_for(reader.readline(), 5) == b"200 OK\r\n"
            assert await _status(hub, 1) == 4
        finally:
            writer.close()
        await wait_until(_eq(lambda: _status(hub, 1), -1), 10, "silent node 1 a zombie")


def _eq(get: Any, want: int) -> Any:
    async def check() -> bool:
        return bool(await get() == want)

    return check


async def _status(hub: Hub, node_id: int) -> int:
    node = await hub.state.get_node(node_id)
    return -2 if node is None else node.status


async def test_weak_durability_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "everysec", fsync="everysec").start()
    try:
        with caplog.at_level(logging.WARNING, logger="smartget.hub.state.redisengine"):
            async with hubs_on(server.url, tmp_path, 1) as (hub,):
                assert hub.redis is not None
                assert hub.redis.durability_problems
        assert any("appendfsync is 'everysec'" in r.getMessage() for r in caplog.records)
    finally:
        server.stop()


async def test_a_password_is_never_taken_from_the_url(tmp_path: Path) -> None:
    from smartget.errors import ConfigError

    settings = redis_settings(tmp_path / "h", "redis://:secret@127.0.0.1:1/0")
    with pytest.raises(ConfigError, match="SMARTGET_REDIS_PASSWORD"):
        async with running(settings):
            pass


async def test_a_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(tmp_path / "pw", extra=("--requirepass", "s3cret")).start()
    try:
        monkeypatch.setenv("SMARTGET_REDIS_PASSWORD", "s3cret")
        async with hubs_on(server.url, tmp_path, 1) as (hub,):
            assert await send(hub, b"`register 1\n") == b"200 OK\r\n1\r\n"
        monkeypatch.setenv("SMARTGET_REDIS_PASSWORD", "wrong")
        from smartget.errors import ConfigError

        with pytest.raises(ConfigError, match="cannot use Redis"):
            async with hubs_on(server.url, tmp_path / "again", 1):
                pass
    finally:
        server.stop()
