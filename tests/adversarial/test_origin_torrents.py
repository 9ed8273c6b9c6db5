"""Strangers at ``smartget.origin``'s torrents: asking for the torrents of many files at
once hashes one at a time (what the server does not shed), keeps a bounded number, and
the origin still answers; paths outside its root are not reached."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from smartget.origin import TorrentMaker, create_app
from tests.integration.node.conftest import random_file, serve

pytestmark = pytest.mark.asyncio

ORIGIN_IP = "127.0.62.1"
FILES = 40
KEPT = 4


async def test_a_flood_of_torrent_requests_is_bounded_and_the_origin_answers(
    tmp_path: Path,
) -> None:
    root = tmp_path / "origin"
    for i in range(FILES):
        random_file(root / f"f{i}.bin", 200_000)
    random_file(tmp_path / "secret.bin", 1000)
    maker = TorrentMaker(limit=KEPT)
    async with (
        serve(create_app(root, maker=maker), ORIGIN_IP) as url,
        httpx.AsyncClient(timeout=30) as client,
    ):
        flood = [
            asyncio.create_task(client.get(f"{url}/f{i % FILES}.bin.torrent"))
            for i in range(3 * FILES)
        ]
        began = time.monotonic()
        stats = await client.get(f"{url}/__origin__/stats")  # answered amid the flood
        assert stats.status_code == 200
        assert time.monotonic() - began < 10
        replies = await asyncio.gather(*flood)
        # Served, or shed by the server's own per-client limit (503): nothing else.
        assert {r.status_code for r in replies} <= {200, 503}
        served = sum(r.status_code == 200 for r in replies)
        assert served > 0
        assert len(maker) <= KEPT  # the table does not grow with the requests
        assert 0 < maker.made <= served  # a hash per torrent served at most
        for path in ("/../secret.bin.torrent", "/%2e%2e/secret.bin.torrent", "/none.torrent"):
            assert (await client.get(f"{url}{path}")).status_code == 404, path
