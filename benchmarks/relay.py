"""Benchmark the relay registry (co2's XML-RPC relay in the hub).

Not a test. Prints a table:

* request parsing: the relay's safe parser (defusedxml, limits, value checks) against
  the stdlib's bare ``xmlrpc.client.loads`` on the same relay.relay request;
* end to end: one satellite calls relay.relay as fast as it can (one call in flight);
  every other satellite gets each message through its notify. Rows: relay.relay
  calls/s accepted by the hub, notifies/s delivered, and, as the reference, notifies/s
  that the same stdlib client reaches calling one satellite's notify directly;
* the same with ``--senders`` satellites relaying at once: 'OK' waits for the message's
  commit, so one client measures that latency, several show the group commit (store
  commits per accepted message) and what delivery can do when accepting is not the
  bottleneck.

Satellites are stdlib SimpleXMLRPCServers (threads) on 127.0.4.2-4; the hub runs in
this process on 127.0.4.1. The issue names no target.

Usage: python benchmarks/relay.py [--messages 300] [--satellites 6] [--senders 3]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import queue
import sys
import tempfile
import threading
import time
import timeit
import xmlrpc.client
from pathlib import Path
from typing import Any
from xmlrpc.server import SimpleXMLRPCServer

from smartget.hub.app import HubSettings, running
from smartget.hub.relay import RelaySettings
from smartget.hub.relay.xmlrpc import parse_request

IPS = ("127.0.4.2", "127.0.4.3", "127.0.4.4")


class Transport(xmlrpc.client.Transport):
    def __init__(self, source_ip: str) -> None:
        super().__init__()
        self.source_ip = source_ip

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, _ = self.get_host_info(host)
        conn = http.client.HTTPConnection(chost, timeout=30, source_address=(self.source_ip, 0))
        self._connection = host, conn
        return conn


class Satellite:
    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.got: queue.Queue[Any] = queue.Queue()
        self.server = SimpleXMLRPCServer((ip, 0), logRequests=False, allow_none=True)
        self.server.register_function(lambda d: self.got.put(d) or "OK", "notify")
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def bench_parse() -> list[tuple[str, str, str]]:
    body = xmlrpc.client.dumps(
        ({"host_id": "127.0.4.2:8000", "data": {"text": "x" * 800, "seq": 1, "tags": ["a"] * 8}},),
        "relay.relay",
    ).encode()
    n = 3000
    ours = min(timeit.repeat(lambda: parse_request(body), number=n, repeat=3)) / n
    ref = min(timeit.repeat(lambda: xmlrpc.client.loads(body), number=n, repeat=3)) / n
    return [
        ("parse relay.relay (1 KiB), safe parser", f"{ours * 1e6:.1f} µs", f"{ref / ours:.0%}"),
        ("parse relay.relay (1 KiB), stdlib loads", f"{ref * 1e6:.1f} µs", "reference"),
    ]


def _relay_all(url: str, sat: Satellite, messages: int, tag: str) -> None:
    host_id = f"{sat.ip}:{sat.port}"
    with xmlrpc.client.ServerProxy(url, Transport(sat.ip)) as proxy:
        for n in range(messages):
            proxy.relay.relay({"host_id": host_id, "data": {"n": n, "tag": tag}})


def _receive(sat: Satellite, count: int) -> None:
    for _ in range(count):
        sat.got.get(timeout=60)


async def bench_relay(messages: int, n_sats: int, n_senders: int) -> list[tuple[str, str, str]]:
    sats = [Satellite(IPS[i % len(IPS)]) for i in range(n_sats)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = HubSettings(
                data_dir=Path(tmp),
                listen=("127.0.4.1", 0),
                http=("127.0.4.1", 0),
                token="bench",
                # no limiter and room for every message: measure the pipeline itself
                relay=RelaySettings(queue=100_000, rate=1e9, mailbox=messages, ping_interval=3600),
            )
            async with running(settings) as hub:
                url = hub.http_url.replace("http://", f"http://relay:{hub.token}@") + "/RPC2"
                sender, receivers = sats[0], sats[1:]

                def drive() -> tuple[float, float]:
                    for sat in sats:
                        with xmlrpc.client.ServerProxy(url, Transport(sat.ip)) as p:
                            p.relay.register({"port": sat.port})
                    host_id = f"{sender.ip}:{sender.port}"
                    with xmlrpc.client.ServerProxy(url, Transport(sender.ip)) as proxy:
                        start = time.perf_counter()
                        for n in range(messages):
                            proxy.relay.relay({"host_id": host_id, "data": {"n": n}})
                        accepted = time.perf_counter() - start
                    for sat in receivers:
                        for _ in range(messages):
                            sat.got.get(timeout=60)
                    return accepted, time.perf_counter() - start

                accepted, delivered = await asyncio.to_thread(drive)

                # several senders at once (each relays as itself)
                senders = sats[: max(1, min(n_senders, n_sats))]
                each = messages // len(senders)
                commits = hub.store.commits

                def drive_many() -> tuple[float, float]:
                    start = time.perf_counter()
                    threads = [
                        threading.Thread(target=_relay_all, args=(url, sat, each, "m"))
                        for sat in senders
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    accepted = time.perf_counter() - start
                    for sat in sats:
                        _receive(sat, each * (len(senders) - (sat in senders)))
                    return accepted, time.perf_counter() - start

                many_accepted, many_delivered = await asyncio.to_thread(drive_many)
                commits = hub.store.commits - commits

        # the reference: the same stdlib client calling one satellite's notify directly
        target = sats[1]

        def direct() -> float:
            with xmlrpc.client.ServerProxy(f"http://{target.ip}:{target.port}/") as proxy:
                start = time.perf_counter()
                for n in range(messages):
                    proxy.notify({"host_id": "x", "data": {"n": n}, "notify_pass": ""})
                return time.perf_counter() - start

        ref = await asyncio.to_thread(direct)
    finally:
        for sat in sats:
            sat.stop()
    notifies = messages * (n_sats - 1)
    many = each * len(senders)
    many_notifies = many * (n_sats - 1)
    return [
        ("relay.relay accepted (1 client)", f"{messages / accepted:,.0f} /s", ""),
        (
            f"notifies delivered ({n_sats - 1} satellites)",
            f"{notifies / delivered:,.0f} /s",
            f"{(notifies / delivered) / (messages / ref):.0%}",
        ),
        (f"relay.relay accepted ({len(senders)} clients)", f"{many / many_accepted:,.0f} /s", ""),
        (f"  store commits per message ({len(senders)} clients)", f"{commits / many:.2f}", ""),
        (
            f"notifies delivered ({n_sats - 1} satellites, {len(senders)} senders)",
            f"{many_notifies / many_delivered:,.0f} /s",
            f"{(many_notifies / many_delivered) / (messages / ref):.0%}",
        ),
        ("direct notify, one satellite (stdlib)", f"{messages / ref:,.0f} /s", "reference"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--satellites", type=int, default=6)
    parser.add_argument("--senders", type=int, default=3)
    args = parser.parse_args()
    rows = bench_parse()
    rows += asyncio.run(bench_relay(args.messages, args.satellites, args.senders))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>14}  {'vs reference':>12}")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>14}  {ratio:>12}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
