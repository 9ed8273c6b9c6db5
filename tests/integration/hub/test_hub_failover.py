"""Several hubs, one fleet (issue 13): clients move to the next hub when one is gone.

Two hubs on one real redis-server. A node names both (``--hub-http``, ``--report-url``)
and a controller (the push's and the job client's :class:`FleetClient`) names both; the
first hub stops, and each goes on through the second: the node keeps its id (it lives in
Redis), heartbeats and reports arrive, the controller lists the fleet.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smartget.errors import PushError
from smartget.hub.app import running
from smartget.node.files import create_files_app
from smartget.push import FleetClient
from tests.helpers import wait_until
from tests.integration.node.conftest import node_settings, random_file, serve, started, task

from .conftest import TOKEN
from .redis_server import RedisServer, needs_redis, running_redis
from .test_state_redis import redis_settings

pytestmark = [pytest.mark.asyncio, needs_redis]

NODE_IP = "127.0.49.2"
ORIGIN_IP = "127.0.49.9"


@pytest.fixture
def redis_server(tmp_path: Path) -> object:
    with running_redis(tmp_path / "redis") as server:
        yield server


def with_token(url: str) -> str:
    return url.replace("http://", f"http://:{TOKEN}@", 1)


async def test_node_and_controller_move_to_the_next_hub(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    random_file(tmp_path / "origin" / "f.bin", 256 << 10)
    async with (
        serve(create_files_app(tmp_path / "origin"), ORIGIN_IP) as origin,
        running(redis_settings(tmp_path / "hub2", redis_server.url)) as hub2,
    ):
        first = running(redis_settings(tmp_path / "hub1", redis_server.url))
        hub1 = await first.__aenter__()
        try:
            urls = (hub1.http_url, hub2.http_url)
            settings = node_settings(
                tmp_path,
                NODE_IP,
                hub_http=tuple(with_token(u) for u in urls),
                report_url=tuple(f"{u}/report_peerstatus" for u in urls),
                report_interval=0.5,
                heartbeat=0.2,
            )
            async with started(settings) as (node, api):
                hub = node.hub
                assert hub is not None
                await wait_until(lambda: hub.heartbeats >= 2, within=10, what="heartbeats")
                assert hub.http_url == hub1.http_url
                node_id = hub.node_id
                controller = FleetClient(urls, TOKEN, TOKEN, 10)
                try:
                    listed = await controller.hub("GET", "/api/nodes")
                    assert [n["id"] for n in listed] == [node_id]

                    await first.__aexit__(None, None, None)  # the first hub is gone
                    hub1 = None

                    beats = hub.heartbeats
                    await wait_until(
                        lambda: hub.http_url == hub2.http_url and hub.heartbeats >= beats + 2,
                        within=15,
                        what="heartbeats through the second hub",
                    )
                    assert hub.node_id == node_id  # the same node: its record is in Redis
                    listed = await controller.hub("GET", "/api/nodes")
                    assert [n["id"] for n in listed] == [node_id]
                    assert controller.hub_url == hub2.http_url
                    assert controller.hubs.moves == 1

                    made = await api.post(
                        "/maketorrent", json=task("maketorrent", fileurl=f"{origin}/f.bin")
                    )
                    assert made.json()["result"] == "success", made.text
                    sha1 = made.json()["args"]["sha1"]

                    async def reported() -> bool:
                        reports = await controller.hub(
                            "GET", "/api/progress", params={"sha1": sha1}
                        )
                        return any(r["nodeip"] == NODE_IP and r["done"] for r in reports)

                    await wait_until(reported, within=15, what="a report through the second hub")
                    assert node.reporter is not None
                    assert node.reporter.url == f"{hub2.http_url}/report_peerstatus"
                finally:
                    await controller.aclose()
        finally:
            if hub1 is not None:
                await first.__aexit__(None, None, None)


async def test_a_post_that_may_have_been_carried_out_is_not_sent_again() -> None:
    """A job POST whose hub reset the connection after reading it: not sent to another."""
    received: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.transport.abort()  # read, then gone without an answer

    server = await asyncio.start_server(swallow, "127.0.49.3", 0)
    second = await asyncio.start_server(swallow, "127.0.49.4", 0)
    try:
        a = f"http://127.0.49.3:{server.sockets[0].getsockname()[1]}"
        b = f"http://127.0.49.4:{second.sockets[0].getsockname()[1]}"
        client = FleetClient((a, b), TOKEN, TOKEN, 5)
        try:
            with pytest.raises(PushError, match="may have been carried out"):
                await client.hub("POST", "/api/jobs", json={"urls": ["http://x/y"]})
            assert len(received) == 1  # only the first hub saw it
            with pytest.raises(PushError, match="cannot reach the hub"):
                await client.hub("GET", "/api/jobs")
            assert len(received) == 3  # a GET goes on to the next hub
        finally:
            await client.aclose()
    finally:
        server.close()
        second.close()


async def test_hubs_without_a_token_share_the_one_generated_first(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A client that moves to another hub keeps its token: a generated one is the fleet's."""
    async with (
        running(redis_settings(tmp_path / "a", redis_server.url, token=None)) as a,
        running(redis_settings(tmp_path / "b", redis_server.url, token=None)) as b,
    ):
        assert a.token == b.token
        written = {(h.settings.data_dir / "hub.token").read_text().strip() for h in (a, b)}
        assert written == {a.token}
        client = FleetClient((a.http_url, b.http_url), a.token, a.token, 10)
        try:
            assert await client.hub("GET", "/api/nodes") == []
        finally:
            await client.aclose()
