"""The libtorrent adapter on real sockets: rate limits on loopback, multi-file torrents."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from smartget.node.engine import load_torrent
from smartget.node.maker import make_torrent
from smartget.node.policy import SWARM_CONNECTIONS

from .conftest import node_settings, random_file, sha256, started, task

pytestmark = pytest.mark.asyncio


async def test_upload_limit_applies_to_loopback_peers(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, "127.0.3.60", upload_limit=512 << 10, disk_threads=3)
    async with (
        started(settings) as (seed, seed_api),
        started(node_settings(tmp_path, "127.0.3.61")) as (leech, leech_api),
    ):
        random_file(seed.settings.wwwroot / "r.bin", 2 << 20)
        made = (
            await seed_api.post("/maketorrent", json=task("maketorrent", filename="r.bin"))
        ).json()
        sha1 = made["args"]["sha1"]
        body = (
            await leech_api.post(
                "/download", json=task("download", torrentfileurl=made["args"]["torrentfileurl"])
            )
        ).json()
        assert body["result"] == "success", body
        start = time.monotonic()
        leech.engine.connect_peer(sha1, ("127.0.3.60", seed.bt_port))
        await leech.engine.wait_complete(sha1, 30)
        elapsed = time.monotonic() - start
        # 2 MiB at 512 KiB/s: about 4 s; unlimited on loopback it takes well under 1 s.
        assert elapsed > 2.5, f"the upload limit did not apply: {elapsed:.2f} s"
        # Each torrent keeps at most SWARM_CONNECTIONS peers (a made one and a downloaded).
        for node in (seed, leech):
            assert node.engine.handles[sha1].max_connections() == SWARM_CONNECTIONS
        # --disk-threads is libtorrent's aio_threads (2 by default, libtorrent's 10)
        assert seed.engine._session.get_settings()["aio_threads"] == 3
        assert leech.engine._session.get_settings()["aio_threads"] == 2


async def test_multi_file_torrent_lands_at_the_url_path(
    tmp_path: Path, origin: tuple[Path, str]
) -> None:
    origin_dir, origin_url = origin
    bundle = origin_dir / "src" / "bundle-v1"
    random_file(bundle / "a.bin", 300_000)
    random_file(bundle / "sub" / "b.bin", 200_000)
    made = await asyncio.to_thread(make_torrent, bundle)
    (origin_dir / "pkg").mkdir()
    (origin_dir / "pkg" / "bundle.torrent").write_bytes(made.data)
    async with (
        started(node_settings(tmp_path, "127.0.3.62")) as (seed, _),
        started(node_settings(tmp_path, "127.0.3.63")) as (node, api),
    ):
        seed.engine.add(load_torrent(made.data), bundle.parent, seed_mode=True)
        body = (
            await api.post(
                "/download",
                json=task("download", torrentfileurl=f"{origin_url}/pkg/bundle.torrent"),
            )
        ).json()
        assert body["result"] == "success", body
        node.engine.connect_peer(made.sha1, ("127.0.3.62", seed.bt_port))
        await node.engine.wait_complete(made.sha1, 30)
        target = node.settings.wwwroot / "pkg" / "bundle"
        assert sha256(target / "a.bin") == sha256(bundle / "a.bin")
        assert sha256(target / "sub" / "b.bin") == sha256(bundle / "sub" / "b.bin")
        # delete removes the whole directory and the .torrent, and prunes pkg/.
        body = (
            await api.post(
                "/delete", json=task("delete", torrentfileurl=f"{origin_url}/pkg/bundle.torrent")
            )
        ).json()
        assert body["result"] == "success", body
        assert list(node.settings.wwwroot.iterdir()) == []


async def test_a_piece_is_never_dropped_while_the_torrent_is_checked(tmp_path: Path) -> None:
    """libtorrent drops some pieces handed to it (add_piece) while a torrent checks its
    resume data, the first 10-100 ms after it is added: the engine refuses them, and
    ``checked`` waits until they are taken."""
    source = random_file(tmp_path / "src" / "p.bin", 1 << 20)
    made = await asyncio.to_thread(make_torrent, source)
    length = load_torrent(made.data).piece_length()
    data = source.read_bytes()
    pieces = [data[i : i + length] for i in range(0, len(data), length)]
    trials, refused = 20, 0
    async with started(node_settings(tmp_path, "127.0.3.64")) as (node, _):
        engine = node.engine
        for trial in range(trials):
            sha1 = engine.add(load_torrent(made.data), tmp_path / f"dst{trial}")
            early = [engine.add_piece(sha1, index, pieces[index]) for index in range(4)]
            refused += early.count(False)
            assert await engine.checked(sha1, within=10)
            for index, piece in enumerate(pieces):
                if index >= len(early) or not early[index]:
                    assert engine.add_piece(sha1, index, piece)
            # every piece taken is had: the torrent completes from them alone
            await engine.wait_complete(sha1, 10)
            assert await engine.remove(sha1)
    print(f"{refused} of {4 * trials} early pieces refused while the torrent was checked")
