"""Strangers against a real hub's tracker and HTTP port (issue 12, items 3, 4 and 13).

The hub runs as `smartget hub` (tests/adversarial/test_hub_text.py's ``hub_process``);
honest peers and attackers are 127.0.8.x addresses.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import pytest

from tests.adversarial.test_hub_text import HUB_IP, TOKEN, command, hub_process
from tests.helpers import wait_until

pytestmark = pytest.mark.asyncio

INFO_HASH = bytes.fromhex("5a" * 20)
SEED, LEECHER, STRANGER = "127.0.8.2", "127.0.8.3", "127.0.8.66"
VICTIM = "198.51.100.7"


def client(src: str, http: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://{HUB_IP}:{http}",
        transport=httpx.AsyncHTTPTransport(local_address=src),
        timeout=5,
    )


async def announce(src: str, http: int, peer_id: bytes, port: int, **extra: object) -> dict:
    query = (
        f"/announce?info_hash={quote_from_bytes(INFO_HASH)}&peer_id={quote_from_bytes(peer_id)}"
        f"&port={port}&uploaded=0&downloaded=0&compact=0"
        + "".join(f"&{name}={value}" for name, value in extra.items())
    )
    async with client(src, http) as c:
        reply = await c.get(query)
    decoded = fastbencode.bdecode(reply.content)
    assert isinstance(decoded, dict)
    return decoded


async def test_strangers_cannot_remove_a_seed_or_reflect_at_a_victim(tmp_path: Path) -> None:
    async with hub_process(tmp_path) as (_, http):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with client("127.0.8.1", http) as api:
            added = await api.post(
                "/api/torrents", json={"info_hash": INFO_HASH.hex()}, headers=headers
            )
            assert added.status_code == 201

            async def listed() -> set[tuple[str, int]]:
                torrents = (await api.get("/api/torrents", headers=headers)).json()
                return {(p["ip"], p["port"]) for t in torrents for p in t["peers"]}

            seeded = await announce(SEED, http, b"-LT2000-seed00000001", 6881, left=0, key="k1")
            assert b"failure reason" not in seeded
            # A stranger's stopped, naming the seed's address, removes nothing.
            await announce(
                STRANGER, http, b"-XX0001-evil00000001", 6881, left=0, event="stopped", ip=SEED
            )
            assert (SEED, 6881) in await listed()
            # 200 announces naming a victim's address list no victim, and at most
            # --tracker-max-peers-per-ip (16) entries of the stranger's own.
            for port in range(1000, 1200):
                await announce(STRANGER, http, b"-XX0001-%012d" % port, port, left=5, ip=VICTIM)
            peers = await listed()
            assert all(ip != VICTIM for ip, _ in peers)
            assert sum(ip == STRANGER for ip, _ in peers) == 16
            got = await announce(LEECHER, http, b"-LT2000-leech0000001", 7000, left=5, numwant=50)
            handed = [(p[b"ip"].decode(), p[b"port"]) for p in got[b"peers"]]
            assert (SEED, 6881) in handed
            assert VICTIM not in {ip for ip, _ in handed}
            # The seed itself stops its entry.
            await announce(SEED, http, b"-LT2000-seed00000001", 6881, left=0, event="stopped")
            assert (SEED, 6881) not in await listed()

            # Item 13: no stranger enumerates the tracked info-hashes.
            async with client(STRANGER, http) as c:
                full = fastbencode.bdecode((await c.get("/scrape")).content)
                assert isinstance(full, dict)
                assert b"failure reason" in full
                metrics = (await c.get("/metrics")).text
            assert INFO_HASH.hex() not in metrics.lower()
            one = await api.get(f"/scrape?info_hash={quote_from_bytes(INFO_HASH)}")
            assert INFO_HASH in fastbencode.bdecode(one.content)[b"files"]


async def test_the_http_port_refuses_a_slow_flood_and_stays_up(tmp_path: Path) -> None:
    """140 connections that never finish their headers took the hub down (12.4)."""
    async with hub_process(tmp_path, "--http-max-per-ip", "32", "--http-header-timeout", "1") as (
        text,
        http,
    ):
        socks = []
        for _ in range(140):
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind(("127.0.8.90", 0))
            with contextlib.suppress(BlockingIOError):
                sock.connect((HUB_IP, http))
            socks.append(sock)
        try:
            async with client("127.0.8.91", http) as c:
                assert (await c.get("/healthz")).is_success
            assert (await command(text, b"`register 5", "127.0.8.92")).startswith(b"200 OK")

            def all_closed() -> bool:
                closed = 0
                for sock in socks:
                    try:
                        closed += sock.recv(4096, socket.MSG_PEEK) is not None
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed += 1
                return closed == len(socks)

            # Refused at once past the cap, the rest closed at the header deadline.
            await wait_until(all_closed, within=15, what="every slow connection closed")
            # Those past --http-max-per-ip (32) read a whole 503, no RST in its way.
            refused = 0
            for sock in socks:
                with contextlib.suppress(OSError):
                    refused += sock.recv(4096).startswith(b"HTTP/1.1 503")
            assert refused == 140 - 32
        finally:
            for sock in socks:
                sock.close()
