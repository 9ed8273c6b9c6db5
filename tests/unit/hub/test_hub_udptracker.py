"""The BEP 15 core: connect, announce, scrape, expiring connection ids, hostile bytes."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from smartget.hub import tracker as tr
from smartget.hub.collector import Collector
from smartget.hub.commands import HubCommands
from smartget.hub.registry import Registry
from smartget.hub.udptracker import ID_LIFETIME, PROTOCOL_ID, UdpTracker

HASH = bytes(range(20))
SECRET = b"s" * 32


def core(**kw: object) -> UdpTracker:
    registry = Registry()
    tracker = tr.Tracker(
        zone_of=registry.zone_of_addr,
        has_capacity=lambda ip: registry.free_capacity_of_addr(ip) > 0,
        **kw,  # type: ignore[arg-type]
    )
    tracker.allow(HASH)
    return UdpTracker(tracker, HubCommands(registry, tracker, Collector()).announce, SECRET)


def connect(udp: UdpTracker, ip: str, port: int, now: float) -> int:
    reply = udp.receive(struct.pack("!qii", PROTOCOL_ID, 0, 77), ip, port, now).data
    assert reply is not None
    assert len(reply) == 16
    action, transaction, connection_id = struct.unpack("!iiq", reply)
    assert (action, transaction) == (0, 77)
    return int(connection_id)


def announce_packet(cid: int, port: int, left: int = 0, event: int = 0, numwant: int = -1) -> bytes:
    return struct.pack(
        "!qii20s20sqqqiIIiH",
        cid,
        1,
        5,
        HASH,
        b"-LT0001-000000000001",
        0,
        left,
        0,
        event,
        0,
        1,
        numwant,
        port,
    )


def test_connect_then_announce_lists_the_other_peers() -> None:
    udp = core()
    cid = connect(udp, "10.0.0.1", 4000, now=0)
    assert udp.receive(announce_packet(cid, 6881, left=0), "10.0.0.1", 4000, 0).data
    cid2 = connect(udp, "10.0.0.2", 4001, now=1)
    reply = udp.receive(announce_packet(cid2, 6882, left=9, event=2), "10.0.0.2", 4001, 1).data
    assert reply is not None
    action, transaction, interval, leechers, seeders = struct.unpack_from("!iiiii", reply)
    assert (action, transaction, interval, leechers, seeders) == (1, 5, tr.DEFAULT_INTERVAL, 1, 1)
    assert reply[20:] == bytes([10, 0, 0, 1]) + struct.pack("!H", 6881)


def test_connection_ids_expire_and_are_bound_to_the_address() -> None:
    udp = core()
    cid = connect(udp, "10.0.0.1", 4000, now=0)
    packet = announce_packet(cid, 6881)
    assert udp.receive(packet, "10.0.0.1", 4000, ID_LIFETIME * 1.5).data  # next bucket: fine
    assert udp.receive(packet, "10.0.0.1", 4000, ID_LIFETIME * 2.5).data is None  # expired
    assert udp.receive(packet, "10.0.0.9", 4000, 0).data is None  # another address
    assert udp.receive(announce_packet(12345, 6881), "10.0.0.1", 4000, 0).data is None
    assert udp.statistics()["dropped"] == 3


def test_scrape_and_errors() -> None:
    udp = core()
    cid = connect(udp, "10.0.0.1", 4000, now=0)
    udp.receive(announce_packet(cid, 6881, left=0), "10.0.0.1", 4000, 0)
    other = b"\xee" * 20
    reply = udp.receive(struct.pack("!qii", cid, 2, 9) + HASH + other, "10.0.0.1", 4000, 0).data
    assert reply == struct.pack("!ii", 2, 9) + struct.pack("!iii", 1, 0, 0) + bytes(12)
    unknown = announce_packet(cid, 6881).replace(HASH, other)
    error = udp.receive(unknown, "10.0.0.1", 4000, 0).data
    assert error is not None
    assert error[:8] == struct.pack("!ii", 3, 5)
    assert b"unknown torrent" in error
    assert len(error) <= len(unknown)
    bad_action = udp.receive(struct.pack("!qii", cid, 7, 3), "10.0.0.1", 4000, 0).data
    assert bad_action is not None
    assert bad_action.startswith(struct.pack("!ii", 3, 3))


def test_replies_are_never_larger_than_requests_before_a_connection() -> None:
    udp = core()
    assert udp.receive(struct.pack("!qii", 1, 0, 1), "10.0.0.1", 1, 0).data is None  # no magic
    assert udp.receive(b"short", "10.0.0.1", 1, 0).data is None
    assert udp.receive(b"x" * 2000, "10.0.0.1", 1, 0).data is None


@given(st.binary(max_size=1600), st.integers(0, 2**31))
def test_arbitrary_datagrams_get_a_reply_or_none_never_an_exception(data: bytes, now: int) -> None:
    udp = core(open_tracker=True)
    reply = udp.receive(data, "10.0.0.1", 4000, float(now))
    assert reply.data is None or len(reply.data) <= max(16, len(data)) or data[8:12] != b"\0\0\0\3"


@given(st.binary(min_size=82, max_size=200))
def test_arbitrary_announces_with_a_valid_id(body: bytes) -> None:
    udp = core(open_tracker=True)
    cid = connect(udp, "10.0.0.1", 4000, now=0)
    udp.receive(struct.pack("!qii", cid, 1, 1) + body, "10.0.0.1", 4000, 0)
