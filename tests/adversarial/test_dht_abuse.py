"""The DHT as an attacker finds it (issue 12, item 9): a real ``smartget dht run`` on
127.0.7.1, attackers and victims on other 127.0.x.y addresses. Bounded loops; every
wait has a deadline."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
from fastbencode import bdecode, bencode

from smartget.dht import krpc
from tests.helpers import stop_process

pytestmark = pytest.mark.asyncio

DHT_IP = "127.0.7.1"
IH = b"\x5a" * 20


@asynccontextmanager
async def dht_process(*options: str) -> AsyncIterator[tuple[str, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smartget", "dht", "run", "--bind", f"{DHT_IP}:0",
        "--bootstrap", "127.0.7.250:9", *options,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "the DHT exited before listening"
                if match := re.search(r"listening on 127\.0\.7\.1:(\d+)", line):
                    break
        yield DHT_IP, int(match.group(1))
    finally:
        await stop_process(proc)


@contextmanager
def udp(ip: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((ip, 0))
    try:
        yield sock
    finally:
        sock.close()


def query(method: bytes, tid: bytes = b"aa", **args: object) -> bytes:
    a: dict[bytes, object] = {b"id": os.urandom(20)}
    a.update({k.encode(): v for k, v in args.items()})
    return bencode({b"t": tid, b"y": b"q", b"q": method, b"a": a})


def ask(sock: socket.socket, data: bytes, dht: tuple[str, int], within: float = 5.0) -> dict:  # type: ignore[type-arg]
    sock.settimeout(within)
    sock.sendto(data, dht)
    reply, _ = sock.recvfrom(4096)
    return bdecode(reply)  # type: ignore[no-any-return]


def announce(sock: socket.socket, dht: tuple[str, int], port: int) -> None:
    token = ask(sock, query(b"get_peers", info_hash=IH), dht)[b"r"][b"token"]
    reply = ask(sock, query(b"announce_peer", info_hash=IH, port=port, token=token), dht)
    assert b"r" in reply


async def test_one_ip_cannot_push_the_real_peer_out_of_a_swarm() -> None:
    async with dht_process("--rate-limit", "0") as dht:
        with udp("127.0.7.7") as real, udp("127.0.7.66") as attacker, udp("127.0.7.8") as asker:
            announce(real, dht, 6881)
            token = ask(attacker, query(b"get_peers", info_hash=IH), dht)[b"r"][b"token"]
            attacker.settimeout(5)
            window = 64  # announces in flight; each is answered, so all are processed
            for first in range(1, 2001, window):
                ports = range(first, min(first + window, 2001))
                for port in ports:
                    attacker.sendto(
                        query(b"announce_peer", info_hash=IH, port=port, token=token), dht
                    )
                for _ in ports:
                    attacker.recvfrom(4096)
            values = ask(asker, query(b"get_peers", info_hash=IH), dht)[b"r"][b"values"]
    peers = set(krpc.decode_peers(values))
    assert ("127.0.7.7", 6881) in peers  # the issue: pushed out by 2,000 announces
    assert {p for p in peers if p[0] == "127.0.7.66"} == {("127.0.7.66", 2000)}


async def test_a_spoofed_victim_receives_a_bounded_number_of_bytes() -> None:
    async with dht_process() as dht:  # the defaults
        for i in range(1, 121):  # a swarm worth amplifying: 120 peers
            with udp(f"127.0.8.{i}") as peer:
                announce(peer, dht, 6881)
        # the victim's address sends get_peers as fast as it can for 2 s; it never
        # answers a query of ours, so nothing proves the address is really the sender's
        with udp("127.0.7.99") as victim:
            victim.setblocking(False)
            data = query(b"get_peers", info_hash=IH)
            received = replies = biggest = 0
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < 2.0:
                for _ in range(20):
                    victim.sendto(data, dht)
                while True:
                    try:
                        reply = victim.recv(4096)
                    except BlockingIOError:
                        break
                    received, replies = received + len(reply), replies + 1
                    biggest = max(biggest, len(reply))
            victim.settimeout(0.5)  # what is still on its way (a deadline, not a wait)
            try:
                while True:
                    reply = victim.recv(4096)
                    received, replies = received + len(reply), replies + 1
                    biggest = max(biggest, len(reply))
            except TimeoutError:
                pass
    assert replies > 0  # it is still answered ...
    assert biggest <= 5 * len(data), (len(data), biggest)  # ... small (was 95 B -> 1,105 B)
    assert received <= 16384 + 2048 * (elapsed + 0.5) + 2048, received  # was 862 KiB in 2 s


async def test_many_source_addresses_do_not_reset_a_victims_rate() -> None:
    async with dht_process("--rate-limit", "0.1", "--max-sources", "64") as dht:
        with udp("127.0.7.60") as victim:
            ping = query(b"ping")
            assert b"r" in ask(victim, ping, dht)  # its one token of burst
            for i in range(100):  # more source addresses than the table holds
                with udp(f"127.0.9.{i + 1}") as spoofed:
                    spoofed.sendto(ping, dht)
            victim.settimeout(1.0)  # loopback delivers in order: these came first
            victim.sendto(ping, dht)
            with pytest.raises(TimeoutError):
                victim.recvfrom(4096)  # still over its rate: its entry survived the flood
