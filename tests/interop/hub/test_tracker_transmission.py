"""Debian's Transmission 3 against the hub's UDP tracker (BEP 15, issue 18).

A real hub, a torrent whose only announce URL is the hub's ``udp://`` tracker, a
libtorrent seed and a transmission-daemon with no DHT, PEX, LPD or web seeds: the
only way the two learn of each other is the tracker. Transmission 3 drops tracker peers
in 127/8 as "martian" (isMartianAddr in libtransmission/net.c) but accepts incoming
loopback peers, so the seed, which hears of Transmission from the same tracker, dials
it. Checked: the file arrives byte-exact, the seed's connection came from the tracker,
the hub's tracker saw Transmission's announces (listed as a leecher, then as a seed
after its ``completed``), and Transmission read the announce and scrape replies; the
UDP tracker refused or dropped none of its datagrams.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import libtorrent as lt
import pytest
import pytest_asyncio

from smartget.hub.app import Hub, HubSettings, running
from tests.helpers import wait_until
from tests.interop.node.test_node_transmission import BINARIES, Daemon, transmission

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.interop,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        any(shutil.which(name) is None for name in BINARIES),
        reason="needs Debian's Transmission (apt-get install transmission-daemon transmission-cli)",
    ),
]

HUB_IP, SEED_IP, TRANSMISSION_IP = "127.0.47.1", "127.0.47.2", "127.0.47.3"
SIZE = 3 * 1024 * 1024 + 12345  # a last piece shorter than the others
TOKEN = "transmission-interop"
# Transmission 3.00 asks for blocks only after its 10 s rechoke pulse (see the node's
# Transmission test), then 3 MiB from an uncapped peer take a few seconds.
DOWNLOAD_WITHIN = 60.0
PEERS_GOT = re.compile(r"Got a list of (\d+) peers")
SCRAPED = re.compile(r"Tracker had (\d+) seeders and (\d+) leechers")


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        listen=(HUB_IP, 0),
        http=(HUB_IP, 0),
        token=TOKEN,
        udp_tracker=(HUB_IP, 0),
        no_dht=True,
    )
    async with running(settings) as started:
        yield started


def make_torrent(path: Path, tracker: str) -> tuple[Path, Any]:
    """A v1 torrent of a random file, announcing only to ``tracker``, no web seeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(SIZE))
    creator = lt.create_torrent(lt.list_files(str(path)), 0, lt.create_torrent.v1_only)
    creator.add_tracker(tracker, 0)
    creator.set_priv(False)
    lt.set_piece_hashes(creator, str(path.parent))
    data = lt.bencode(creator.generate())
    torrent = path.with_suffix(".torrent")
    torrent.write_bytes(data)
    ti = lt.torrent_info(lt.bdecode(data))
    assert b"url-list" not in data  # no web seeds
    return torrent, ti


def seed_session() -> Any:
    return lt.session(
        {
            "listen_interfaces": f"{SEED_IP}:0",
            "outgoing_interfaces": SEED_IP,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "alert_mask": 0,
        }
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def transmission_peers(peers: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    return [p for p in peers if p.get("ip") == TRANSMISSION_IP and p.get("port") == port]


async def test_transmission_downloads_from_a_seed_found_through_the_udp_tracker(
    hub: Hub, tmp_path: Path
) -> None:
    assert hub.udp_tracker_address is not None
    udp_url = f"udp://{HUB_IP}:{hub.udp_tracker_address[1]}/announce"
    torrent, ti = make_torrent(tmp_path / "seed" / "clip.bin", udp_url)
    source = tmp_path / "seed" / "clip.bin"
    info_hash = str(ti.info_hashes().v1)
    async with httpx.AsyncClient(
        base_url=hub.http_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ) as api:
        added = await api.post("/api/torrents", json={"info_hash": info_hash})
        assert added.status_code == 201, added.text

        async def swarm() -> dict[str, Any]:
            listed = (await api.get("/api/torrents")).json()
            return next(t for t in listed if t["info_hash"] == info_hash)

        seed = seed_session()
        atp = lt.add_torrent_params()
        atp.ti = ti
        atp.save_path = str(source.parent)
        atp.flags |= lt.torrent_flags.seed_mode
        handle = seed.add_torrent(atp)
        try:
            await wait_until(lambda: _counts(swarm, (1, 0)), 20, "the seed's UDP announce (1 seed)")
            udp_before = hub.udp_tracker.statistics()["announces"]  # type: ignore[union-attr]
            out = tmp_path / "transmission-out"
            async with transmission(tmp_path, TRANSMISSION_IP, out) as daemon:
                await daemon.remote("-a", str(torrent))
                port = daemon.peer[1]

                # Transmission's started announce, over UDP: listed as a leecher at the
                # address and port it listens on.
                async def transmission_listed(seeding: bool) -> bool:
                    found = transmission_peers((await swarm())["peers"], port)
                    return bool(found) and all((p.get("left") == 0) == seeding for p in found)

                await _wait(daemon, lambda: transmission_listed(False), 30, "its announce")
                assert hub.udp_tracker.statistics()["announces"] > udp_before  # type: ignore[union-attr]
                assert (await swarm())["incomplete"] == 1
                # It parsed the reply: the seed's address (which it will not dial itself).
                await _wait(daemon, lambda: _got_peers(daemon), 15, "the announce reply")

                # The seed asks the tracker again and dials the leecher it lists.
                def reannounce() -> None:
                    handle.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)

                start = time.monotonic()
                await daemon.wait_done(within=DOWNLOAD_WITHIN, nudge=_every(reannounce, 5.0))
                print(f"Transmission done {time.monotonic() - start:.1f} s after it announced")
                from_tracker = [
                    p
                    for p in handle.get_peer_info()
                    if p.ip[0] == TRANSMISSION_IP and p.source & lt.peer_info.tracker
                ]
                assert from_tracker, [(p.ip, p.source) for p in handle.get_peer_info()]
                got = out / "clip.bin"
                await wait_until(
                    lambda: got.is_file() and sha256(got) == sha256(source),
                    10,
                    "Transmission's copy to match the source byte for byte",
                )
                # Its completed announce, over UDP: now a seed, one download counted.
                await _wait(daemon, lambda: transmission_listed(True), 20, "its completed")
                final = await swarm()
                assert (final["complete"], final["incomplete"], final["downloaded"]) == (2, 0, 1)
                # Its scrape was answered too, and nothing it sent was refused or dropped.
                await _wait(daemon, lambda: _scraped(daemon), 15, "a scrape reply")
                stats = hub.udp_tracker.statistics()  # type: ignore[union-attr]
                assert (stats["errors"], stats["dropped"]) == (0, 0), stats
        finally:
            await asyncio.to_thread(seed.pause)


async def _counts(swarm: Any, expected: tuple[int, int]) -> bool:
    found = await swarm()
    return (found["complete"], found["incomplete"]) == expected


async def _got_peers(daemon: Daemon) -> bool:
    found = PEERS_GOT.search(await daemon.remote("-t", "1", "-it"))
    return found is not None and int(found.group(1)) >= 1


async def _scraped(daemon: Daemon) -> bool:
    return SCRAPED.search(await daemon.remote("-t", "1", "-it")) is not None


async def _wait(daemon: Daemon, predicate: Any, within: float, what: str) -> None:
    """wait_until, with Transmission's view of the tracker in the failure."""
    try:
        await wait_until(predicate, within, f"Transmission: {what}")
    except AssertionError as exc:
        trackers = await daemon.remote("-t", "1", "-it")
        raise AssertionError(f"{exc}\ntrackers:\n{trackers}\nlog:\n{daemon.log_tail()}") from None


def _every(action: Any, seconds: float) -> Any:
    """``action`` at most once every ``seconds`` (Daemon.wait_done nudges each second)."""
    last = [-1e9]

    def nudge() -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            action()

    return nudge
