"""A stranger against a hub on Redis: the heartbeats the hub answers from its own copy
of the fleet (the status unchanged, issue 13) are its node's own, never a stranger's.

The hub runs as `smartget hub --state redis://` on 127.0.7.1 next to a real
redis-server; the node is 127.0.7.2, the stranger 127.0.7.9.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until
from tests.integration.hub.redis_server import needs_redis, running_redis

from .test_hub_text import HUB_IP, TOKEN, command, hub_process

pytestmark = [pytest.mark.asyncio, needs_redis]


async def test_a_stranger_cannot_keep_another_nodes_heartbeat(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis:
        state = ("--state", redis.url, "--node-ttl", "1", "--zombie-grace", "3600")
        async with hub_process(tmp_path, *state) as (text, http):
            reader, writer = await asyncio.open_connection(
                HUB_IP, text, local_addr=("127.0.7.2", 0)
            )
            writer.write(b"`session\n`register 5000\n`setstatus 1 4\n")
            writer.write_eof()
            try:
                assert await asyncio.wait_for(reader.read(), 5) == (
                    b"200 OK\r\n200 OK\r\n1\r\n200 OK\r\n"
                )
            finally:
                writer.close()

            async def status() -> int:
                async with httpx.AsyncClient(
                    timeout=2, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as client:
                    reply = await client.get(f"http://{HUB_IP}:{http}/api/nodes/1")
                    return int(reply.json()["status"])

            # The very status the node has, from another address: refused by Redis,
            # not answered (and kept alive) from the hub's copy.
            refused = b"400 BAD REQUEST\r\nnode 1 belongs to 127.0.7.2, not to 127.0.7.9\r\n"
            assert await command(text, b"`setstatus 1 4", "127.0.7.9") == refused

            async def zombie_while_the_stranger_beats() -> bool:
                assert await command(text, b"`setstatus 1 4", "127.0.7.9") == refused
                return await status() == -1

            # The node is silent: it becomes a zombie within its TTL however often the
            # stranger sends its heartbeat.
            await wait_until(zombie_while_the_stranger_beats, 15, "node 1 a zombie")
