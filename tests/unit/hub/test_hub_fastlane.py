"""The fast lane's HTTP parsing: arbitrary bytes are answered, handed over or held."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.httpserver import HttpLimits
from smartget.hub import tracker as tr
from smartget.hub.collector import Collector
from smartget.hub.commands import HubCommands
from smartget.hub.fastlane import FastLane, Gate
from smartget.hub.fleet import FleetHandlers
from smartget.hub.registry import Registry


class Host:
    def __init__(self) -> None:
        self.tracker = tr.Tracker(open_tracker=True)
        self.collector = Collector()
        self.commands = HubCommands(Registry(), self.tracker, self.collector)
        self.udp_tracker_address = None

    def now(self) -> float:
        return 0.0

    async def save_tracked(self, info_hash: str, name: str = "") -> None:
        return None

    async def save_done(self, report: Any) -> None:
        return None

    async def forget_done(self, sha1: str) -> None:
        return None


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.peer = "10.0.0.1"
        self.protocol: asyncio.BaseProtocol | None = None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 5000) if name == "peername" else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Fallback(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data


def lane() -> tuple[FastLane, Transport, list[Fallback]]:
    handed: list[Fallback] = []

    def fallback() -> Fallback:
        handed.append(Fallback())
        return handed[-1]

    protocol = FastLane(FleetHandlers(Host()), fallback, set(), lambda: 0.0)  # type: ignore[arg-type]
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport, handed


ANNOUNCE = (
    b"GET /announce?info_hash=%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13"
    b"&peer_id=-XX0001-000000000000&port=6881&left=5 HTTP/1.1\r\nHost: h\r\n\r\n"
)


def test_pipelined_announces_are_answered_in_order_on_one_connection() -> None:
    protocol, transport, handed = lane()
    protocol.data_received(ANNOUNCE * 2 + ANNOUNCE[:30])
    assert transport.written.count(b"HTTP/1.1 200 OK") == 2
    assert b"8:completei0e10:incompletei1e" in transport.written
    protocol.data_received(ANNOUNCE[30:])
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3
    assert not handed
    assert not transport.closed


def test_other_routes_are_handed_over_with_every_byte() -> None:
    protocol, transport, handed = lane()
    request = b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
    protocol.data_received(ANNOUNCE + request + ANNOUNCE)
    assert transport.written.count(b"200 OK") == 1
    assert handed
    assert bytes(handed[0].data) == request + ANNOUNCE
    assert transport.protocol is handed[0]


def test_report_body_and_connection_close() -> None:
    protocol, transport, _ = lane()
    body = (
        b'{"nodeid": "z_10.0.0.1", "status": "downloading", "args": {"sha1": "' + b"a" * 40 + b'"}}'
    )
    protocol.data_received(
        b"POST /report_peerstatus HTTP/1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % len(body)
        + body
    )
    assert b'{"result":"received"}' in transport.written
    assert b"connection: close" in transport.written
    assert transport.closed


def test_a_head_too_large_is_refused() -> None:
    protocol, transport, _ = lane()
    protocol.data_received(b"GET /announce?" + b"a" * 9000)
    assert transport.written.startswith(b"HTTP/1.1 431")
    assert transport.closed


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=5), st.sampled_from([b"", ANNOUNCE]))
def test_arbitrary_bytes_never_raise(chunks: list[bytes], prefix: bytes) -> None:
    protocol, _, _ = lane()
    protocol.data_received(prefix)
    for chunk in chunks:
        if protocol.transport is None:
            break
        protocol.data_received(chunk)


class SharedCommit(Host):
    """A store whose writes of one group share one commit future, as hub/store.py's do."""

    def __init__(self) -> None:
        super().__init__()
        self.commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def save_done(self, report: Any) -> asyncio.Future[None]:  # type: ignore[override]
        return self.commit


@pytest.mark.asyncio
async def test_a_client_gone_before_the_save_does_not_cancel_the_shared_commit() -> None:
    """Cancelling one reply that waits for the store must not cancel the commit every
    other write of the group waits for (it once stopped the hub's store writer)."""
    host = SharedCommit()
    handlers = FleetHandlers(host)  # type: ignore[arg-type]
    body = b'{"nodeid": "z_10.0.0.1", "status": "seeding", "args": {"sha1": "' + b"b" * 40 + b'"}}'
    status, _, saved = handlers.report(body, "10.0.0.1")
    assert status == 200
    assert saved is not None
    waiter = asyncio.ensure_future(saved)
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    assert not host.commit.cancelled()
    host.commit.set_result(None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gated(gate: Gate, clock: Clock, peer: str = "10.0.0.1") -> tuple[FastLane, Transport]:
    protocol = FastLane(
        FleetHandlers(Host()),  # type: ignore[arg-type]
        Fallback,
        set(),
        clock,
        gate,
    )
    transport = Transport()
    transport.peer = peer
    protocol.connection_made(transport)
    return protocol, transport


def test_a_request_head_has_a_deadline_that_trickled_bytes_do_not_extend() -> None:
    clock = Clock()
    gate = Gate(HttpLimits(header_timeout=2.0))
    silent, _ = gated(gate, clock)
    assert not silent.expired(1.9)
    assert silent.expired(2.1)  # silent since it connected: gone at the header deadline
    slow, _ = gated(gate, clock)
    for t in (0.5, 1.0, 1.5, 2.0, 2.4):
        clock.now = t
        slow.data_received(b"G")  # a byte now and then never finishes the head
    assert slow.expired(2.6)
    # A finished request earns the keep-alive idle time (30 s).
    clock.now = 0.0
    served, transport = gated(gate, clock)
    clock.now = 1.0
    served.data_received(ANNOUNCE)
    assert b"200 OK" in transport.written
    assert not served.expired(20.0)
    assert served.expired(31.5)


def test_connections_past_a_cap_get_503_and_a_graceful_close() -> None:
    clock = Clock()
    gate = Gate(HttpLimits(max_connections=3, max_per_ip=2))
    first, _ = gated(gate, clock)
    gated(gate, clock)
    refused, transport = gated(gate, clock)
    assert transport.written.startswith(b"HTTP/1.1 503")
    assert transport.eof  # FIN now, close once it drained
    assert not transport.closed
    refused.data_received(b"GET / HTTP/1.1\r\n\r\n")  # read and dropped
    assert refused.expired(clock.now + 2)
    _, other = gated(gate, clock, "10.0.0.2")
    assert not other.written
    _, full = gated(gate, clock, "10.0.0.3")
    assert full.written.startswith(b"HTTP/1.1 503")
    # A closed connection frees its place, a handed-over one keeps it until closed.
    first.connection_lost(None)
    _, again = gated(gate, clock, "10.0.0.3")
    assert not again.written
    assert gate.census.total == 3
