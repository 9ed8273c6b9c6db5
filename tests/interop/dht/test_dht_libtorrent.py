"""Our DHT beside real libtorrent DHT nodes on 127.0.1.x (the issue's interop list)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import libtorrent as lt
import pytest
import pytest_asyncio

from smartget.dht import DHT, krpc

pytestmark = pytest.mark.interop

LT_IPS = ("127.0.1.100", "127.0.1.104")
OUR_IPS = ("127.0.1.101", "127.0.1.102", "127.0.1.103")


def lt_session(ip: str) -> Any:
    """A libtorrent session that runs a DHT on one machine (see the issue for why)."""
    return lt.session(
        {
            "listen_interfaces": f"{ip}:0",
            "outgoing_interfaces": ip,
            "enable_dht": True,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_prefer_verified_node_ids": False,
            "dht_enforce_node_id": False,
            "dht_ignore_dark_internet": False,
            "dht_bootstrap_nodes": "",
            "dht_block_ratelimit": 100_000,
            "alert_mask": lt.alert.category_t.dht_notification
            | lt.alert.category_t.dht_operation_notification,
        }
    )


async def wait_alert(ses: Any, match: Callable[[Any], bool], limit: float = 15.0) -> Any:
    """The first alert for which ``match`` is true, within ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while True:
            await asyncio.to_thread(ses.wait_for_alert, 200)
            for alert in ses.pop_alerts():
                if match(alert):
                    return alert


async def until(check: Callable[[], bool], limit: float = 15.0) -> None:
    """Poll a condition of a libtorrent session (which has no callback for it)."""
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110 - libtorrent offers no event for this
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def ours() -> AsyncIterator[list[DHT]]:
    nodes = [DHT(ip, 0, query_timeout=1.0) for ip in OUR_IPS]
    for node in nodes:
        await node.start()
    for node in nodes[1:]:
        await node.bootstrap([(nodes[0].bind_ip, nodes[0].bind_port)], max_wait=5)
    yield nodes
    for node in nodes:
        await node.stop()


@pytest.mark.asyncio
async def test_libtorrent_bootstraps_from_ours_and_finds_our_announce(ours: list[DHT]) -> None:
    ses = lt_session(LT_IPS[0])
    ses.add_dht_node((ours[0].bind_ip, ours[0].bind_port))
    await until(lambda: any(n.ip == LT_IPS[0] for n in ours[0].root))
    ih = os.urandom(20)
    assert await ours[2].announce_peer(ih, 7000, max_wait=10) >= 1
    ses.dht_get_peers(lt.sha1_hash(ih))
    alert = await wait_alert(
        ses, lambda a: isinstance(a, lt.dht_get_peers_reply_alert) and bool(a.peers())
    )
    assert (OUR_IPS[2], 7000) in alert.peers()


@pytest.mark.asyncio
async def test_ours_bootstraps_from_libtorrent_and_finds_its_announce(ours: list[DHT]) -> None:
    first, second = lt_session(LT_IPS[0]), lt_session(LT_IPS[1])
    second.add_dht_node((LT_IPS[0], first.listen_port()))
    node = ours[1]
    assert await node.bootstrap([(LT_IPS[0], first.listen_port())], max_wait=5) >= 1
    assert any(n.ip == LT_IPS[0] and n.last_response for n in node.root)
    ih = os.urandom(20)
    async with asyncio.timeout(20):
        while True:
            # libtorrent announces on its own schedule, maybe before its table is ready:
            # announce again and look again until the peer is seen
            second.dht_announce(lt.sha1_hash(ih), 6000, 0)
            peers = await node.get_peers(ih, limit=None, max_wait=2)
            if (LT_IPS[1], 6000) in peers:
                break
    assert (LT_IPS[1], 6000) in peers


@pytest.mark.asyncio
async def test_raw_queries_answered_by_libtorrent_are_understood() -> None:
    replies: dict[bytes, krpc.Response] = {}

    class Recorder(DHT):
        def on_ping_response(self, query: dict[bytes, Any], response: krpc.Response) -> None:
            replies[b"ping"] = response

        def on_find_node_response(self, query: dict[bytes, Any], response: krpc.Response) -> None:
            replies[b"find_node"] = response

        def on_get_peers_response(self, query: dict[bytes, Any], response: krpc.Response) -> None:
            replies[b"get_peers"] = response

    ses = lt_session(LT_IPS[1])
    lt_addr = (LT_IPS[1], ses.listen_port())
    async with Recorder(OUR_IPS[0], 0) as node:
        await node.ping(lt_addr)
        await node.bootstrap([lt_addr], max_wait=5)
        await node.get_peers(os.urandom(20), max_wait=5)
        assert set(replies) == {b"ping", b"find_node", b"get_peers"}
        assert replies[b"ping"].requester_ip == (OUR_IPS[0], node.bind_port)  # BEP 42 echo
        assert b"token" in replies[b"get_peers"].values
        lt_node = node.root.get_node(replies[b"ping"].sender)
        assert lt_node is not None
        assert lt_node.addr == lt_addr
        assert lt_node.failed == 0
