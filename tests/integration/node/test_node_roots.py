"""Issue 17 (seed 003): a task's ``wwwroot`` names one of the node's storage roots
(``--wwwroot`` repeatable, the first the default); the file server serves them all."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import node_settings, random_file, sha256, started, task

pytestmark = pytest.mark.asyncio


async def test_tasks_store_in_the_root_they_name(tmp_path: Path, origin: tuple[Path, str]) -> None:
    origin_dir, origin_url = origin
    source = random_file(origin_dir / "video" / "a.ts", 400_000)
    disk2 = tmp_path / "disk2"
    settings = node_settings(tmp_path, "127.0.3.80", extra_roots=(disk2,))
    async with started(settings) as (seed, api):
        made = (
            await api.post(
                "/maketorrent",
                json=task("maketorrent", fileurl=f"{origin_url}/video/a.ts", wwwroot=str(disk2)),
            )
        ).json()
        assert made["result"] == "success", made
        stored = disk2.resolve() / "video" / "a.ts"
        assert made["args"]["filename"] == str(stored)
        assert sha256(stored) == sha256(source)
        assert not (settings.wwwroot / "video").exists()
        # The file server serves every root, so peers and web seeds reach it.
        url = made["args"]["torrentfileurl"]
        assert url == f"{seed.files_url}/video/a.ts.torrent"
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(url)).status_code == 200
            assert (await plain.get(f"{seed.files_url}/video/a.ts")).content == source.read_bytes()
        # A root the node was not given is refused.
        other = tmp_path / "elsewhere"
        other.mkdir()
        refused = (
            await api.post(
                "/maketorrent",
                json=task("maketorrent", fileurl=f"{origin_url}/video/a.ts", wwwroot=str(other)),
            )
        ).json()
        assert refused["result"] == "failed"
        assert "outside the node's roots" in refused["traceback"]

        sha1 = made["args"]["sha1"]
        peer_disk = tmp_path / "peer-disk2"
        async with started(node_settings(tmp_path, "127.0.3.81", extra_roots=(peer_disk,))) as (
            peer,
            peer_api,
        ):
            body = (
                await peer_api.post(
                    "/download", json=task("download", torrentfileurl=url, wwwroot=str(peer_disk))
                )
            ).json()
            assert body["result"] == "success", body
            peer.engine.connect_peer(sha1, ("127.0.3.80", seed.bt_port))
            await peer.engine.wait_complete(sha1, 60)
            assert sha256(peer_disk / "video" / "a.ts") == sha256(source)
            # delete names the root too, and prunes only inside it.
            body = (
                await peer_api.post(
                    "/delete", json=task("delete", torrentfileurl=url, wwwroot=str(peer_disk))
                )
            ).json()
            assert body["result"] == "success", body
            assert not (peer_disk / "video").exists()
            assert peer_disk.is_dir()
