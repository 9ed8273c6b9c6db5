"""A striped push, the nodes' half, over real HTTP and real libtorrent: three nodes fetch a
stripe each from a real origin (``smartget.origin``'s app), one makes the torrent from
their digests, the others download it with their stripes had, and they trade the rest:
the origin sends each byte once. And the failures a hub must be told clearly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from smartget.node.maker import PieceHasher, make_torrent, piece_length_for
from smartget.node.prefetch import stripe_pieces
from smartget.node.service import Node
from smartget.origin import create_app
from tests.helpers import wait_until

from .conftest import (
    node_settings,
    random_file,
    serve,
    sha256,
    started,
    task,
    trade_to_completion,
)

pytestmark = pytest.mark.asyncio

ORIGIN = "127.0.3.210"
NODES = ("127.0.3.211", "127.0.3.212", "127.0.3.213")
NO_RANGES = "127.0.3.214"  # an origin that ignores Range
SMALL_NODE, STRICT_NODE = "127.0.3.215", "127.0.3.216"
SIZE = (6 << 20) + 12_345  # 193 pieces of 32 KiB, the last one short
HOLD = 60.0  # web seeds held that long: the origin serves only the stripes


async def post(api: httpx.AsyncClient, event: str, taskid: str = "t", **args: Any) -> Any:
    reply = await api.post(f"/{event}", json=task(event, taskid, **args))
    assert reply.status_code == 200, reply.text
    return reply.json()


def had_pieces(node: Node, sha1: str) -> list[bool]:
    return list(node.engine.handles[sha1].status().pieces)


async def test_three_stripes_make_one_torrent_and_the_origin_sends_each_byte_once(
    tmp_path: Path,
) -> None:
    root = tmp_path / "origin"
    source = random_file(root / "media" / "big.bin", SIZE)
    data = source.read_bytes()
    origin = create_app(root)
    async with (
        serve(origin, ORIGIN) as origin_url,
        started(node_settings(tmp_path, NODES[0], webseed_fallback=HOLD)) as (n0, a0),
        started(node_settings(tmp_path, NODES[1], webseed_fallback=HOLD)) as (n1, a1),
        started(node_settings(tmp_path, NODES[2], webseed_fallback=HOLD)) as (n2, a2),
    ):
        nodes, apis = (n0, n1, n2), (a0, a1, a2)
        fileurl = f"{origin_url}/media/big.bin"
        replies = await asyncio.gather(
            *(
                post(api, "prefetch", f"p{i}", fileurl=fileurl, stripe=i, stripes=3)
                for i, api in enumerate(apis)
            )
        )
        for reply in replies:
            assert reply["result"] == "success", reply
            assert reply["event"] == "prefetch_response"
        args = [reply["args"] for reply in replies]
        piece_length = piece_length_for("big.bin", SIZE)
        assert {a["piece_length"] for a in args} == {piece_length}
        assert {a["filesize"] for a in args} == {SIZE}
        runs = [(a["first_piece"], a["end_piece"]) for a in args]
        assert runs == [stripe_pieces(SIZE, piece_length, i, 3) for i in range(3)]
        assert sum(a["bytes"] for a in args) == SIZE
        assert all(a["etag"] and a["last_modified"] for a in args)
        whole = PieceHasher(piece_length)
        whole.update(data)
        pieces = "".join(a["pieces"] for a in args)
        assert pieces == b"".join(whole.digests()).hex()
        assert origin.bytes_sent == SIZE  # three ranges, each byte once
        for node, a in zip(nodes, args, strict=True):
            local = node.agent.roots.wwwroot / "media" / "big.bin"
            assert a["filename"] == str(local)
            start = a["first_piece"] * piece_length
            on_disk = await asyncio.to_thread(local.read_bytes)
            assert len(on_disk) == SIZE
            assert on_disk[start : start + a["bytes"]] == data[start : start + a["bytes"]]

        # The seed makes the torrent from the digests: the file's own info-hash.
        made = await post(
            a0,
            "maketorrent",
            "m",
            fileurl=fileurl,
            pieces=pieces,
            piece_length=piece_length,
            filesize=SIZE,
            have=list(runs[0]),
        )
        assert made["result"] == "success", made
        assert made["status"] == "Initial startup"
        sha1 = made["args"]["sha1"]
        assert sha1 == (await asyncio.to_thread(make_torrent, source)).sha1
        local0 = n0.agent.roots.wwwroot / "media" / "big.bin"
        assert made["args"]["filename"] == str(local0)
        assert made["args"]["filesize"] == SIZE
        assert made["args"]["torrentfile"] == f"{local0}.torrent"
        assert made["args"]["torrentfileurl"] == f"{n0.files_url}/media/big.bin.torrent"
        assert made["args"]["had"] == list(runs[0])
        record = n0.agent.state.get(sha1)
        assert record is not None
        assert not record.seed_mode  # a download: it has one stripe

        for i in (1, 2):
            reply = await post(
                apis[i],
                "download",
                f"d{i}",
                torrentfileurl=made["args"]["torrentfileurl"],
                have=list(runs[i]),
            )
            assert reply["result"] == "success", reply
            assert reply["status"] == "Initial startup"
            assert reply["args"]["had"] == list(runs[i])
        # No peers yet: each has exactly its own stripe, unchecked.
        count = len(whole.digests())
        for node, (first, end) in zip(nodes, runs, strict=True):
            expected = [first <= i < end for i in range(count)]
            await wait_until(
                lambda n=node, e=expected: had_pieces(n, sha1) == e,  # type: ignore[misc]
                within=10,
                what=f"{node.settings.ip} holding its stripe",
            )

        # They trade the rest.
        await trade_to_completion(nodes, sha1, source, "media/big.bin")
        want = sha256(source)
        assert origin.bytes_sent == SIZE  # nothing more: not a byte from the web seeds

        # The hub sends the prefetch again: the torrent's own data, hashed, not written.
        again = await post(a0, "prefetch", "p0", fileurl=fileurl, stripe=0, stripes=3)
        assert again["result"] == "success", again
        assert again["args"]["pieces"] == args[0]["pieces"]
        assert await asyncio.to_thread(sha256, local0) == want
        # ... and the same maketorrent again: it runs already.
        same = await post(
            a0, "maketorrent", "m", fileurl=fileurl, pieces=pieces,
            piece_length=piece_length, filesize=SIZE, have=list(runs[0]),
        )  # fmt: skip
        assert same["result"] == "success", same
        assert same["args"]["already"] is True
        assert same["args"]["sha1"] == sha1


def no_ranges_app(root: Path) -> Starlette:
    """An origin that knows HEAD but sends the whole file to every GET, Range or not."""

    async def serve_file(request: Request) -> Response:
        path = root / request.path_params["path"]
        if not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        if request.method == "HEAD":
            return Response(headers={"content-length": str(path.stat().st_size)})
        return Response(path.read_bytes(), media_type="application/octet-stream")

    return Starlette(routes=[Route("/{path:path}", serve_file, methods=["GET", "HEAD"])])


async def test_prefetch_failures_are_clear_and_have_is_taken_only_when_true(
    tmp_path: Path,
) -> None:
    root = tmp_path / "origin"
    small = random_file(root / "media" / "small.bin", 100_000)  # 7 pieces of 16 KiB
    random_file(root / "media" / "big.bin", 2 << 20)
    random_file(root / "media" / "other.bin", 100_000)
    settings = node_settings(tmp_path, SMALL_NODE, fetch_max_size=1 << 20, webseed_fallback=HOLD)
    async with (
        serve(create_app(root), ORIGIN) as url,
        serve(no_ranges_app(root), NO_RANGES) as plain_url,
        started(settings) as (node, api),
        started(node_settings(tmp_path, STRICT_NODE, fetch_allow=())) as (_, strict),
    ):
        small_url = f"{url}/media/small.bin"

        async def failure(client: httpx.AsyncClient, **args: Any) -> str:
            reply = await post(client, "prefetch", **args)
            assert reply["result"] == "failed", reply
            assert reply["event"] == "prefetch_response"
            return str(reply["traceback"])

        assert "args.fileurl is required" in await failure(api, stripe=0, stripes=1)
        assert "http:// or https://" in await failure(api, fileurl="ftp://o/a", stripe=0, stripes=1)
        reason = await failure(api, fileurl=small_url, stripe=2, stripes=2)
        assert "args.stripe must be below args.stripes (2), got 2" in reason
        reason = await failure(api, fileurl=f"{plain_url}/media/small.bin", stripe=1, stripes=2)
        assert "the origin does not serve byte ranges" in reason
        reason = await failure(api, fileurl=f"{url}/media/big.bin", stripe=0, stripes=2)
        assert "more than the 1048576 bytes allowed (the node's --fetch-max-size)" in reason
        assert "HTTP 404" in await failure(api, fileurl=f"{url}/none.bin", stripe=0, stripes=1)
        reason = await failure(strict, fileurl=small_url, stripe=0, stripes=1)
        assert reason.startswith(f"HEAD {small_url}: refused to connect")

        # More stripes than pieces: an empty one is fine.
        empty = await post(api, "prefetch", fileurl=small_url, stripe=0, stripes=10)
        assert empty["result"] == "success", empty
        assert empty["args"] | {"etag": "", "last_modified": ""} == {
            "filename": str(node.agent.roots.wwwroot / "media" / "small.bin"),
            "filesize": 100_000,
            "piece_length": 16384,
            "first_piece": 0,
            "end_piece": 0,
            "pieces": "",
            "bytes": 0,
            "etag": "",
            "last_modified": "",
        }

        # Another torrent's data is not overwritten.
        other = node.agent.roots.wwwroot / "media" / "other.bin"
        random_file(other, 50_000)
        made = await post(api, "maketorrent", filename="media/other.bin")
        assert made["result"] == "success", made
        before = sha256(other)
        reason = await failure(api, fileurl=f"{url}/media/other.bin", stripe=0, stripes=1)
        assert f"is the data of torrent {made['args']['sha1']}" in reason
        assert sha256(other) == before

        # have is taken only for pieces this node's prefetch wrote: pieces 0-3 are its
        # stripe, 4-6 are not; asked for those, it adds the torrent plainly and
        # libtorrent finds 0-3 on disk by checking.
        mine = await post(api, "prefetch", fileurl=small_url, stripe=0, stripes=2)
        assert mine["result"] == "success", mine
        assert (mine["args"]["first_piece"], mine["args"]["end_piece"]) == (0, 3)
        whole = PieceHasher(16384)
        whole.update(small.read_bytes())
        digests = b"".join(whole.digests()).hex()
        wrong = await post(
            api, "maketorrent", fileurl=small_url, pieces=digests, piece_length=16384,
            filesize=100_000, have=[4, 7],
        )  # fmt: skip
        assert wrong["result"] == "success", wrong
        assert wrong["args"]["had"] == []
        sha1 = wrong["args"]["sha1"]
        await wait_until(
            lambda: had_pieces(node, sha1)[:3] == [True] * 3, within=10, what="pieces checked"
        )
        # A maketorrent from digests that do not fit the file is refused.
        reason = (
            await post(
                api, "maketorrent", fileurl=small_url, pieces=digests, piece_length=32768,
                filesize=100_000,
            )
        )["traceback"]  # fmt: skip
        assert "must be 4 SHA-1 digests" in reason

        # /maketorrent takes a body past 1 MiB (every digest of a large file); no other
        # route does.
        huge = task(
            "maketorrent", fileurl=small_url, pieces="ab" * 1_000_000, piece_length=16384,
            filesize=100_000,
        )  # fmt: skip
        reply = (await api.post("/maketorrent", json=huge)).json()
        assert reply["result"] == "failed"
        assert "args.pieces must be 7 SHA-1 digests" in reply["traceback"]
        assert (await api.post("/download", json=huge | {"event": ""})).status_code == 413
