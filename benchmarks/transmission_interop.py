"""Benchmark transfers between the node's libtorrent engine and Transmission 3.00.

Not a test. On loopback (127.0.3.210-212) it times one file of F bytes in each
direction and prints the time to the first byte, the time to complete and the rate:

* ``to-tr``: the engine seeds a torrent it made (``smartget.node.maker``) and dials
  ``transmission-daemon``, which downloads it;
* ``from-tr``: transmission-daemon seeds a torrent made by ``transmission-create`` and
  the engine downloads it;
* ``node``: the reference, in the same run: one engine seeds, another (127.0.3.212)
  downloads.

The engine runs with the node's own settings (``EngineSettings`` defaults, as
``smartget node`` starts it); ``--lt KEY=VALUE`` overrides a libtorrent setting and
``--tr KEY=JSON`` a Transmission one, to try a cause. The daemon's configuration is the
interop test's (``tests/interop/node/test_node_transmission.py``). Each direction runs
``--runs`` times on a fresh daemon and a fresh engine.

Usage: python benchmarks/transmission_interop.py [--size 16MiB] [--runs 1]
    [--direction all|to-tr|from-tr|node] [--lt KEY=VALUE ...] [--tr KEY=JSON ...]

What it showed (16 MiB, 2 cores; the causes are in the interop test's docstring):

    direction  first byte s  complete s  MB/s after
    to-tr             10.96      139.00        0.13   one batch of reqq = 8 requests/s
    from-tr           11.32       24.87        1.24   ~3.6 until the last block, 10 s stall
    node               0.10        0.16      273.12   the reference

The first byte waits for Transmission 3.00's rechoke (every 10 s); the stall is its
reject of the 512th request of its own reqq 512, sent in a batch 10 s later.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from smartget.config import parse_size
from smartget.net import free_port
from smartget.node.engine import Engine, EngineSettings, load_torrent
from smartget.node.maker import make_torrent

NODE_IP = "127.0.3.210"
TR_IP = "127.0.3.211"
PEER_IP = "127.0.3.212"  # the second engine of the reference run
DEADLINE = 300.0  # seconds for one transfer, whatever the rate


def tr_settings(ip: str, download_dir: Path) -> dict[str, Any]:
    """The interop test's daemon settings (keep the two in step)."""
    return {
        "bind-address-ipv4": ip,
        "bind-address-ipv6": "::1",
        "peer-port": free_port(ip),
        "peer-port-random-on-start": False,
        "rpc-enabled": True,
        "rpc-bind-address": ip,
        "rpc-port": free_port(ip),
        "rpc-authentication-required": False,
        "rpc-whitelist-enabled": False,
        "rpc-host-whitelist-enabled": False,
        "dht-enabled": False,
        "lpd-enabled": False,
        "pex-enabled": False,
        "utp-enabled": False,
        "port-forwarding-enabled": False,
        "blocklist-enabled": False,
        "download-dir": str(download_dir),
        "incomplete-dir-enabled": False,
        "watch-dir-enabled": False,
        "rename-partial-files": False,
        "start-added-torrents": True,
        "ratio-limit-enabled": False,
        "idle-seeding-limit-enabled": False,
        "speed-limit-down-enabled": False,
        "speed-limit-up-enabled": False,
        "alt-speed-enabled": False,
        "encryption": 1,
    }


class Rpc:
    """Transmission's JSON RPC (its CSRF header fetched on the first 409)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.AsyncClient(timeout=10)
        self.session_id = ""

    async def call(self, method: str, **arguments: Any) -> dict[str, Any]:
        body = {"method": method, "arguments": arguments}
        for _ in range(2):
            reply = await self.client.post(
                self.url, json=body, headers={"X-Transmission-Session-Id": self.session_id}
            )
            if reply.status_code == 409:
                self.session_id = reply.headers["X-Transmission-Session-Id"]
                continue
            reply.raise_for_status()
            data: dict[str, Any] = reply.json()
            if data.get("result") != "success":
                raise RuntimeError(f"transmission {method}: {data}")
            return data["arguments"]  # type: ignore[no-any-return]
        raise RuntimeError("transmission RPC kept answering 409")

    async def torrent(self) -> dict[str, Any]:
        fields = ["percentDone", "haveValid", "status", "rateDownload", "rateUpload"]
        torrents = (await self.call("torrent-get", fields=fields))["torrents"]
        return torrents[0] if torrents else {}


@dataclass
class Daemon:
    rpc: Rpc
    peer: tuple[str, int]


async def poll(predicate: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms until true; RuntimeError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


def write_config(tmp: Path, download_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    config = tmp / "tr-config"
    config.mkdir()
    download_dir.mkdir(parents=True, exist_ok=True)
    settings = tr_settings(TR_IP, download_dir) | overrides
    (config / "settings.json").write_text(json.dumps(settings))
    return settings


@contextlib.asynccontextmanager
async def daemon(tmp: Path, download_dir: Path, overrides: dict[str, Any]) -> AsyncIterator[Daemon]:
    settings = write_config(tmp, download_dir, overrides)
    config = tmp / "tr-config"
    log = (tmp / "tr.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        "transmission-daemon", "--foreground", "--config-dir", str(config), "--log-error",
        stdout=log, stderr=log,
    )  # fmt: skip
    rpc = Rpc(f"http://{TR_IP}:{settings['rpc-port']}/transmission/rpc")
    try:

        async def answers() -> bool:
            if proc.returncode is not None:
                raise RuntimeError(f"transmission-daemon exited; see {tmp / 'tr.log'}")
            try:
                await rpc.call("session-get")
            except httpx.TransportError:
                return False
            return True

        await poll(answers, 15, "transmission-daemon's RPC")
        yield Daemon(rpc, (TR_IP, settings["peer-port"]))
    finally:
        await rpc.client.aclose()
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


@contextlib.asynccontextmanager
async def engine(tmp: Path, overrides: dict[str, Any], ip: str = NODE_IP) -> AsyncIterator[Engine]:
    settings = EngineSettings(ip=ip, bt_port=0, webseed_fallback=0)
    eng = Engine(settings, tmp / f"resume-{ip}")
    await eng.start()
    try:
        if overrides:  # before any connection, so every handshake carries them
            eng._session.apply_settings(overrides)  # benchmark only: no public setter
        yield eng
    finally:
        await eng.aclose(save=False)


@dataclass
class Timing:
    direction: str
    first: float  # s from the dial to the first verified byte
    total: float  # s from the dial to complete

    def rate(self, size: int) -> float:
        """MB/s from the first byte on (the wait for Transmission's rechoke left out)."""
        return size / max(self.total - self.first, 1e-3) / 1e6


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(size))
    return path


async def status_is(tr: Daemon, *codes: int) -> bool:
    return (await tr.rpc.torrent()).get("status") in codes


async def time_transfer(
    name: str,
    dial: Callable[[], None],
    progress: Callable[[], Awaitable[tuple[bool, bool]]],
) -> Timing:
    """Time one transfer: ``progress`` says (a byte arrived, complete). The downloader
    is told of its peer once a second (Transmission does not dial 127/8 peers itself)."""
    start = time.monotonic()
    first = 0.0
    next_dial = start
    while True:
        now = time.monotonic()
        if now > start + DEADLINE:
            raise RuntimeError(f"{name}: not done after {DEADLINE} s")
        if now >= next_dial:
            dial()
            next_dial = now + 1.0
        got_bytes, complete = await progress()
        if got_bytes and not first:
            first = time.monotonic() - start
        if complete:
            return Timing(name, first, time.monotonic() - start)
        await asyncio.sleep(0.02)  # a sampling interval, not synchronisation


def engine_progress(eng: Engine, sha1: str) -> Callable[[], Awaitable[tuple[bool, bool]]]:
    async def progress() -> tuple[bool, bool]:
        return eng.handles[sha1].status().total_wanted_done > 0, sha1 in eng.complete

    return progress


async def to_transmission(
    tmp: Path, size: int, lt_set: dict[str, Any], tr_set: dict[str, Any]
) -> Timing:
    source = random_file(tmp / "seed" / "file.bin", size)
    made = await asyncio.to_thread(make_torrent, source)
    async with engine(tmp, lt_set) as eng, daemon(tmp, tmp / "out", tr_set) as tr:
        sha1 = eng.add(load_torrent(made.data), source.parent, seed_mode=True)
        await tr.rpc.call("torrent-add", metainfo=base64.b64encode(made.data).decode())
        await poll(lambda: status_is(tr, 4, 6), 30, "Transmission to start")  # 4 downloading

        async def progress() -> tuple[bool, bool]:
            info = await tr.rpc.torrent()
            return info.get("haveValid", 0) > 0, info.get("percentDone", 0) >= 1.0

        return await time_transfer("to-tr", lambda: eng.connect_peer(sha1, tr.peer), progress)


async def from_transmission(
    tmp: Path, size: int, lt_set: dict[str, Any], tr_set: dict[str, Any]
) -> Timing:
    source = random_file(tmp / "seed" / "file.bin", size)
    torrent = tmp / "file.bin.torrent"
    await asyncio.to_thread(
        subprocess.run,
        ["transmission-create", "-o", str(torrent), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    data = torrent.read_bytes()
    async with daemon(tmp, source.parent, tr_set) as tr, engine(tmp, lt_set) as eng:
        await tr.rpc.call("torrent-add", metainfo=base64.b64encode(data).decode())
        await poll(lambda: status_is(tr, 6), 60, "Transmission to seed")  # after its check
        sha1 = eng.add(load_torrent(data), tmp / "in")
        return await time_transfer(
            "from-tr", lambda: eng.connect_peer(sha1, tr.peer), engine_progress(eng, sha1)
        )


async def node_to_node(
    tmp: Path, size: int, lt_set: dict[str, Any], tr_set: dict[str, Any]
) -> Timing:
    source = random_file(tmp / "seed" / "file.bin", size)
    made = await asyncio.to_thread(make_torrent, source)
    async with engine(tmp, lt_set) as seed, engine(tmp, lt_set, PEER_IP) as eng:
        seed.add(load_torrent(made.data), source.parent, seed_mode=True)
        sha1 = eng.add(load_torrent(made.data), tmp / "in")
        assert seed.listen_port is not None
        seed_addr = (NODE_IP, seed.listen_port)
        return await time_transfer(
            "node", lambda: eng.connect_peer(sha1, seed_addr), engine_progress(eng, sha1)
        )


def parse_overrides(pairs: list[str], as_json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if as_json:
            out[key] = json.loads(value)
        else:
            out[key] = {"true": True, "false": False}.get(value.lower())
            if out[key] is None:
                out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


async def main_async(args: argparse.Namespace) -> None:
    size = parse_size(args.size)
    lt_set = parse_overrides(args.lt, as_json=False)
    tr_set = parse_overrides(args.tr, as_json=True)
    runs = {"to-tr": to_transmission, "from-tr": from_transmission, "node": node_to_node}
    chosen = list(runs) if args.direction == "all" else [args.direction]
    print(f"F = {size / 2**20:.0f} MiB; libtorrent overrides {lt_set or '-'}; "
          f"Transmission overrides {tr_set or '-'}")  # fmt: skip
    print(f"{'direction':<10} {'first byte s':>12} {'complete s':>10} {'MB/s after':>10}")
    for direction in chosen:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="sg-trbench-") as tmp:
                timing = await runs[direction](Path(tmp), size, lt_set, tr_set)
            print(f"{timing.direction:<10} {timing.first:>12.2f} {timing.total:>10.2f} "
                  f"{timing.rate(size):>10.2f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="16MiB")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--direction", choices=["all", "to-tr", "from-tr", "node"], default="all")
    parser.add_argument("--lt", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tr", action="append", default=[], metavar="KEY=JSON")
    args = parser.parse_args()
    if shutil.which("transmission-daemon") is None:
        raise SystemExit("needs transmission-daemon and transmission-create (Debian)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
