"""The file server: Range, HEAD, nothing outside wwwroot, no listings, no dot-files."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from .conftest import node_settings, random_file, started

pytestmark = pytest.mark.asyncio


async def test_range_head_and_refusals(tmp_path: Path) -> None:
    async with started(node_settings(tmp_path, "127.0.3.70")) as (node, _):
        www = node.settings.wwwroot
        data = random_file(www / "d" / "f.bin", 1000).read_bytes()
        random_file(www / "d" / ".f.bin.1.part", 10)
        random_file(tmp_path / "secret" / "s.txt", 10)
        os.symlink(tmp_path / "secret", www / "link")
        async with httpx.AsyncClient(base_url=node.files_url) as files:
            whole = await files.get("/d/f.bin")
            assert whole.status_code == 200
            assert whole.content == data
            assert whole.headers["accept-ranges"] == "bytes"
            part = await files.get("/d/f.bin", headers={"Range": "bytes=10-19"})
            assert part.status_code == 206
            assert part.content == data[10:20]
            assert part.headers["content-range"] == "bytes 10-19/1000"
            head = await files.head("/d/f.bin")
            assert head.status_code == 200
            assert head.headers["content-length"] == "1000"
            assert head.content == b""
            beyond = await files.get("/d/f.bin", headers={"Range": "bytes=5000-"})
            assert beyond.status_code == 416
            for path in ("/", "/d", "/d/", "/d/.f.bin.1.part", "/link/s.txt", "/../secret/s.txt"):
                assert (await files.get(path)).status_code == 404, path
            assert (await files.post("/d/f.bin")).status_code == 405
