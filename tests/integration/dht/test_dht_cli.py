"""`smartget dht run / get-peers / announce` as real processes on 127.0.1.x."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

SMARTGET = [sys.executable, "-m", "smartget", "dht"]


async def _cli(*args: str, limit: float = 30) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *SMARTGET, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(limit):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.asyncio
@pytest.mark.slow
async def test_run_announce_get_peers_and_state(tmp_path: Path) -> None:
    state = tmp_path / "table.dht"
    proc = await asyncio.create_subprocess_exec(
        *SMARTGET, "run", "--bind", "127.0.1.70:0", "--state", str(state),
        "--bootstrap", "127.0.1.79:9",  # nobody there: a failed bootstrap must not hurt
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "the node exited before listening"
                if match := re.search(r"listening on 127\.0\.1\.70:(\d+)", line):
                    break
        node = f"127.0.1.70:{match.group(1)}"
        ih = os.urandom(20).hex()
        common = ["--bootstrap", node, "--timeout", "10", "--log-level", "warning"]
        code, out = await _cli("announce", ih, "--port", "7777", "--bind", "127.0.1.71:0", *common)
        assert (code, out.strip()) == (0, "accepted by 1 nodes")
        code, out = await _cli("get-peers", ih, "--bind", "127.0.1.72:0", *common)
        assert (code, out.splitlines()) == (0, ["127.0.1.71:7777"])
        code, out = await _cli("get-peers", "00" * 20, "--bind", "127.0.1.72:0", *common)
        assert (code, out) == (1, "")
        code, _ = await _cli("get-peers", "nothex", "--bind", "127.0.1.72:0", *common)
        assert code == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rest = await proc.stderr.read()
            await proc.wait()
    assert proc.returncode == 0, rest.decode()
    assert state.stat().st_size % 26 == 0
    assert state.stat().st_size >= 26
