"""Benchmark the node's request queue (reqq) at WAN round-trip times, on loopback.

Not a test. A BitTorrent connection carries at most reqq blocks of 16 KiB per round
trip, whatever the link: at reqq 8 that is 2.6 MB/s at 50 ms and 1.3 MB/s at 100 ms.
Loopback hides this (RTT ~0), so this benchmark puts a delay proxy between two or more
``smartget.node.engine.Engine`` s in one process and times a download from a seed
(``seed_mode``) for each RTT x reqq x number of downloaders.

Theory of operation
-------------------
No netem here, so latency is emulated in user space. Each downloader is told of the
seed at its own :class:`DelayProxy` (an asyncio TCP relay): every chunk read from one
side is forwarded to the other ``rtt / 2`` after it was read, in order, without any
bandwidth cap, both directions, with at most ``--buffer`` bytes held per direction
(reading stops while it is full, so TCP backpressure still reaches the sender). What it
does not emulate: TCP's own window against a real path's bandwidth-delay product (each
hop is loopback), loss, and jitter; so the figures are the application's limit, the
requests a peer may have in flight, which is what reqq sets. Rows marked ``direct``
skip the proxy: at RTT 0 they show whether the proxy itself is a bottleneck.

The seed and the downloaders advertise the same reqq (``EngineSettings
.peer_request_queue``; the seed's is the one that bounds the downloads); ``--reqq
default`` uses the node's default rule (``engine.request_queue_for``). The seed's
upload is capped with ``--upload-limit`` (0: none, the default ``smartget node``).
Each run has a deadline; a run that misses it reports the rate it reached (``>``).

Usage: python benchmarks/wan.py [--size 64MiB] [--rtt 0,20,50,100]
    [--reqq 8,32,64,128,500] [--downloaders 1,3] [--upload-limit 0] [--deadline 30]
    [--direct] [--ip-base 240]
Addresses: seed at .ip-base+1, downloaders at +2.., their proxies after them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from smartget.config import parse_size
from smartget.node.engine import Engine, EngineSettings, load_torrent, request_queue_for
from smartget.node.maker import make_torrent

MiB = 1 << 20
CHUNK = 256 << 10  # bytes read at a time by the proxy


class DelayProxy:
    """A TCP relay that forwards each chunk a fixed one-way delay after reading it."""

    def __init__(self, ip: str, target: tuple[str, int], one_way: float, buffer: int) -> None:
        self.ip = ip
        self.target = target
        self.one_way = one_way
        self.buffer = buffer
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.ip, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                up_reader, up_writer = await asyncio.open_connection(
                    *self.target, local_addr=(self.ip, 0)
                )
        except (OSError, TimeoutError):
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        held: deque[tuple[float, bytes]] = deque()
        held_bytes = 0
        room = asyncio.Event()
        ready = asyncio.Event()
        room.set()

        async def read() -> None:
            nonlocal held_bytes
            while True:
                await room.wait()
                data = await src.read(CHUNK)
                held.append((loop.time() + self.one_way, data))  # b"" marks EOF
                held_bytes += len(data)
                ready.set()
                if not data:
                    return
                if held_bytes >= self.buffer:
                    room.clear()

        reading = asyncio.create_task(read())
        try:
            while True:
                await ready.wait()
                due, data = held.popleft()
                if not held:
                    ready.clear()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)  # the emulated path's delay itself
                if not data:
                    break
                dst.write(data)
                await dst.drain()
                held_bytes -= len(data)
                if held_bytes < self.buffer:
                    room.set()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await reading
            with contextlib.suppress(ConnectionError, OSError):
                dst.close()


@dataclass
class Run:
    downloaders: int
    rtt_ms: float
    reqq: int
    direct: bool
    seconds: float  # to the last downloader complete, or the deadline
    done: int  # bytes all downloaders hold at the end
    complete: bool
    per_conn: list[float]  # MB/s of each downloader


async def one_run(
    root: Path,
    data: bytes,
    src_dir: Path,
    size: int,
    *,
    ip_base: int,
    downloaders: int,
    rtt_ms: float,
    reqq: int | None,
    upload_limit: int,
    direct: bool,
    deadline: float,
    buffer: int,
) -> Run:
    def ip(offset: int) -> str:
        return f"127.0.0.{ip_base + offset}"

    def settings(offset: int, upload: int = 0) -> EngineSettings:
        return EngineSettings(
            ip=ip(offset), bt_port=0, upload_limit=upload, peer_request_queue=reqq
        )

    run_dir = Path(tempfile.mkdtemp(dir=root, prefix="run-"))
    seed = Engine(settings(1, upload_limit), run_dir / "seed")
    peers = [Engine(settings(2 + i), run_dir / f"resume{i}") for i in range(downloaders)]
    proxies: list[DelayProxy] = []
    try:
        await seed.start()
        for peer in peers:
            await peer.start()
        sha = seed.add(load_torrent(data), src_dir, seed_mode=True)
        assert seed.listen_port is not None
        target = (ip(1), seed.listen_port)
        for i in range(downloaders):
            if direct:
                continue
            proxy = DelayProxy(ip(2 + downloaders + i), target, rtt_ms / 2000, buffer)
            await proxy.start()
            proxies.append(proxy)
        done_at: list[float | None] = [None] * downloaders
        t0 = time.monotonic()
        for i, peer in enumerate(peers):
            dest = run_dir / f"d{i}"
            dest.mkdir()
            peer.add(load_torrent(data), dest)
            peer.connect_peer(sha, target if direct else (proxies[i].ip, proxies[i].port))

        async def wait(i: int) -> None:
            with contextlib.suppress(TimeoutError):
                await peers[i].wait_complete(sha, deadline)
                done_at[i] = time.monotonic() - t0

        await asyncio.gather(*(wait(i) for i in range(downloaders)))
        elapsed = time.monotonic() - t0
        held = [peer.status(sha).downtotal for peer in peers]
        per_conn = [
            (size if t is not None else h) / (t if t is not None else elapsed) / 1e6
            for t, h in zip(done_at, held, strict=True)
        ]
        complete = all(t is not None for t in done_at)
        finished = [t for t in done_at if t is not None]
        return Run(
            downloaders,
            rtt_ms,
            reqq or request_queue_for(upload_limit),
            direct,
            max(finished) if complete else elapsed,
            sum(min(h, size) for h in held),
            complete,
            per_conn,
        )
    finally:
        for proxy in proxies:
            await proxy.aclose()
        for engine in (*peers, seed):
            await engine.aclose(save=False)
        shutil.rmtree(run_dir, ignore_errors=True)


def render(runs: list[Run], size: int, upload_limit: int) -> str:
    cap = f"{upload_limit / MiB:g} MiB/s" if upload_limit else "none"
    lines = [
        f"F = {size / MiB:g} MiB per downloader, seed upload cap {cap}",
        f"{'dl':>3} {'path':>6} {'RTT ms':>6} {'reqq':>5} {'time s':>8} {'MB/s total':>10} "
        f"{'MB/s each (min-max)':>20} {'reqq x 16K/RTT':>14}",
    ]
    for r in runs:
        mark = "" if r.complete else ">"
        total = r.done / r.seconds / 1e6
        each = f"{min(r.per_conn):.1f}-{max(r.per_conn):.1f}"
        bound = f"{r.reqq * 16384 / (r.rtt_ms / 1000) / 1e6:.1f}" if r.rtt_ms else "-"
        lines.append(
            f"{r.downloaders:>3} {'direct' if r.direct else 'proxy':>6} {r.rtt_ms:>6g} "
            f"{r.reqq:>5} {mark + format(r.seconds, '.2f'):>8} {total:>10.1f} "
            f"{each:>20} {bound:>14}"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    size = parse_size(args.size)
    upload_limit = parse_size(args.upload_limit.removesuffix("/s"))
    root = Path(tempfile.mkdtemp(prefix="sg-wan-"))
    runs: list[Run] = []
    try:
        src_dir = root / "src"
        src_dir.mkdir()
        path = src_dir / "wan.bin"
        path.write_bytes(os.urandom(size))
        data = make_torrent(path).data
        plan: list[tuple[int, float, int | None, bool]] = []
        for dl in args.downloaders:
            if args.direct:
                plan += [(dl, 0.0, q, True) for q in args.reqq]
            plan += [(dl, rtt, q, False) for rtt in args.rtt for q in args.reqq]
        for dl, rtt, q, direct in plan:
            run = await one_run(
                root,
                data,
                src_dir,
                size,
                ip_base=args.ip_base,
                downloaders=dl,
                rtt_ms=rtt,
                reqq=q,
                upload_limit=upload_limit,
                direct=direct,
                deadline=args.deadline,
                buffer=parse_size(args.buffer),
            )
            runs.append(run)
            print(render([run], size, upload_limit).splitlines()[-1], flush=True)
        print()
        print(render(runs, size, upload_limit))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _ints(text: str) -> list[int | None]:
    return [None if part == "default" else int(part) for part in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",")]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="64MiB", help="file size F (default 64MiB)")
    parser.add_argument("--rtt", type=_floats, default=[0, 20, 50, 100], help="ms, comma list")
    parser.add_argument(
        "--reqq",
        type=_ints,
        default=[8, 32, 64, 128, 500],
        help="reqq values, comma list; 'default' = the node's rule (request_queue_for)",
    )
    parser.add_argument(
        "--downloaders", type=lambda t: [int(p) for p in t.split(",")], default=[1, 3]
    )
    parser.add_argument("--upload-limit", default="0", help="seed's upload cap, e.g. 4MiB/s")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--buffer", default="32MiB", help="bytes a proxy holds per direction")
    parser.add_argument("--direct", action="store_true", help="also RTT 0 without the proxy")
    parser.add_argument("--ip-base", type=int, default=240, help="seed at 127.0.0.BASE+1")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
