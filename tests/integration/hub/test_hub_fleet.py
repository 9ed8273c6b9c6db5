"""Tracker and collector over real HTTP, and their state across a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import pytest

from smartget.hub.app import Hub, HubSettings, running

from .conftest import TOKEN

pytestmark = pytest.mark.asyncio

HASH = bytes.fromhex("b96c157579c90b199a9ce2b5ce391ee3592942e6")


def announce_url(hub: Hub, port: int, left: int = 100, event: str = "started") -> str:
    return (
        f"{hub.http_url}/announce?info_hash={quote_from_bytes(HASH)}"
        f"&peer_id={'-AR0001-' + str(port).zfill(12)}&port={port}&left={left}"
        f"&uploaded=0&downloaded=0&compact=1&event={event}"
    )


# Reports come from the address of the node they name (eu_127.0.0.2).
FROM_NODE = httpx.AsyncHTTPTransport(local_address="127.0.0.2")


def report(status: str, percent: str, nodeid: str = "eu_127.0.0.2") -> dict[str, object]:
    return {
        "event": "status_response",
        "nodeid": nodeid,
        "nodeip": "127.0.0.2",
        "nodezone": "eu",
        "status": status,
        "result": "",
        "retries": "0",
        "taskid": "",
        "traceback": "",
        "args": {
            "sha1": HASH.hex(),
            "percent": percent,
            "downrate": 10,
            "uprate": 0,
            "downtotal": 5,
            "uptotal": 0,
            "numpeers": 1,
            "numseeds": 1,
            "timeleft": 3,
            "torrentfile": "a.torrent",
        },
    }


async def test_tracker_refuses_unknown_then_serves_after_push_registers(hub: Hub) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        refused = fastbencode.bdecode((await client.get(announce_url(hub, 7001))).content)
        assert b"only the fleet's torrents" in refused[b"failure reason"]
        garbage = fastbencode.bdecode((await client.get(f"{hub.http_url}/announce?x=1")).content)
        assert garbage == {b"failure reason": b"missing info_hash"}
        added = await client.post(
            f"{hub.http_url}/api/torrents",
            json={"info_hash": HASH.hex()},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert added.status_code == 201
        first = fastbencode.bdecode((await client.get(announce_url(hub, 7001))).content)
        assert first[b"peers"] == b""
        second = fastbencode.bdecode((await client.get(announce_url(hub, 7002, left=0))).content)
        assert second[b"peers"] == bytes([127, 0, 0, 1]) + (7001).to_bytes(2, "big")
        assert (second[b"complete"], second[b"incomplete"]) == (1, 1)
        scrape = fastbencode.bdecode(
            (await client.get(f"{hub.http_url}/scrape?info_hash={quote_from_bytes(HASH)}")).content
        )
        assert scrape[b"files"][HASH] == {b"complete": 1, b"downloaded": 0, b"incomplete": 1}


async def test_collector_answers_success_when_done_and_remembers(tmp_path: Path) -> None:
    settings = HubSettings(
        data_dir=tmp_path, listen=("127.0.0.1", 0), http=("127.0.0.1", 0), token=TOKEN
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running(settings) as hub:
        hub.registry.register("127.0.0.2", 8090, hub.now())  # the reporter is a fleet node
        await hub.save()
        async with httpx.AsyncClient(
            base_url=hub.http_url, timeout=5, transport=FROM_NODE
        ) as client:
            reply = await client.post("/report_peerstatus", json=report("downloading", "42.5"))
            assert reply.json() == {"result": "received"}
            reply = await client.post("/report_peerstatus", json=report("seeding", "100.0"))
            assert reply.json() == {"result": "success"}
            bad = await client.post("/report_peerstatus", content=b"{oops")
            assert bad.status_code == 400
            assert bad.json()["result"] == "failed"
            assert "JSON" in bad.json()["traceback"]
            progress = (await client.get(f"/api/progress?sha1={HASH.hex()}", headers=auth)).json()
            assert [(p["nodeid"], p["percent"], p["done"]) for p in progress] == [
                ("eu_127.0.0.2", 100.0, True)
            ]
    # Restart: the finished download and the torrent (a fleet node reported it) are kept.
    async with running(settings) as hub:
        progress = await fetch_json(hub, "/api/progress", auth)
        assert [(p["nodeid"], p["done"]) for p in progress] == [("eu_127.0.0.2", True)]
        torrents = await fetch_json(hub, "/api/torrents", auth)
        assert [t["info_hash"] for t in torrents] == [HASH.hex()]


async def fetch_json(hub: Hub, path: str, headers: dict[str, str]) -> Any:
    async with httpx.AsyncClient(base_url=hub.http_url, timeout=5, headers=headers) as client:
        return (await client.get(path)).json()


async def test_progress_long_poll_answers_when_a_report_arrives(hub: Hub) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=hub.http_url, timeout=10, headers=auth) as client:
        first = await client.get(f"/api/progress?sha1={HASH.hex()}")
        seq = int(first.headers["X-Progress-Seq"])
        assert first.json() == []
        # Nothing new: the long-poll waits its time out, then answers the same.
        started = time.monotonic()
        idle = await client.get(f"/api/progress?sha1={HASH.hex()}&after={seq}&wait=0.3")
        assert time.monotonic() - started >= 0.29
        assert int(idle.headers["X-Progress-Seq"]) == seq
        # A report arriving meanwhile answers it at once, with the report in it.
        poll = asyncio.create_task(
            client.get(f"/api/progress?sha1={HASH.hex()}&after={seq}&wait=20")
        )
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=hub.http_url, transport=FROM_NODE) as node:
            sent = await node.post("/report_peerstatus", json=report("downloading", "42.5"))
        assert sent.json() == {"result": "received"}
        answered = await asyncio.wait_for(poll, timeout=5)
        assert time.monotonic() - started < 5
        assert int(answered.headers["X-Progress-Seq"]) == seq + 1
        assert [p["percent"] for p in answered.json()] == [42.5]
        bad = await client.get("/api/progress?wait=31")
        assert bad.status_code == 422
