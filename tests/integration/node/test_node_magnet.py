"""Downloads by magnet and by bare info-hash (issue 14): real nodes on 127.0.31-32.x.

One node seeds; another downloads by a magnet whose tr= names the tracker (the torrent
and the node know no tracker); then, with no hub and no tracker at all, a third node
downloads by info-hash alone and finds the seed through libtorrent's DHT, joined
through another node's BitTorrent port (--dht-bootstrap), as a fleet does whose hub is
down.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from smartget.dht.driver import DHT
from smartget.node.engine import load_torrent
from smartget.node.service import Node
from tests.helpers import wait_until

from .conftest import Tracker, node_settings, random_file, serve, sha256, started, task

pytestmark = pytest.mark.asyncio

SIZE = 1_500_000


async def _seed(api: httpx.AsyncClient, node: Node, **extra: object) -> dict[str, str]:
    random_file(node.settings.wwwroot / "m" / "f.bin", SIZE)
    body = (
        await api.post("/maketorrent", json=task("maketorrent", filename="m/f.bin", **extra))
    ).json()
    assert body["result"] == "success", body
    args: dict[str, str] = body["args"]
    return args


async def test_download_by_magnet_with_the_tracker_in_it(tmp_path: Path) -> None:
    tracker = Tracker()
    async with serve(tracker.app(), "127.0.31.1") as tracker_url:
        announce = f"{tracker_url}/announce"
        seed_settings = node_settings(tmp_path, "127.0.31.2", dht=False)
        async with started(seed_settings) as (seed, seed_api):
            made = await _seed(seed_api, seed, trackers=[announce])
            sha1 = made["sha1"]
            async with started(node_settings(tmp_path, "127.0.31.3", dht=False)) as (node, api):
                # Hostile or malformed magnets fail the task with a clear reason.
                for bad, reason in (
                    (f"magnet:?xt=urn:btih:{sha1}&ws=http://127.0.31.9/x", "not taken"),
                    (f"magnet:?xt=urn:btih:{sha1}&tr=file:///etc/passwd", "must be http"),
                    ("magnet:?xt=urn:btih:1234", "40 hex digits"),
                ):
                    body = (await api.post("/download", json=task("download", magnet=bad))).json()
                    assert body["result"] == "failed"
                    assert reason in body["traceback"]
                magnet = f"magnet:?xt=urn:btih:{sha1.upper()}&dn=f.bin&tr={announce}"
                body = (
                    await api.post("/download", json=task("download", "m1", magnet=magnet))
                ).json()
                assert body["result"] == "success", body
                assert body["status"] == "Initial startup"
                data = node.settings.wwwroot / "f.bin"
                assert body["args"]["filename"] == str(data)
                assert body["args"]["sha1"] == sha1
                await node.engine.wait_complete(sha1, 60)
                assert sha256(data) == sha256(seed.settings.wwwroot / "m" / "f.bin")
                # Its .torrent is written beside it, the same torrent, and served.
                torrent = Path(body["args"]["torrentfile"])
                await wait_until(torrent.exists, 10, "the magnet's .torrent written")
                written = await asyncio.to_thread(torrent.read_bytes)
                assert str(load_torrent(written).info_hashes().v1) == sha1
                async with httpx.AsyncClient() as plain:
                    served = await plain.get(body["args"]["torrentfileurl"])
                assert served.content == written
                # Asked again by info-hash alone: already here.
                again = (await api.post("/download", json=task("download", sha1=sha1))).json()
                assert again["result"] == "success"
                assert again["args"]["already"] is True
        assert tracker.announces > 0


@pytest.mark.timeout(300)  # DHT lookups of a young table can take a minute
async def test_download_by_info_hash_through_the_dht_with_the_hub_down(tmp_path: Path) -> None:
    # The hub's DHT (smartget's own, as `smartget hub` runs it) is where the fleet joins.
    hub_dht = DHT("127.0.32.1", 0)
    await hub_dht.start()
    try:
        joined = (("127.0.32.1", hub_dht.bind_port),)
        async with (
            started(node_settings(tmp_path, "127.0.32.2", dht_bootstrap=joined)) as (
                seed,
                seed_api,
            ),
            started(node_settings(tmp_path, "127.0.32.3", dht_bootstrap=joined)) as (other, _),
        ):
            await wait_until(
                lambda: seed.engine.dht_nodes() > 0 and other.engine.dht_nodes() > 0,
                30,
                "the seed and another node in each other's DHT",
            )
            made = await _seed(seed_api, seed)  # no trackers: only the DHT knows it
            sha1 = made["sha1"]
            seed_addr = ("127.0.32.2", seed.bt_port)

            async def announced() -> bool:  # some node of the fleet keeps the seed's announce
                return seed_addr in await hub_dht.get_peers(bytes.fromhex(sha1), max_wait=2)

            # At once when added; else at the engine's next announce (every 60 s).
            await wait_until(announced, 75, "the seed's announce stored in the fleet's DHT")
            await hub_dht.stop()  # the hub is down from here on
            # The seed announces again now (else within 60 s), so the announce is also
            # kept by a node that stays up, not only by the hub's.
            seed.engine.handles[sha1].force_dht_announce()
            # A late node joins through another node's BitTorrent port (libtorrent keeps
            # a bootstrap node out of its routing table, so it learns the others from it)
            # and asks for the info-hash alone.
            late = node_settings(
                tmp_path, "127.0.32.4", dht_bootstrap=(("127.0.32.2", seed.bt_port),)
            )
            async with started(late) as (node, api):
                await wait_until(lambda: node.engine.dht_nodes() > 0, 30, "the late node joined")
                body = (
                    await api.post(
                        "/download", json=task("download", sha1=sha1, filename="x/f.bin")
                    )
                ).json()
                assert body["result"] == "success", body

                async def has_peers() -> bool:
                    torrents = (await api.get("/status")).json()["torrents"]
                    entry = next((t for t in torrents if t["sha1"] == sha1), None)
                    return entry is not None and entry["numpeers"] > 0

                await wait_until(has_peers, 90, "the seed found through the DHT")
                await node.engine.wait_complete(sha1, 60)
                data = node.settings.wwwroot / "x" / "f.bin"
                assert sha256(data) == sha256(seed.settings.wwwroot / "m" / "f.bin")
                assert node.engine.statistics()["metadata_received"] == 1
    finally:
        await hub_dht.stop()
