"""`smartget hub` as a process: --relay-* options from --config, and satellites still
registered after kill -9."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import xmlrpc.client
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.integration.hub.test_relay_hub import SAT_IPS, WAIT, BoundTransport, FakeSatellite

HTTP_LINE = re.compile(rb"HTTP API on (http://127\.0\.4\.1:\d+)")


@asynccontextmanager
async def hub_process(data_dir: Path, config: Path) -> AsyncIterator[str]:
    """Start the hub; yield its /RPC2 URL; kill -9 it on the way out."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smartget",
        "hub",
        "--data-dir",
        str(data_dir),
        "--listen",
        "127.0.4.1:0",
        "--http",
        "127.0.4.1:0",
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_PROXY": "*", "SMARTGET_HUB_TOKEN": "cli-token"},
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(WAIT * 3):
            while not (match := HTTP_LINE.search(line := await proc.stderr.readline())):
                assert line, "the hub exited before serving HTTP"
        url = match.group(1).decode().replace("http://", "http://relay:cli-token@") + "/RPC2"
        # keep draining its log so that it never blocks on a full pipe
        drain = asyncio.create_task(proc.stderr.read())
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(WAIT):
            await proc.wait()
    drain.cancel()


async def call(sat: FakeSatellite, url: str, method: str, *params: object) -> object:
    def do() -> object:
        with xmlrpc.client.ServerProxy(url, transport=BoundTransport(sat.ip)) as proxy:
            return getattr(proxy, method)(*params)

    return await asyncio.to_thread(do)


@pytest.mark.asyncio
async def test_config_options_and_kill_9(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("[hub]\nrelay-max-satellites = 3\nrelay-queue = 7\nrelay_rate = 50.0\n")
    sats = [FakeSatellite(ip, f"pw{n}") for n, ip in enumerate(SAT_IPS)]
    try:
        async with hub_process(tmp_path / "data", config) as url:
            assert await call(sats[0], url, "relay.get_max_satellites") == 3
            ids = [
                await call(s, url, "relay.register", {"port": s.port, "notify_pass": s.notify_pass})
                for s in sats
            ]
        # killed with SIGKILL: nothing was shut down cleanly
        async with hub_process(tmp_path / "data", config) as url:
            assert await call(sats[0], url, "relay.get_satellites") == ids
            await call(sats[1], url, "relay.relay", {"host_id": ids[1], "data": "x"})
            for sat in (sats[0], sats[2]):
                got = await asyncio.to_thread(sat.notified.get, timeout=WAIT)
                assert got["notify_pass"] == sat.notify_pass
    finally:
        for sat in sats:
            sat.stop()
