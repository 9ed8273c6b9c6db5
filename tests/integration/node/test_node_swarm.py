"""Three real nodes on 127.0.3.x: maketorrent on one, download on two, data equal."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import node_settings, random_file, sha256, started, task

pytestmark = pytest.mark.asyncio

SEED_FIELDS = {
    "taskid",
    "nodeid",
    "nodezone",
    "nodeip",
    "event",
    "status",
    "result",
    "retries",
    "traceback",
    "args",
}


async def test_maketorrent_then_two_downloads(tmp_path: Path, origin: tuple[Path, str]) -> None:
    origin_dir, origin_url = origin
    source = random_file(origin_dir / "fhs" / "pub" / "fhs-2.3.pdf", 3_000_123)
    fileurl = f"{origin_url}/fhs/pub/fhs-2.3.pdf"
    async with started(node_settings(tmp_path, "127.0.3.2")) as (seed, api):
        reply = await api.post(
            "/maketorrent", json=task("maketorrent", "13241324", fileurl=fileurl)
        )
        assert reply.status_code == 200
        made = reply.json()
        assert set(made) == SEED_FIELDS
        assert made["result"] == "success", made
        assert made["event"] == "maketorrent_response"
        assert made["nodeid"] == "beijing_127.0.3.2"
        assert made["nodeip"] == "127.0.3.2"
        assert made["nodezone"] == "beijing"
        assert made["taskid"] == "13241324"
        assert made["retries"] == "0"
        args = made["args"]
        local = seed.agent.roots.wwwroot / "fhs" / "pub" / "fhs-2.3.pdf"
        assert args["filename"] == str(local)
        assert args["filesize"] == 3_000_123
        assert args["torrentfile"] == str(local) + ".torrent"
        assert args["torrentfileurl"] == f"{seed.files_url}/fhs/pub/fhs-2.3.pdf.torrent"
        assert len(args["sha1"]) == 40
        assert sha256(local) == sha256(source)
        # The .torrent is served by the file server, and is v1-only with the web seed.
        async with httpx.AsyncClient() as plain:
            torrent = await plain.get(args["torrentfileurl"])
        assert torrent.status_code == 200
        assert b"url-list" in torrent.content
        assert b"piece layers" not in torrent.content

        # From here on the swarm must do without the origin: the seed serves it.
        source.unlink()
        sha1 = args["sha1"]
        async with (
            started(node_settings(tmp_path, "127.0.3.3")) as (b, api_b),
            started(node_settings(tmp_path, "127.0.3.4")) as (c, api_c),
        ):
            for n, client in ((b, api_b), (c, api_c)):
                reply = await client.post(
                    "/download",
                    json=task("dowload", sha1, torrentfileurl=args["torrentfileurl"]),
                )
                body = reply.json()
                assert body["result"] == "success", body
                assert body["event"] == "download_response"
                assert body["status"] == "Initial startup"
                assert body["args"]["sha1"] == sha1
                expected = n.agent.roots.wwwroot / "fhs" / "pub" / "fhs-2.3.pdf"
                assert body["args"]["filename"] == str(expected)
                assert "filenmae" not in body["args"]
                n.engine.connect_peer(sha1, ("127.0.3.2", seed.bt_port))
            await b.engine.wait_complete(sha1, 60)
            await c.engine.wait_complete(sha1, 60)
            for n in (b, c):
                data = n.agent.roots.wwwroot / "fhs" / "pub" / "fhs-2.3.pdf"
                assert sha256(data) == sha256(local)
                assert (data.parent / "fhs-2.3.pdf.torrent").read_bytes() == torrent.content
                assert n.engine.status(sha1).status == "seeding"

            # The same torrent again: success, and it says it was already there.
            again = await api_b.post(
                "/puttask", json=task("download", "x", torrentfileurl=args["torrentfileurl"])
            )
            assert again.json()["result"] == "success"
            assert again.json()["args"]["already"] is True

            # /status lists it with seed 003's figures.
            status = (await api_c.get("/status")).json()
            assert status["torrents"][0]["sha1"] == sha1
            assert status["torrents"][0]["percent"] == 100.0


async def test_maketorrent_of_a_file_already_here(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, "127.0.3.5", trackers=("http://127.0.3.1:1/announce",))
    async with started(settings) as (node, api):
        random_file(node.settings.wwwroot / "a" / "b.bin", 70_000)
        body = (
            await api.post(
                "/maketorrent",
                json=task("maketorrent", fileurl="http://127.0.3.1:9/a/b.bin"),
            )
        ).json()
        assert body["result"] == "success", body
        assert body["args"]["trackers"] == ["http://127.0.3.1:1/announce"]
        assert node.engine.status(body["args"]["sha1"]).status == "seeding"
        # Explicit filename (relative to wwwroot), no fileurl at all.
        named = (
            await api.post(
                "/maketorrent",
                json=task("maketorrent", filename="a/b.bin", trackers=["http://t/announce"]),
            )
        ).json()
        assert named["result"] == "success", named
        # Trackers and web seeds are outside the info dict: same sha1.
        assert named["args"]["sha1"] == body["args"]["sha1"]


async def test_fetch_failure_is_reported(tmp_path: Path, origin: tuple[Path, str]) -> None:
    _, origin_url = origin
    async with started(node_settings(tmp_path, "127.0.3.6")) as (_, api):
        body = (
            await api.post(
                "/maketorrent",
                json={
                    "taskid": "1",
                    "event": "maketorrent",
                    "max_retries": "1",
                    "args": {"fileurl": f"{origin_url}/missing.bin"},
                },
            )
        ).json()
        assert body["result"] == "failed"
        assert "404" in body["traceback"]
