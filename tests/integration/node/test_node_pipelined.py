"""A pipelined push, the nodes' half, over real HTTP and real libtorrent: the origin
(``smartget.origin``'s app) publishes the file's torrent; one node makes the push's
torrent from it, the others download that; each fetches one stripe from the origin
while it trades, every piece checked and handed to libtorrent as it comes. The origin
sends each byte once. And what goes wrong is said clearly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartget.node.maker import make_torrent, piece_length_for
from smartget.node.prefetch import stripe_pieces
from smartget.node.service import Node
from smartget.origin import ByteCounter, create_app
from tests.helpers import wait_until

from .conftest import node_settings, random_file, serve, started, task, trade_to_completion

pytestmark = pytest.mark.asyncio

ORIGIN = "127.0.3.220"
NODES = ("127.0.3.221", "127.0.3.222", "127.0.3.223")
LONE = "127.0.3.224"
SIZE = (6 << 20) + 12_345  # 193 pieces of 32 KiB, the last one short
HOLD = 60.0  # web seeds held that long: the origin serves only the stripes


async def post(api: httpx.AsyncClient, event: str, taskid: str = "t", **args: Any) -> Any:
    reply = await api.post(f"/{event}", json=task(event, taskid, **args))
    assert reply.status_code == 200, reply.text
    return reply.json()


def big_file(tmp_path: Path) -> tuple[Path, ByteCounter]:
    """The origin's file, and the origin's app (its count of bytes sent)."""
    root = tmp_path / "origin"
    return random_file(root / "media" / "big.bin", SIZE), create_app(root)


@contextlib.asynccontextmanager
async def three_nodes(
    tmp_path: Path, origin: ByteCounter
) -> AsyncIterator[tuple[str, tuple[Node, httpx.AsyncClient], ...]]:
    """The origin served, and three nodes whose web seeds stay held (HOLD)."""
    async with (
        serve(origin, ORIGIN) as origin_url,
        started(node_settings(tmp_path, NODES[0], webseed_fallback=HOLD)) as first,
        started(node_settings(tmp_path, NODES[1], webseed_fallback=HOLD)) as second,
        started(node_settings(tmp_path, NODES[2], webseed_fallback=HOLD)) as third,
    ):
        yield origin_url, first, second, third


async def status_entry(api: httpx.AsyncClient, sha1: str) -> dict[str, Any]:
    status = (await api.get("/status")).json()
    (entry,) = [t for t in status["torrents"] if t["sha1"] == sha1]
    return dict(entry)


async def sources(api: httpx.AsyncClient, sha1: str) -> dict[str, Any]:
    return dict((await status_entry(api, sha1))["sources"])


async def test_the_origins_torrent_makes_the_push_and_each_node_feeds_its_stripe(
    tmp_path: Path,
) -> None:
    source, origin = big_file(tmp_path)
    began = time.time()
    async with three_nodes(tmp_path, origin) as (origin_url, (n0, a0), (n1, a1), (n2, a2)):
        nodes = (n0, n1, n2)
        fileurl = f"{origin_url}/media/big.bin"
        async with httpx.AsyncClient(timeout=10) as client:  # what the origin publishes
            published = await client.get(f"{fileurl}.torrent")
        assert published.status_code == 200
        assert published.headers["content-type"] == "application/x-bittorrent"
        file_sha1 = (await asyncio.to_thread(make_torrent, source)).sha1
        runs = [stripe_pieces(SIZE, piece_length_for("big.bin", SIZE), i, 3) for i in range(3)]

        made = await post(
            a0, "maketorrent", "m", fileurl=fileurl, origin_torrent=f"{fileurl}.torrent",
            stripe=0, stripes=3,
        )  # fmt: skip
        assert made["result"] == "success", made
        assert made["status"] == "Initial startup"
        sha1 = made["args"]["sha1"]
        assert sha1 == file_sha1  # the torrent the file itself would make
        assert made["args"]["fetching"] == list(runs[0])
        for i, api in ((1, a1), (2, a2)):
            reply = await post(
                api, "download", f"d{i}", torrentfileurl=made["args"]["torrentfileurl"],
                stripe=i, stripes=3, fetch_from=fileurl,
            )  # fmt: skip
            assert reply["result"] == "success", reply
            assert reply["args"]["fetching"] == list(runs[i])
        await trade_to_completion(nodes, sha1, source, "media/big.bin")
        # Each byte about once from the origin (a node done first may help with another's
        # stripe: a segment twice where they meet), its torrent twice; no web seed used.
        torrents = len(published.content) * 2
        assert SIZE + torrents <= origin.bytes_sent <= 1.1 * SIZE + torrents
        fed = 0
        for api in (a0, a1, a2):
            got = await sources(api, sha1)
            assert got["stripe"] == got["web"]
            assert got["fallback"] == ""
            fed += got["stripe"]
        assert fed == origin.bytes_sent - torrents  # every byte fetched was counted
        for api in (a0, a1, a2):  # when each node saw it complete (the lab times pushes so)
            assert began <= (await status_entry(api, sha1))["completed_at"] <= time.time()


async def test_a_stripe_nobody_fetches_is_fetched_by_the_others_once_their_own_is_in(
    tmp_path: Path,
) -> None:
    source, origin = big_file(tmp_path)
    async with three_nodes(tmp_path, origin) as (origin_url, (n0, a0), (n1, a1), (n2, a2)):
        fileurl = f"{origin_url}/media/big.bin"
        made = await post(
            a0, "maketorrent", "m", fileurl=fileurl, origin_torrent=f"{fileurl}.torrent",
            stripe=0, stripes=3,
        )  # fmt: skip
        assert made["result"] == "success", made
        sha1 = made["args"]["sha1"]
        url = made["args"]["torrentfileurl"]
        # Node 1 downloads but fetches no stripe (as if its fetch had failed).
        assert (await post(a1, "download", "d1", torrentfileurl=url))["result"] == "success"
        reply = await post(
            a2, "download", "d2", torrentfileurl=url, stripe=2, stripes=3, fetch_from=fileurl
        )
        assert reply["result"] == "success", reply
        await trade_to_completion((n0, n1, n2), sha1, source, "media/big.bin")
        # Stripe 1 came from the origin through nodes 0 and 2, about once: both may take
        # the stalled stripe from its start at the same moment and fetch its first
        # segments twice (seen: 1.14 x SIZE once in ~100 runs), as in the lab's faults.
        assert SIZE <= origin.bytes_sent <= 1.2 * SIZE + 2 * (64 << 10)
        assert (await sources(a1, sha1))["web"] == 0


async def test_what_goes_wrong_in_a_pipelined_push_is_said_clearly(tmp_path: Path) -> None:
    root = tmp_path / "origin"
    random_file(root / "a.bin", 100_000)
    stale = random_file(root / "b.bin", 100_000)
    random_file(tmp_path / "other" / "b.bin", 200_000)
    random_file(tmp_path / "same" / "b.bin", 100_000)
    async with (
        serve(create_app(root, torrents=False), ORIGIN) as url,
        started(node_settings(tmp_path, LONE)) as (node, api),
    ):

        async def failure(**args: Any) -> str:
            reply = await post(api, "maketorrent", **args)
            assert reply["result"] == "failed", reply
            return str(reply["traceback"])

        # No torrent at the origin (the hub then stripes the file first).
        reason = await failure(fileurl=f"{url}/a.bin", origin_torrent=f"{url}/a.bin.torrent")
        assert "HTTP 404" in reason
        # A torrent of another size: not of this file.
        other = await asyncio.to_thread(make_torrent, tmp_path / "other" / "b.bin")
        (root / "b.bin.torrent").write_bytes(other.data)
        reason = await failure(fileurl=f"{url}/b.bin", origin_torrent=f"{url}/b.bin.torrent")
        assert "describes 200,000 bytes" in reason
        assert "has 100,000" in reason
        # A torrent of the same size but other bytes: made, and the download fails at
        # the first piece of its stripe, saying why.
        same = await asyncio.to_thread(make_torrent, tmp_path / "same" / "b.bin")
        (root / "b.bin.torrent").write_bytes(same.data)
        made = await post(
            api, "maketorrent", fileurl=f"{url}/b.bin", origin_torrent=f"{url}/b.bin.torrent",
            stripe=0, stripes=1,
        )  # fmt: skip
        assert made["result"] == "success", made
        sha1 = made["args"]["sha1"]

        def failed() -> bool:
            st = node.engine.status(sha1)
            return st.status == "failed" and "not the torrent's" in st.error

        await wait_until(failed, within=10, what="the download failed on the first piece")
        assert stale.stat().st_size == 100_000
        # Bad stripe arguments are refused before anything is made.
        reason = await failure(
            fileurl=f"{url}/a.bin", pieces="01" * 140, piece_length=16384, filesize=100_000,
            stripe=3, stripes=2,
        )  # fmt: skip
        assert "args.stripe must be below args.stripes (2), got 3" in reason


async def test_the_origin_publishes_torrents_of_its_files_only(tmp_path: Path) -> None:
    root = tmp_path / "origin"
    source = random_file(root / "d" / "f.bin", 300_000)
    random_file(tmp_path / "secret.bin", 1000)
    app = create_app(root)
    async with serve(app, ORIGIN) as url, httpx.AsyncClient(timeout=10) as client:
        first = await client.get(f"{url}/d/f.bin.torrent")
        assert first.status_code == 200
        made = await asyncio.to_thread(make_torrent, source, web_seeds=[f"{url}/d/f.bin"])
        assert first.content == made.data  # its web seed is the file's URL
        again = await client.get(f"{url}/d/f.bin.torrent")
        assert again.content == first.content
        assert again.headers["last-modified"]
        for missing in ("/d/none.bin.torrent", "/d.torrent", "/../secret.bin.torrent"):
            assert (await client.get(f"{url}{missing}")).status_code == 404, missing
    async with (
        serve(create_app(root, torrents=False), ORIGIN) as url,
        httpx.AsyncClient(timeout=10) as client,
    ):
        assert (await client.get(f"{url}/d/f.bin.torrent")).status_code == 404
