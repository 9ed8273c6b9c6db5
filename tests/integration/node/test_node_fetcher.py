"""The node's fetcher against a real server that closes a kept-alive connection."""

from __future__ import annotations

import asyncio
import time

import pytest

from smartget.node.fetcher import Fetcher
from smartget.node.fetchpolicy import FetchPolicy

pytestmark = pytest.mark.asyncio

IP = "127.0.3.70"
BODY = b"d8:announce0:e"


async def test_a_kept_alive_connection_the_server_closed_is_asked_again_at_once() -> None:
    """A server closes an idle kept-alive connection as the next request goes out on it
    (the request gets no answer): the fetcher asks again on a new connection at once,
    not after its 0.5 s backoff."""
    connections: list[int] = []  # requests answered on each connection

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        mine = len(connections) - 1
        try:
            while True:
                async with asyncio.timeout(5):
                    await reader.readuntil(b"\r\n\r\n")
                if mine == 0 and connections[mine] == 1:
                    return  # the second request on the first connection: closed unanswered
                connections[mine] += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s"
                    % (len(BODY), BODY)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, IP, 0)
    port = server.sockets[0].getsockname()[1]
    fetcher = Fetcher(timeout=5, policy=FetchPolicy.from_texts([f"{IP}/32"]))
    try:
        url = f"http://{IP}:{port}/x.torrent"
        first = await fetcher.fetch_small(url, max_retries=2)
        began = time.monotonic()
        second = await fetcher.fetch_small(url, max_retries=2)  # on the kept-alive one
        took = time.monotonic() - began
    finally:
        await fetcher.aclose()
        server.close()
        await server.wait_closed()
    assert (first.body, first.retries) == (BODY, 0)
    assert (second.body, second.retries) == (BODY, 1)
    assert connections == [1, 1]  # the retry went out on a new connection
    assert took < 0.4, f"the retry waited ({took:.2f} s)"
