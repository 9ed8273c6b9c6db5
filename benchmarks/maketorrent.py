"""Benchmark the node's maketorrent hashing against mktorrent, and a node seeding many torrents.

Not a test. Prints two tables:

* hashing a 1 GiB file (page cache warm, best of 3): the node's ``make_torrent`` (what
  the maketorrent task runs), libtorrent's ``set_piece_hashes`` alone, and Debian's
  ``mktorrent`` with one thread per core at the same piece length; the ratio of each to
  mktorrent's speed;
* a ``smartget node`` process (127.0.3.50) seeding 1,000 small torrents made through its
  own API: the time to make them, its resident memory before and after, and its CPU use
  while it just seeds for ``--idle`` seconds.

Usage: python benchmarks/maketorrent.py [--size 1GiB] [--torrents 1000] [--idle 10]
Target (issue 4): hashing at >= 90% of mktorrent's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import libtorrent as lt
from rich.console import Console
from rich.table import Table

from smartget.config import parse_size
from smartget.node import maker

IP = "127.0.3.50"
TOKEN = "bench"
SMALL = 64 << 10
CONCURRENCY = 8


def write_file(path: Path, size: int) -> None:
    chunk = os.urandom(16 << 20)
    with path.open("wb") as out:
        left = size
        while left > 0:
            out.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


def best_of(runs: int, func: object) -> float:
    assert callable(func)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def hashing(work: Path, size: int) -> None:
    path = work / "big.bin"
    if not path.exists() or path.stat().st_size != size:
        print(f"writing a {size >> 20} MiB file in {work} ...", file=sys.stderr)
        write_file(path, size)
    made = maker.make_torrent(path)  # warms the page cache too
    piece_length = lt.torrent_info(lt.bdecode(made.data)).piece_length()  # type: ignore[arg-type]
    node_s = best_of(3, lambda: maker.make_torrent(path))

    def lt_only() -> None:
        files = lt.list_files(str(path))
        creator = lt.create_torrent(files, 0, lt.create_torrent.v1_only)
        lt.set_piece_hashes(creator, str(path.parent))

    lt_s = best_of(3, lt_only)
    mktorrent = shutil.which("mktorrent")
    cores = os.cpu_count() or 1
    rows = [("node make_torrent", node_s), ("libtorrent set_piece_hashes", lt_s)]
    reference = None
    if mktorrent:
        out = work / "m.torrent"

        def run_mktorrent() -> None:
            out.unlink(missing_ok=True)
            subprocess.run(
                [mktorrent, "-t", str(cores), "-l", str(piece_length.bit_length() - 1),
                 "-a", "http://127.0.3.50/announce", "-o", str(out), str(path)],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip

        reference = best_of(3, run_mktorrent)
        rows.append((f"mktorrent -t {cores}", reference))
    table = Table(title=f"hashing {size / (1 << 30):.2f} GiB, piece {piece_length >> 10} KiB")
    for column in ("what", "seconds", "MiB/s", "vs mktorrent"):
        table.add_column(column, justify="right" if column != "what" else "left")
    for name, seconds in rows:
        ratio = f"{reference / seconds:.0%}" if reference else "n/a"
        table.add_row(name, f"{seconds:.3f}", f"{size / seconds / (1 << 20):.0f}", ratio)
    Console().print(table)
    if reference:
        verdict = "met" if reference / node_s >= 0.9 else "NOT met"
        print(f"target: node >= 90% of mktorrent -> {reference / node_s:.0%}, {verdict}")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def seeding(work: Path, count: int, idle: float) -> None:
    with socket.socket() as sock:
        sock.bind((IP, 0))
        port = sock.getsockname()[1]
    www = work / "www"
    for index in range(count):
        path = www / "bench" / f"{index:05d}.bin"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(SMALL))
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    command = [
        sys.executable, "-m", "smartget", "node", "--ip", IP, "--zone", "bench",
        "--wwwroot", str(www), "--data-dir", str(data), "--api", f"{IP}:{port}",
        "--files", f"{IP}:0", "--bt-port", "0", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "SMARTGET_NODE_TOKEN": TOKEN}  # secrets never on argv
    proc = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://{IP}:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ) as api:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await api.get("/ping")).text == "PONG":
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.1)
            rss_before = _rss_kib(proc.pid)
            queue = list(range(count))
            failures = 0

            async def worker() -> None:
                nonlocal failures
                while queue:
                    index = queue.pop()
                    body = {
                        "taskid": str(index),
                        "event": "maketorrent",
                        "args": {"filename": f"bench/{index:05d}.bin"},
                    }
                    reply = (await api.post("/maketorrent", json=body)).json()
                    failures += reply["result"] != "success"

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            made_s = time.perf_counter() - start
            await asyncio.sleep(2)
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            await asyncio.sleep(idle)
            cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            rss_after = _rss_kib(proc.pid)
            running = len((await api.get("/status")).json()["torrents"])
    finally:
        proc.terminate()
        await proc.wait()
    table = Table(title=f"a node seeding {count} torrents of {SMALL >> 10} KiB")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("maketorrent tasks/s (8 in flight)", f"{count / made_s:.0f}")
    table.add_row("failed tasks", str(failures))
    table.add_row("torrents running", str(running))
    table.add_row("RSS before, MiB", f"{rss_before / 1024:.1f}")
    table.add_row("RSS seeding, MiB", f"{rss_after / 1024:.1f}")
    table.add_row("RSS per torrent, KiB", f"{(rss_after - rss_before) / count:.1f}")
    table.add_row(f"CPU while seeding ({idle:.0f} s), % of a core", f"{cpu:.1%}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1GiB", help="size of the file to hash")
    parser.add_argument("--torrents", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of seeding to measure")
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    parser.add_argument("--skip-hashing", action="store_true")
    parser.add_argument("--skip-seeding", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as temp:
        work = args.dir or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_hashing:
            hashing(work, parse_size(args.size))
        if not args.skip_seeding:
            asyncio.run(seeding(work, args.torrents, args.idle))


if __name__ == "__main__":
    main()
