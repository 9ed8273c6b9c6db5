"""A real hub in the test's event loop, and a text-protocol client that can act as any 127.0.0.x."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from smartget.hub.app import Hub, HubSettings, running

TOKEN = "test-token"


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        listen=("127.0.0.1", 0),
        http=("127.0.0.1", 0),
        token=TOKEN,
        line_timeout=0.5,
        udp_tracker=("127.0.0.1", 0),
        # Controllers on loopback may requestnodes, as an operator allows its own
        # network; tests/adversarial checks the default (registered nodes only).
        allow_net=("127.0.0.0/8",),
    )
    async with running(settings) as started:
        yield started


async def send(hub: Hub, data: bytes, src: str = "127.0.0.2", *, eof: bool = False) -> bytes:
    """Connect from ``src``, send ``data``, read until the hub closes (5 s at most)."""
    host, port = hub.text_address
    reader, writer = await asyncio.open_connection(host, port, local_addr=(src, 0))
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
