"""Strangers against a real hub process, with its default rules (issue 12, items 4 and 6).

The hub runs as `smartget hub` on 127.0.7.1; attackers and honest clients are other
127.0.7.x addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import pytest

from smartget.net import free_port
from tests.helpers import stop_process, wait_until

pytestmark = pytest.mark.asyncio

HUB_IP = "127.0.7.1"
TOKEN = "adversarial-token"


@contextlib.asynccontextmanager
async def hub_process(tmp_path: Path, *extra: str) -> AsyncIterator[tuple[int, int]]:
    text, http = free_port(HUB_IP), free_port(HUB_IP)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smartget",
        "hub",
        "--data-dir",
        str(tmp_path / "hub"),
        "--listen",
        f"{HUB_IP}:{text}",
        "--http",
        f"{HUB_IP}:{http}",
        "--no-udp-tracker",
        *extra,
        env={**os.environ, "SMARTGET_HUB_TOKEN": TOKEN},  # never on the command line
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def healthy() -> bool:
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"http://{HUB_IP}:{http}/healthz")).is_success
            except httpx.HTTPError:
                return False

        await wait_until(healthy, within=30, what="the hub")
        yield text, http
    finally:
        await stop_process(proc)


async def command(port: int, line: bytes, src: str) -> bytes:
    reader, writer = await asyncio.open_connection(HUB_IP, port, local_addr=(src, 0))
    try:
        writer.write(line + b"\n")
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


async def test_a_stranger_cannot_drain_capacity_or_flood_registrations(tmp_path: Path) -> None:
    async with hub_process(tmp_path) as (text, http):
        # An honest node with free capacity.
        assert (await command(text, b"`register 9000", "127.0.7.2")).startswith(b"200 OK")
        assert await command(text, b"`setstatus 1 5", "127.0.7.2") == b"200 OK\r\n"
        # A stranger's requestnodes takes nothing.
        for _ in range(3):
            reply = await command(text, b"`requestnodes 1000", "127.0.7.66")
            assert reply.startswith(b"400 BAD REQUEST\r\n127.0.7.66 is no registered node")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://{HUB_IP}:{http}", headers=headers) as api:
            assert (await api.get("/api/nodes/1")).json()["status"] == 5
            # The operator's JSON API still hands the node out.
            handed = await api.post("/api/nodes/request", json={"n": 1})
            assert [n["id"] for n in handed.json()["nodes"]] == [1]
        # One address registers at most --max-nodes-per-ip (16) nodes.
        replies = [await command(text, b"`register %d" % p, "127.0.7.67") for p in range(1, 21)]
        assert sum(r.startswith(b"200 OK") for r in replies) == 16
        assert replies[-1].startswith(b"400 BAD REQUEST\r\n127.0.7.67 already has 16 nodes")


async def test_one_address_cannot_hold_every_text_connection(tmp_path: Path) -> None:
    async with hub_process(tmp_path, "--text-max-per-ip", "8") as (text, _):
        held = []
        for _ in range(8):  # silent connections, each waiting for a command
            held.append(await asyncio.open_connection(HUB_IP, text, local_addr=("127.0.7.80", 0)))
        reply = await command(text, b"`register 1", "127.0.7.80")
        assert reply == b"400 BAD REQUEST\r\ntoo many connections; try again later\r\n"
        # Everybody else is served.
        assert (await command(text, b"`register 1", "127.0.7.81")).startswith(b"200 OK")
        for _, writer in held:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_deeply_nested_json_is_a_400_not_a_500(tmp_path: Path) -> None:
    async with hub_process(tmp_path) as (_, http):
        body = b"[" * 20_000 + b"]" * 20_000  # 40 KiB
        headers = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
        async with httpx.AsyncClient(base_url=f"http://{HUB_IP}:{http}", timeout=5) as client:
            answer = await client.post("/api/nodes", content=body, headers=headers)
            assert answer.status_code == 400, answer.text
            report = await client.post("/report_peerstatus", content=body)
            assert report.status_code == 400
            assert (await client.get("/healthz")).is_success


async def test_nobody_reports_progress_for_another_node(tmp_path: Path) -> None:
    """A stranger's 'seeding' for a real node was stored and answered success (12.2)."""
    sha1 = "ab" * 20

    def report(nodeid: str, status: str, percent: float) -> dict[str, object]:
        return {"nodeid": nodeid, "status": status, "args": {"sha1": sha1, "percent": percent}}

    async with hub_process(tmp_path) as (text, http):
        assert (await command(text, b"`register 9000", "127.0.7.2")).startswith(b"200 OK")
        url = f"http://{HUB_IP}:{http}"

        def client(src: str) -> httpx.AsyncClient:
            transport = httpx.AsyncHTTPTransport(local_address=src)
            return httpx.AsyncClient(base_url=url, transport=transport, timeout=5)

        async with client("127.0.7.66") as stranger:
            forged = await stranger.post(
                "/report_peerstatus", json=report("eu_127.0.7.2", "seeding", 100)
            )
        assert forged.status_code == 400
        assert "reports for itself only" in forged.json()["traceback"]
        async with client("127.0.7.2") as node:
            honest = await node.post(
                "/report_peerstatus", json=report("eu_127.0.7.2", "downloading", 12)
            )
        assert honest.json() == {"result": "received"}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as api:
            progress = (await api.get("/api/progress", params={"sha1": sha1})).json()
        assert [(p["nodeid"], p["percent"], p["done"]) for p in progress] == [
            ("eu_127.0.7.2", 12.0, False)
        ]


async def test_a_registered_address_cannot_make_the_hub_track_any_number_of_torrents(
    tmp_path: Path,
) -> None:
    """After one `register, an address made the hub track 2,000 info-hashes (12.6)."""
    async with hub_process(tmp_path, "--max-tracked-per-ip", "5") as (text, http):
        assert (await command(text, b"`register 9000", "127.0.7.2")).startswith(b"200 OK")
        transport = httpx.AsyncHTTPTransport(local_address="127.0.7.2")
        url = f"http://{HUB_IP}:{http}/announce"
        replies = []
        async with httpx.AsyncClient(transport=transport, timeout=5) as node:
            for n in range(8):
                info_hash = bytes([n]) * 20
                query = (
                    f"info_hash={quote_from_bytes(info_hash)}&peer_id={'-SG0001-' + 'x' * 12}"
                    "&port=6881&uploaded=0&downloaded=0&left=0&compact=1"
                )
                replies.append((await node.get(f"{url}?{query}")).content)
        tracked = [r for r in replies if b"failure reason" not in r]
        assert len(tracked) == 5
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://{HUB_IP}:{http}", headers=headers) as api:
            assert len((await api.get("/api/torrents")).json()) == 5
