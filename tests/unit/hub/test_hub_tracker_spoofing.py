"""Issue 12.3: nobody but the peer itself lists, changes or removes a peer; caps."""

from __future__ import annotations

import contextlib
import struct

import pytest

from smartget.errors import TrackerError
from smartget.hub import tracker as tr
from smartget.hub.collector import Collector
from smartget.hub.commands import HubCommands
from smartget.hub.registry import Registry
from smartget.hub.udptracker import PROTOCOL_ID, UdpTracker

HASH = bytes(range(20))
SEED, STRANGER, VICTIM = "10.0.0.5", "10.0.0.66", "198.51.100.7"


def query(peer_id: bytes, port: int, *, left: int = 0, event: str = "", extra: str = "") -> str:
    q = f"info_hash={HASH.hex()}&peer_id={peer_id.decode()}&port={port}&left={left}"
    q = q.replace(f"info_hash={HASH.hex()}", "info_hash=" + "".join(f"%{b:02X}" for b in HASH))
    return q + (f"&event={event}" if event else "") + extra


def announce(tracker: tr.Tracker, q: str, source: str, now: float = 0.0) -> tr.AnnounceReply:
    return tracker.announce(tr.parse_announce(q, source), now)


def listed(tracker: tr.Tracker) -> set[tuple[object, object]]:
    return {(p["ip"], p["port"]) for p in tracker.swarm(HASH)}


def test_a_stranger_cannot_stop_a_seed_with_its_ip() -> None:
    tracker = tr.Tracker(open_tracker=True)
    announce(tracker, query(b"-LT0001-seed00000001", 6881), SEED)
    stop = query(b"-LT0001-evil00000001", 6881, event="stopped", extra=f"&ip={SEED}")
    announce(tracker, stop, STRANGER)
    assert (SEED, 6881) in listed(tracker)
    # The seed itself may stop.
    announce(tracker, query(b"-LT0001-seed00000001", 6881, event="stopped"), SEED)
    assert listed(tracker) == set()


def test_a_declared_ip_is_ignored_unless_it_is_the_source_or_trusted() -> None:
    tracker = tr.Tracker(open_tracker=True)
    for port in range(1, 201):
        with contextlib.suppress(TrackerError):  # past 16 from one address: refused
            q = query(b"-XX0001-%012d" % port, port, extra=f"&ip={VICTIM}")
            announce(tracker, q, STRANGER)
    assert all(ip != VICTIM for ip, _ in listed(tracker))
    trusting = tr.Tracker(open_tracker=True, trust_ip_nets=("10.9.0.0/16",))
    announce(trusting, query(b"-XX0001-000000000001", 7000, extra=f"&ip={VICTIM}"), "10.9.1.1")
    announce(trusting, query(b"-XX0001-000000000002", 7001, extra=f"&ip={SEED}"), SEED)
    assert listed(trusting) == {(VICTIM, 7000), (SEED, 7001)}


def test_only_the_same_peer_id_or_key_stops_an_entry() -> None:
    tracker = tr.Tracker(open_tracker=True)
    announce(tracker, query(b"-LT0001-seed00000001", 6881, extra="&key=abc"), SEED)
    # Same address (a NAT), another client: no.
    for extra in ("&key=xyz", ""):
        stop = query(b"-LT0001-other0000001", 6881, event="stopped", extra=extra)
        with pytest.raises(TrackerError, match="only the peer itself"):
            announce(tracker, stop, SEED)
    assert listed(tracker) == {(SEED, 6881)}
    announce(tracker, query(b"-LT0001-seed00000001", 6881, event="stopped", extra="&key=abc"), SEED)
    assert listed(tracker) == set()


def test_peers_are_capped_per_source_address_and_per_swarm() -> None:
    tracker = tr.Tracker(open_tracker=True, max_peers_per_ip=4, max_peers_per_swarm=6)
    for port in range(1, 10):
        refused = pytest.raises(TrackerError, match="4 peers")
        with refused if port > 4 else contextlib.nullcontext():
            announce(tracker, query(b"-XX0001-%012d" % port, port), STRANGER)
    # An honest leecher gets at most 4 of the stranger's entries.
    reply = announce(tracker, query(b"-LT0001-leech0000001", 6881, left=5), SEED)
    assert len(reply.peers) == 4
    announce(tracker, query(b"-LT0001-leech0000002", 6882, left=5), "10.0.0.7")
    with pytest.raises(TrackerError, match="6 peers"):
        announce(tracker, query(b"-LT0001-leech0000003", 6883, left=5), "10.0.0.8")
    # The stranger's entries expire, and the address may join again.
    tracker.expire(10_000.0)
    announce(tracker, query(b"-XX0001-000000000099", 99), STRANGER, now=10_000.0)


def test_a_full_scrape_is_refused_unless_open() -> None:
    tracker = tr.Tracker()
    tracker.allow(HASH)
    announce(tracker, query(b"-LT0001-seed00000001", 6881), SEED)
    with pytest.raises(TrackerError, match="info_hash"):
        tracker.scrape(tr.parse_scrape(""), 0.0)
    assert tracker.scrape(tr.parse_scrape("info_hash=" + "%00" * 20), 0.0) == {}
    opened = tr.Tracker(open_tracker=True)
    announce(opened, query(b"-LT0001-seed00000001", 6881), SEED)
    assert HASH in opened.scrape(tr.parse_scrape(""), 0.0)


def udp_announce(udp: UdpTracker, source: str, declared: str, port: int, event: int) -> None:
    cid = int(
        struct.unpack(
            "!iiq", udp.receive(struct.pack("!qii", PROTOCOL_ID, 0, 1), source, 9, 0.0).data or b""
        )[2]
    )
    packed = struct.unpack("!I", bytes(int(x) for x in declared.split(".")))[0]
    data = struct.pack(
        "!qii20s20sqqqiIIiH",
        cid,
        1,
        5,
        HASH,
        b"-LT0001-000000000001",
        0,
        0,
        0,
        event,
        packed,
        1,
        -1,
        port,
    )
    udp.receive(data, source, 9, 0.0)


def test_udp_ip_field_is_honoured_only_from_a_trusted_network() -> None:
    registry = Registry()
    tracker = tr.Tracker(open_tracker=True, trust_ip_nets=("10.9.0.0/16",))
    udp = UdpTracker(tracker, HubCommands(registry, tracker, Collector()).announce, b"s" * 32)
    udp_announce(udp, SEED, "0.0.0.0", 6881, 2)
    udp_announce(udp, STRANGER, SEED, 6881, 3)  # stopped, claiming the seed's address
    udp_announce(udp, STRANGER, VICTIM, 7000, 2)
    udp_announce(udp, "10.9.1.1", VICTIM, 7001, 2)
    assert listed(tracker) == {(SEED, 6881), (STRANGER, 7000), (VICTIM, 7001)}
