"""DHT benchmark (not a test): flood throughput vs libtorrent, and lookups in 500 nodes.

1. Flood: a node runs alone in a child process; this process floods it with get_peers
   (random info-hashes, a window of queries in flight) for a few seconds and counts the
   replies. The same load then goes to a libtorrent DHT node (its rate limits raised).
   Reported: replies per second each, and ours / libtorrent's.
2. Network: 500 of our nodes on 127.0.1.201-204 bootstrap from each other; get_peers
   lookups (to convergence) from random nodes for announced hashes are timed.

    .venv/bin/python benchmarks/dht.py [--seconds 3] [--nodes 500] [--lookups 100]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import select
import socket
import statistics
import time
from typing import Any

from fastbencode import bencode

FLOOD_IP = "127.0.1.200"
CLIENT_IP = "127.0.1.199"
NET_IPS = ("127.0.1.201", "127.0.1.202", "127.0.1.203", "127.0.1.204")
WINDOW = 128


# -- 1. flood ------------------------------------------------------------------------


def _serve_ours(ready: Any, stop: Any) -> None:
    from smartget.dht import DHT, Node

    async def main() -> None:
        async with DHT(FLOOD_IP, 0, rate_limit=0) as node:
            for i in range(200):  # a realistic table: answers carry 8 nodes
                node.root.add(Node(os.urandom(20), "127.0.1.250", 1000 + i, last_response=1.0), 1.0)
            ready.send(node.bind_port)
            await asyncio.to_thread(stop.wait)

    asyncio.run(main())


def _serve_libtorrent(ready: Any, stop: Any) -> None:
    import libtorrent as lt

    ses = lt.session(
        {
            "listen_interfaces": f"{FLOOD_IP}:0",
            "outgoing_interfaces": FLOOD_IP,
            "enable_dht": True,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_enforce_node_id": False,
            "dht_ignore_dark_internet": False,
            "dht_bootstrap_nodes": "",
            "dht_block_ratelimit": 10_000_000,
            "dht_upload_rate_limit": 1_000_000_000,
        }
    )
    ready.send(ses.listen_port())
    stop.wait()
    del ses


def flood(target: tuple[str, int], seconds: float) -> tuple[float, int]:
    """Replies per second with WINDOW get_peers in flight; and how many were sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CLIENT_IP, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.setblocking(False)
    myid = os.urandom(20)
    prefix = [
        bencode(
            {
                b"a": {b"id": myid, b"info_hash": os.urandom(20)},
                b"q": b"get_peers",
                b"t": b"xx",
                b"y": b"q",
            }
        )
        for _ in range(64)
    ]
    sent = replies = 0

    def send(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            try:
                sock.sendto(prefix[sent % 64], target)
            except BlockingIOError:
                return
            sent += 1

    # warm up, then measure
    end_warm = time.monotonic() + 0.5
    send(WINDOW)
    start = None
    deadline = end_warm + seconds
    while (now := time.monotonic()) < deadline:
        if start is None and now >= end_warm:
            start, replies = now, 0
        readable, _, _ = select.select([sock], [], [], 0.05)
        if not readable:
            send(WINDOW)  # replies were lost: refill the window
            continue
        got = 0
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            got += 1
            if b"1:y1:r" in data:
                replies += 1
        send(got)
    sock.close()
    assert start is not None
    return replies / (time.monotonic() - start), sent


def flood_bench(seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    results = {}
    for name, target_fn in (("smartget", _serve_ours), ("libtorrent", _serve_libtorrent)):
        parent, child = ctx.Pipe()
        stop = ctx.Event()
        proc = ctx.Process(target=target_fn, args=(child, stop), daemon=True)
        proc.start()
        if not parent.poll(20):
            raise RuntimeError(f"{name} node did not start")
        port = parent.recv()
        rate, _ = flood((FLOOD_IP, port), seconds)
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        results[name] = rate
    return results


# -- 2. a network of 500 -------------------------------------------------------------


async def network_bench(size: int, lookups: int) -> dict[str, float]:
    from smartget.dht import DHT

    nodes = [
        DHT(NET_IPS[i % len(NET_IPS)], 0, rate_limit=0, query_timeout=1.0) for i in range(size)
    ]
    for node in nodes:
        await node.start()
    t0 = time.monotonic()
    for i, node in enumerate(nodes[1:], start=1):
        seeds = [(n.bind_ip, n.bind_port) for n in random.sample(nodes[:i], min(3, i))]
        await node.bootstrap(seeds, max_wait=10)
    build = time.monotonic() - t0
    hashes = [os.urandom(20) for _ in range(lookups)]
    for ih in hashes:
        await random.choice(nodes).announce_peer(ih, random.randint(1024, 65535), max_wait=10)
    times, queries, found = [], [], 0
    for ih in hashes:
        node = random.choice(nodes)
        before = node.core.stats["queries_out"]
        t = time.perf_counter()
        peers = await node.get_peers(ih, limit=None, max_wait=10)
        times.append((time.perf_counter() - t) * 1000)
        queries.append(node.core.stats["queries_out"] - before)
        found += bool(peers)
    table = statistics.mean(len(n.root) for n in nodes)
    for node in nodes:
        await node.stop()
    times.sort()
    return {
        "build_s": build,
        "table": table,
        "median_ms": statistics.median(times),
        "p90_ms": times[int(0.9 * (len(times) - 1))],
        "queries": statistics.median(queries),
        "found": found / len(hashes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=100)
    args = parser.parse_args()
    rates = flood_bench(args.seconds)
    net = asyncio.run(network_bench(args.nodes, args.lookups))
    ratio = rates["smartget"] / rates["libtorrent"]
    rows = [
        ("get_peers answered/s, smartget", f"{rates['smartget']:,.0f}", ""),
        ("get_peers answered/s, libtorrent", f"{rates['libtorrent']:,.0f}", ""),
        ("ratio smartget / libtorrent", f"{ratio:.2f}", "target >= 0.50"),
        ("network: nodes / mean table size", f"{args.nodes} / {net['table']:.0f}", ""),
        ("network: bootstrap all (s)", f"{net['build_s']:.1f}", ""),
        ("lookup median (ms)", f"{net['median_ms']:.1f}", "target < 100"),
        ("lookup p90 (ms)", f"{net['p90_ms']:.1f}", ""),
        ("lookup queries (median)", f"{net['queries']:.0f}", ""),
        ("lookups that found the peer", f"{net['found']:.0%}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>12}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")


if __name__ == "__main__":
    main()
