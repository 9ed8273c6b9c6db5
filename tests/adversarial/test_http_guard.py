"""Every SmartGet HTTP service is an EmbeddedServer: slow or greedy clients cannot
hold it (issue 12, item 4). Real sockets on 127.0.0.x, a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from smartget.httpserver import EmbeddedServer, HttpLimits
from smartget.net import bind_tcp

pytestmark = pytest.mark.asyncio

SERVER_IP = "127.0.6.1"


@contextlib.asynccontextmanager
async def serving(limits: HttpLimits) -> AsyncIterator[tuple[EmbeddedServer, int]]:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    sock = bind_tcp(SERVER_IP, 0)
    server = EmbeddedServer(app, sock, name="test", limits=limits)
    await server.start()
    try:
        yield server, sock.getsockname()[1]
    finally:
        await server.stop()


async def _open(port: int, src: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(SERVER_IP, port, local_addr=(src, 0))


async def test_clients_that_never_finish_their_headers_are_closed() -> None:
    async with serving(HttpLimits(header_timeout=0.5)) as (server, port):
        silent = await _open(port, "127.0.6.2")
        partial = await _open(port, "127.0.6.2")
        partial[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        for reader, _ in (silent, partial):
            assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed by the server
        assert server.census.timed_out == 2
        for _, writer in (silent, partial):
            writer.close()


async def test_one_address_cannot_take_every_connection() -> None:
    limits = HttpLimits(header_timeout=30, max_per_ip=5, max_connections=8)
    async with serving(limits) as (server, port):
        held = [await _open(port, "127.0.6.3") for _ in range(5)]
        reader, writer = await _open(port, "127.0.6.3")
        refused = await asyncio.wait_for(reader.read(), timeout=5)
        assert refused.startswith(b"HTTP/1.1 503 ")
        writer.close()
        # Another address is still served at once.
        url = f"http://{SERVER_IP}:{port}/healthz"
        async with httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address="127.0.6.4")
        ) as c:
            assert (await c.get(url, timeout=5)).json() == {"status": "ok"}
        # The total cap holds across addresses.
        more = [await _open(port, f"127.0.6.{5 + i}") for i in range(3)]
        last_reader, last_writer = await _open(port, "127.0.6.9")
        assert (await asyncio.wait_for(last_reader.read(), timeout=5)).startswith(b"HTTP/1.1 503 ")
        assert server.census.refused == 2
        for _, w in [*held, *more, (last_reader, last_writer)]:
            w.close()


async def test_an_idle_keep_alive_connection_outlives_the_header_deadline() -> None:
    """Between requests the keep-alive timeout (30 s) rules, not the header deadline."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    async with serving(HttpLimits(header_timeout=0.3)) as (_, port):
        reader, writer = await _open(port, "127.0.6.10")
        for _ in range(2):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert head.startswith(b"HTTP/1.1 200 ")
            await asyncio.wait_for(reader.readexactly(len(b'{"status":"ok"}')), timeout=5)
            await asyncio.sleep(0.6)  # the scenario: idle for twice the header deadline
        writer.close()
