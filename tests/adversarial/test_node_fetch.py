"""Issue 12, item 5: the node's fetcher cannot be turned on the node's own network,
filled without end, or held forever.

A real node process on 127.0.16.2 allows only the origin (``--fetch-allow
127.0.16.1/32``), as an operator would allow the origin networks it uses. The origin
answers 302 towards an "internal" service on 127.0.16.9, streams a chunked body past
``--fetch-max-size`` and trickles bytes past ``--fetch-timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.integration.node.conftest import serve, task
from tests.integration.node.process import AUTH, node_process

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ORIGIN_IP = "127.0.16.1"
NODE_IP = "127.0.16.2"
INTERNAL_IP = "127.0.16.9"
LIMITS = ("--fetch-allow", f"{ORIGIN_IP}/32", "--fetch-max-size", "1MiB", "--fetch-timeout", "3")


class Internal:
    """A service on the node's network that must never be fetched from."""

    def __init__(self) -> None:
        self.hits = 0

    def app(self) -> Starlette:
        async def secret(request: Request) -> Response:
            self.hits += 1
            return PlainTextResponse("internal secret")

        return Starlette(routes=[Route("/{path:path}", secret)])


def origin_app(internal_url: str) -> Starlette:
    async def redirect(request: Request) -> Response:
        return RedirectResponse(f"{internal_url}/admin/secret", status_code=302)

    async def ok(request: Request) -> Response:
        return Response(b"x" * 1000)

    async def chunked(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(64):  # 4 MiB, no Content-Length
                yield b"\0" * (64 << 10)

        return StreamingResponse(body())

    async def declared(request: Request) -> Response:
        return Response(b"\0" * (2 << 20))  # Content-Length: 2 MiB

    async def trickle(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(300):  # 14 bytes every 0.2 s: never a read timeout
                yield b"14 bytes, slow"
                await asyncio.sleep(0.2)

        return StreamingResponse(body())

    return Starlette(
        routes=[
            Route("/files/redirected.bin", redirect),
            Route("/files/ok.bin", ok),
            Route("/files/chunked.bin", chunked),
            Route("/files/declared.bin", declared),
            Route("/files/trickle.bin", trickle),
        ]
    )


@contextlib.asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[tuple[Any, str, str, Internal]]:
    internal = Internal()
    async with (
        serve(internal.app(), INTERNAL_IP) as internal_url,
        serve(origin_app(internal_url), ORIGIN_IP) as origin_url,
        node_process(tmp_path, NODE_IP, *LIMITS) as node,
    ):
        yield node, origin_url, internal_url, internal


async def maketorrent(api_url: str, fileurl: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            f"{api_url}/maketorrent", json=task("maketorrent", fileurl=fileurl), headers=AUTH
        )
    assert reply.status_code == 200
    answer: dict[str, Any] = reply.json()
    return answer


async def test_redirects_and_first_hops_to_the_node_network_are_refused(tmp_path: Path) -> None:
    async with world(tmp_path) as (node, origin_url, internal_url, internal):
        # The allowed origin works.
        answer = await maketorrent(node.api_url, f"{origin_url}/files/ok.bin")
        assert answer["result"] == "success", answer
        # A 302 to the internal service: refused, nothing stored, the service never asked.
        answer = await maketorrent(node.api_url, f"{origin_url}/files/redirected.bin")
        assert answer["result"] == "failed"
        assert "--fetch-allow" in answer["traceback"], answer["traceback"]
        assert INTERNAL_IP in answer["traceback"]
        assert not (node.wwwroot / "files" / "redirected.bin").exists()
        # The internal address as the first hop, and a name that resolves to loopback.
        for url in (f"{internal_url}/files/x.bin", f"http://localhost:{node.files_port}/x.bin"):
            answer = await maketorrent(node.api_url, url)
            assert answer["result"] == "failed", url
            assert "--fetch-allow" in answer["traceback"], answer["traceback"]
        # A download's .torrent is fetched by the same rules.
        async with httpx.AsyncClient(timeout=30) as client:
            reply = await client.post(
                f"{node.api_url}/download",
                json=task("download", torrentfileurl=f"{internal_url}/a/b.torrent"),
                headers=AUTH,
            )
        assert reply.json()["result"] == "failed"
        assert "--fetch-allow" in reply.json()["traceback"]
        assert internal.hits == 0
        assert [p.name for p in node.wwwroot.rglob("*") if p.is_file()] == [
            "ok.bin",
            "ok.bin.torrent",
        ]


async def test_bodies_past_the_size_limit_are_cut_and_left_nowhere(tmp_path: Path) -> None:
    async with world(tmp_path) as (node, origin_url, _, _):
        for name in ("chunked.bin", "declared.bin"):
            answer = await maketorrent(node.api_url, f"{origin_url}/files/{name}")
            assert answer["result"] == "failed", name
            assert "1048576 bytes" in answer["traceback"], answer["traceback"]
            assert "--fetch-max-size" in answer["traceback"], answer["traceback"]
        assert [p for p in node.wwwroot.rglob("*") if p.is_file()] == []


async def test_a_trickling_origin_cannot_hold_a_fetch_past_its_deadline(tmp_path: Path) -> None:
    async with world(tmp_path) as (node, origin_url, _, _):
        started = time.monotonic()
        answer = await maketorrent(node.api_url, f"{origin_url}/files/trickle.bin")
        took = time.monotonic() - started
        assert answer["result"] == "failed"
        assert "--fetch-timeout" in answer["traceback"], answer["traceback"]
        assert took < 10, took  # the deadline (3 s) and not the origin's 60 s decided
        assert [p for p in node.wwwroot.rglob("*") if p.is_file()] == []
