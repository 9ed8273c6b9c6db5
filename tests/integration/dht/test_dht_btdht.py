"""Issue 17: programs written for btdht run on ``smartget.dht.btdht`` with only their
import line changed. Each script (``btdht_scripts/``) is a real process on 127.0.3.x;
they meet our asyncio DHT (``smartget dht run``) and each other. Every wait has a
deadline."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import stop_process

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SCRIPTS = Path(__file__).parent / "btdht_scripts"
ROOT = Path(__file__).resolve().parents[3]


async def _run(script: str, *args: str, cwd: Path, limit: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPTS / script), *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate()
    finally:
        await stop_process(proc)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_btdht_scripts_announce_find_and_hear_each_other(tmp_path: Path) -> None:
    hub = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smartget", "dht", "run", "--bind", "127.0.3.1:0",
        "--bootstrap", "127.0.3.250:9", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    crawler = None
    try:
        assert hub.stderr is not None
        async with asyncio.timeout(20):
            while not (
                m := re.search(rb"listening on 127\.0\.3\.1:(\d+)", await hub.stderr.readline())
            ):
                pass
        boot = f"127.0.3.1:{int(m.group(1))}"
        crawler = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPTS / "crawler.py"), "127.0.3.2", boot,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
        )  # fmt: skip
        assert crawler.stdout is not None
        assert crawler.stdin is not None
        async with asyncio.timeout(20):  # btdht prints "init socket for ..." at debuglvl 0
            while not (ready := (await crawler.stdout.readline()).decode()).startswith("ready"):
                assert ready, "the crawler exited"
        assert re.fullmatch(r"ready \d+ 3 True\n", ready), ready  # three threads, alive

        ih = os.urandom(20).hex()
        out = await _run("user.py", "127.0.3.3", boot, "announce", ih, cwd=tmp_path)
        assert "announced" in out
        assert "threads 3 debuglvl 0 alive True" in out
        assert "stoped True zombie False" in out
        assert re.search(r"loaded [1-9]", out), out  # save() then load(): dht_<id>.status
        saved = await asyncio.to_thread(lambda: [f.stat().st_size for f in tmp_path.glob("dht_*")])
        assert saved
        assert all(size % 26 == 0 for size in saved)

        out = await _run("user.py", "127.0.3.4", boot, "get", ih, cwd=tmp_path)
        assert "peers [('127.0.3.3', 6881)]" in out, out

        crawler.stdin.close()
        async with asyncio.timeout(40):
            heard, _ = await crawler.communicate()
        lines = heard.decode().splitlines()
        assert f"announce_peer {ih} 127.0.3.3 6881" in lines, lines
        assert f"get_peers {ih}" in lines, lines
        assert lines[-1] == "stopped True False"
    finally:
        if crawler is not None:
            await stop_process(crawler)
        await stop_process(hub)
