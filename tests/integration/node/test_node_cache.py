"""Caches that clean themselves (issue 15): real nodes and libtorrent on 127.0.30.x.

A seed makes torrents of five files; a node with --cache-max downloads them one by
one (the first pinned), its file server serves one of them, and past cache-max the
least recently used unpinned content goes (data, .torrent, libtorrent), is listed in
GET /status and reported to the collector as "evicted"; the pinned one never goes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.helpers import wait_until

from .conftest import node_settings, random_file, serve, sha256, started, task

pytestmark = pytest.mark.asyncio

SIZE = 256 << 10
SEED, CACHED, COLLECTOR = "127.0.30.2", "127.0.30.3", "127.0.30.1"


@pytest_asyncio.fixture
async def collector() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    reports: list[dict[str, Any]] = []

    async def report(request: Request) -> JSONResponse:
        reports.append(await request.json())
        return JSONResponse({"result": "success"})

    async with serve(
        Starlette(routes=[Route("/report", report, methods=["POST"])]), COLLECTOR
    ) as url:
        yield f"{url}/report", reports


async def test_least_recently_used_unpinned_content_is_evicted(
    tmp_path: Path, collector: tuple[str, list[dict[str, Any]]]
) -> None:
    report_url, reports = collector
    names = ["a", "b", "c", "d", "e"]
    cache_max = 3 * SIZE + 20_000  # three files fit, four do not
    cache_low = 3 * SIZE + 2_000  # so one eviction brings four back to three
    async with started(node_settings(tmp_path, SEED)) as (seed, seed_api):
        made: dict[str, dict[str, Any]] = {}
        for name in names:
            random_file(seed.settings.wwwroot / "c" / f"{name}.bin", SIZE)
            body = (
                await seed_api.post(
                    "/maketorrent", json=task("maketorrent", filename=f"c/{name}.bin")
                )
            ).json()
            assert body["result"] == "success", body
            made[name] = body["args"]
        settings = node_settings(
            tmp_path,
            CACHED,
            cache_max=cache_max,
            cache_low=cache_low,
            report_url=(report_url,),
            report_interval=1.0,
        )
        async with started(settings) as (node, api), httpx.AsyncClient() as plain:
            www = node.settings.wwwroot / "c"

            async def download(name: str, **extra: Any) -> None:
                args = made[name]
                reply = await api.post(
                    "/download",
                    json=task("download", name, torrentfileurl=args["torrentfileurl"], **extra),
                )
                assert reply.json()["result"] == "success", reply.json()
                node.engine.connect_peer(args["sha1"], (SEED, seed.bt_port))
                await node.engine.wait_complete(args["sha1"], 30)

            async def evicted() -> list[str]:
                status = (await api.get("/status")).json()
                return [e["sha1"] for e in status["cache"]["evicted"]]

            await download("a", pin=3600)  # the oldest, pinned
            await download("b")
            await download("c")
            assert node.agent.cache.total == 3 * SIZE
            # b is served by the node's file server: a use, so c is now the LRU unpinned
            served = await plain.get(f"{node.files_url}/c/b.bin")
            assert served.status_code == 200
            await download("d")  # four past cache-max: c goes, a is pinned, b was used

            sha1 = {name: made[name]["sha1"] for name in names}

            async def c_gone() -> bool:
                return sha1["c"] in await evicted()

            await wait_until(c_gone, 15, "c evicted")
            assert not (www / "c.bin").exists()
            assert not (www / "c.bin.torrent").exists()
            assert not node.engine.has(sha1["c"])
            for name in ("a", "b", "d"):
                assert sha256(www / f"{name}.bin") == sha256(
                    seed.settings.wwwroot / "c" / f"{name}.bin"
                )
                assert node.engine.has(sha1[name])
            assert node.agent.cache.total == 3 * SIZE <= cache_low

            await download("e")  # past it again: b (used before d) goes, never a

            async def b_gone() -> bool:
                return sha1["b"] in await evicted()

            await wait_until(b_gone, 15, "b evicted")
            assert await evicted() == [sha1["c"], sha1["b"]]
            assert (www / "a.bin").exists()
            assert node.engine.has(sha1["a"])
            status = (await api.get("/status")).json()
            assert status["cache"]["max"] == cache_max
            assert status["cache"]["bytes"] == 3 * SIZE
            assert {t["sha1"] for t in status["torrents"]} == {sha1[n] for n in "ade"}

            def reported_evicted() -> set[str]:
                return {r["args"]["sha1"] for r in reports if r["status"] == "evicted"}

            await wait_until(
                lambda: reported_evicted() == {sha1["c"], sha1["b"]}, 15, "evictions reported"
            )
            # Once reported, the evicted rows are gone from the node's state.
            await wait_until(
                lambda: node.agent.state.get(sha1["b"]) is None, 15, "evicted rows dropped"
            )
            # Asked for again, evicted content comes back (from the seed).
            await download("c")
            assert sha256(www / "c.bin") == sha256(seed.settings.wwwroot / "c" / "c.bin")


async def test_bad_watermarks_fail_at_start(tmp_path: Path) -> None:
    from smartget.errors import ConfigError

    settings = node_settings(tmp_path, "127.0.30.4", cache_max=1000, cache_low=2000)
    with pytest.raises(ConfigError, match="above --cache-max"):
        async with started(settings):
            pass
