"""The console's hubs panel on hubs sharing one Redis (``--state redis://``, issue 13).

A real redis-server and two real hubs in this loop. Each hub's console (its one-shot
JSON snapshot and its live stream) lists both hubs, this one first; when a hub goes
away without leaving (its heartbeat stays behind, as after a crash) the other's panel
drops it within the heartbeat's TTL; a hub that stops cleanly is dropped at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartget.hub.app import Hub, HubSettings, running
from smartget.hub.state.redisengine import HUB_TTL, KEEP_EVERY
from tests.helpers import wait_until

from .conftest import TOKEN
from .redis_server import RedisServer, needs_redis, running_redis
from .test_hub_console import first_event, sign_in

pytestmark = [pytest.mark.asyncio, needs_redis, pytest.mark.timeout(90)]


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with running_redis(
        tmp_path / "redis", "127.0.46.10"
    ) as server:  # this test's addresses: 127.0.45.x-127.0.46.x
        yield server


def settings(data_dir: Path, url: str, host: str) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        listen=(host, 0),
        http=(host, 0),
        token=TOKEN,
        no_udp_tracker=True,
        no_dht=True,
        state=url,
    )


@contextlib.asynccontextmanager
async def console_of(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hub.http_url, timeout=5) as client:
        await sign_in(client)
        yield client


async def listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    reply = await client.get("/console/api/snapshot")
    assert reply.status_code == 200, reply.text
    return reply.json()["hubs"]  # type: ignore[no-any-return]


def ids(hubs: list[dict[str, Any]]) -> list[str]:
    return [h["id"] for h in hubs]


async def test_each_console_lists_every_hub_up_and_drops_one_gone(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(
            running(settings(tmp_path / "one", redis_server.url, "127.0.45.11"))
        )
        two_stack = contextlib.AsyncExitStack()
        two = await two_stack.enter_async_context(
            running(settings(tmp_path / "two", redis_server.url, "127.0.45.12"))
        )
        try:
            first = await stack.enter_async_context(console_of(one))
            second = await two_stack.enter_async_context(console_of(two))
            # Both heartbeats are in Redis once each hub's keeper has run once.
            for client, me, other in ((first, one, two), (second, two, one)):
                await wait_until(
                    lambda c=client: _len_is(c, 2), 5 * KEEP_EVERY + 5, "both hubs listed"
                )
                hubs = await listed(client)
                assert ids(hubs) == [me.hub_id, other.hub_id]  # this hub first
                this, that = hubs
                assert this["this"]
                assert this["up"]
                assert this["url"] == me.http_url
                assert not that["this"]
                assert that["up"] is True
                assert that["url"] == other.http_url
                assert that["text"] == "{}:{}".format(*other.text_address)
                assert that["state"] == "redis"
                assert that["version"]
                assert that["started"] == round(other.started, 3)
                assert 0 <= that["seen"] <= HUB_TTL
            # The live stream carries the same list.
            streamed = await first_event(first)
            assert ids(streamed["hubs"]) == [one.hub_id, two.hub_id]  # type: ignore[index]

            # Hub two goes away without leaving: its heartbeat stays in Redis until its
            # TTL runs out, as when a hub is killed.
            engine = two.redis
            assert engine is not None

            async def vanish() -> None:
                await engine.client.aclose()

            engine.aclose = vanish  # type: ignore[method-assign]
        finally:
            await two_stack.aclose()
        gone_at = time.monotonic()
        await wait_until(
            lambda: _ids_are(first, [one.hub_id]), HUB_TTL + 3, "hub two dropped after its TTL"
        )
        assert time.monotonic() - gone_at <= HUB_TTL + 3

        # A hub that stops cleanly removes its heartbeat: dropped at the next refresh.
        async with running(settings(tmp_path / "three", redis_server.url, "127.0.45.13")) as three:
            await wait_until(
                lambda: _ids_are(first, [one.hub_id, three.hub_id]), 5, "hub three listed"
            )
        await wait_until(lambda: _ids_are(first, [one.hub_id]), 3, "hub three dropped at once")


async def _len_is(client: httpx.AsyncClient, count: int) -> bool:
    return len(await listed(client)) == count


async def _ids_are(client: httpx.AsyncClient, expected: list[str]) -> bool:
    return ids(await listed(client)) == expected


async def test_a_sqlite_hub_lists_itself(tmp_path: Path) -> None:
    hub_settings = HubSettings(
        data_dir=tmp_path,
        listen=("127.0.45.20", 0),
        http=("127.0.45.20", 0),
        token=TOKEN,
        no_udp_tracker=True,
        no_dht=True,
    )
    async with running(hub_settings) as hub, console_of(hub) as client:
        (this,) = await listed(client)
        assert this["id"] == hub.hub_id
        assert this["this"]
        assert this["up"]
        assert this["state"] == "sqlite"
        assert this["url"] == hub.http_url
