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


async def _line(proc: asyncio.subprocess.Process, pattern: str, within: float) -> re.Match[str]:
    """The first line of the process's stderr that matches ``pattern``."""
    assert proc.stderr is not None
    async with asyncio.timeout(within):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, f"the node exited before logging {pattern!r}"
            if match := re.search(pattern, line):
                return match


@pytest.mark.asyncio
@pytest.mark.slow
async def test_run_builds_its_table_after_bootstrap() -> None:
    procs = []
    try:
        first = await asyncio.create_subprocess_exec(
            *SMARTGET, "run", "--bind", "127.0.1.73:0", "--bootstrap", "127.0.1.79:9",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(first)
        port = (await _line(first, r"listening on 127\.0\.1\.73:(\d+)", 20)).group(1)
        second = await asyncio.create_subprocess_exec(
            *SMARTGET, "run", "--bind", "127.0.1.74:0", "--bootstrap", f"127.0.1.73:{port}",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(second)
        await _line(second, r"bootstrapped: 1 nodes", 30)
        built = await _line(second, r"table built: (\d+) nodes", 60)
        assert int(built.group(1)) == 1  # the only other node, still there
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            async with asyncio.timeout(20):
                await proc.wait()
    assert [p.returncode for p in procs] == [0, 0]


async def _answers_loopback(*options: str) -> bool:
    """Start ``smartget dht run --bind 0.0.0.0:0``; does a ping from 127.0.1.80 get an answer?"""
    import socket

    from fastbencode import bencode

    proc = await asyncio.create_subprocess_exec(
        *SMARTGET, "run", "--bind", "0.0.0.0:0", "--bootstrap", "127.0.1.79:9", *options,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        port = int((await _line(proc, r"listening on 0\.0\.0\.0:(\d+)", 20)).group(1))
        ping = bencode({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": b"\x11" * 20}})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.1.80", 0))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_sendto(sock, ping, ("127.0.1.1", port))
            try:
                async with asyncio.timeout(1.5):  # an answer comes in milliseconds
                    await loop.sock_recv(sock, 4096)
            except TimeoutError:
                return False
            return True
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await proc.wait()


@pytest.mark.asyncio
async def test_bound_to_any_address_it_ignores_btdhts_ranges_unless_told() -> None:
    """Issue 17: on 0.0.0.0, btdht's private and reserved ranges are ignored by default."""
    assert not await _answers_loopback()
    assert await _answers_loopback("--no-ignore-net")
