"""Issue 12, items 4 and 11, against a real node process on 127.0.16.x.

Item 4: slow or silent clients cannot hold the node's file server or task API, and one
address cannot take every connection (``--http-header-timeout``, ``--http-max-per-ip``,
``--http-max-connections``). Item 11: hostile bodies to the task API (deeply nested
JSON, chunked bodies past the limit) get a clear answer, never a 500.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.node.process import AUTH, node_process

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

NODE_IP = "127.0.16.20"
LIMITS = (
    "--http-header-timeout", "0.5", "--http-max-per-ip", "4", "--http-max-connections", "6",
)  # fmt: skip


async def _open(port: int, src: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(NODE_IP, port, local_addr=(src, 0))


async def test_slow_and_greedy_clients_cannot_hold_the_node(tmp_path: Path) -> None:
    async with node_process(tmp_path, NODE_IP, *LIMITS) as node:
        api_port = urlsplit(node.api_url).port
        assert api_port is not None
        for port in (node.files_port, api_port):
            # Silent and half-sent requests are closed at the header deadline.
            silent = await _open(port, "127.0.16.21")
            partial = await _open(port, "127.0.16.21")
            partial[1].write(b"GET /x HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            for reader, writer in (silent, partial):
                assert await asyncio.wait_for(reader.read(), timeout=5) == b""
                writer.close()
        # One address holds its 4; the fifth is refused; another address is served.
        held = [await _open(node.files_port, "127.0.16.22") for _ in range(4)]
        reader, writer = await _open(node.files_port, "127.0.16.22")
        assert (await asyncio.wait_for(reader.read(), timeout=5)).startswith(b"HTTP/1.1 503 ")
        writer.close()
        transport = httpx.AsyncHTTPTransport(local_address="127.0.16.23")
        async with httpx.AsyncClient(transport=transport, timeout=5) as other:
            assert (await other.get(f"{node.files_url}/missing")).status_code == 404
        # The cap in all: two more from other addresses fill it; the next is refused.
        more = [await _open(node.files_port, f"127.0.16.{24 + i}") for i in range(2)]
        reader, writer = await _open(node.files_port, "127.0.16.26")
        assert (await asyncio.wait_for(reader.read(), timeout=5)).startswith(b"HTTP/1.1 503 ")
        writer.close()
        for _, w in [*held, *more]:
            w.close()


async def test_hostile_task_bodies_get_clear_answers(tmp_path: Path) -> None:
    async with (
        node_process(tmp_path, "127.0.16.30") as node,
        httpx.AsyncClient(base_url=node.api_url, headers=AUTH, timeout=10) as api,
    ):
        nested = b"[" * 20_000 + b"]" * 20_000  # 40 KiB
        for body in (nested, b'{"taskid": "n", "event": "delete", "args": ' + nested + b"}"):
            reply = await api.post("/maketorrent", content=body)
            assert reply.status_code == 200, reply.text
            assert reply.json()["result"] == "failed"
            assert "JSON" in reply.json()["traceback"] or "args" in reply.json()["traceback"]

        async def chunks() -> object:
            # Just past the 1 MiB limit, in chunks, no Content-Length. (Not far past: a
            # server that answers before reading a body out resets the connection, and
            # the client may lose the answer to that; this is not what is tested here.)
            for _ in range(17):
                yield b" " * (64 << 10)

        # /download: /maketorrent takes more (a striped push's digests; node/api.py)
        reply = await api.post("/download", content=chunks())
        assert reply.status_code == 413, reply.text
        assert "larger than" in reply.text
        reply = await api.post("/download", content=b" " * ((1 << 20) + 1))  # Content-Length
        assert reply.status_code == 413
        assert (await api.get("/ping")).text == "PONG"
        assert "Traceback" not in node.log_text()
