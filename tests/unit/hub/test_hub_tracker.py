"""The tracker core: announce parsing, swarms, fleet-aware peer ranking, scrape, bencode."""

import contextlib
import random
import struct
from urllib.parse import quote_from_bytes, urlencode

import fastbencode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import TrackerError
from smartget.hub import tracker as tr

HASH = bytes(range(20))
OTHER = b"\xff" * 20


def query(
    info_hash: bytes = HASH, peer_id: bytes = b"-SG0001-abcdefghijkl", **fields: object
) -> str:
    parts = [f"info_hash={quote_from_bytes(info_hash)}", f"peer_id={quote_from_bytes(peer_id)}"]
    fields.setdefault("port", 6881)
    return "&".join([*parts, urlencode(fields)])


def test_parse_announce() -> None:
    a = tr.parse_announce(query(left=10, event="started", numwant=500, uploaded=3), "10.0.0.1")
    assert a.info_hash == HASH
    assert a.peer_id == b"-SG0001-abcdefghijkl"
    assert (a.ip, a.port, a.left, a.uploaded, a.event) == ("10.0.0.1", 6881, 10, 3, "started")
    assert a.numwant == tr.MAX_NUMWANT
    assert a.compact


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("port=1", "missing info_hash"),
        (f"info_hash={quote_from_bytes(HASH)}&port=1", "missing peer_id"),
        (query(info_hash=b"short"), "info_hash must be 20 bytes, got 5"),
        (query(port=0), "port must be from 1 to 65535"),
        (query(port=70000), "port must be at most 65535"),
        (query(left=-1), "left must be a non-negative whole number"),
        (query(event="exploded"), "unknown event"),
        (query(ip="not-an-ip"), "ip must be an IP address"),
        ("x" * 5000, "query longer than 4096"),
    ],
)
def test_parse_announce_errors(raw: str, reason: str) -> None:
    with pytest.raises(TrackerError, match=reason):
        tr.parse_announce(raw, "10.0.0.1")


def announce(
    tracker: tr.Tracker, ip: str, left: int = 100, event: str = "", **kw: object
) -> tr.AnnounceReply:
    return tracker.announce(tr.parse_announce(query(left=left, event=event, **kw), ip), now=0)


def test_only_fleet_torrents_unless_open() -> None:
    tracker = tr.Tracker()
    with pytest.raises(TrackerError, match="only the fleet's torrents"):
        announce(tracker, "10.0.0.1")
    tracker.allow(HASH)
    assert announce(tracker, "10.0.0.1").incomplete == 1
    assert (
        tr.Tracker(open_tracker=True)
        .announce(tr.parse_announce(query(info_hash=OTHER, left=5), "1.2.3.4"), now=0)
        .incomplete
        == 1
    )


def test_peers_ranked_by_zone_then_capacity() -> None:
    zones = {"10.0.0.1": "a", "10.0.0.2": "b", "10.0.0.3": "a", "10.0.0.4": "b", "10.0.0.5": None}
    capacity = {"10.0.0.4"}
    tracker = tr.Tracker(
        zone_of=zones.get, has_capacity=capacity.__contains__, rng=random.Random(3)
    )
    tracker.allow(HASH)
    for ip in ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]:
        announce(tracker, ip)
    reply = announce(tracker, "10.0.0.1")
    ips = [ip for ip, _, _ in reply.peers]
    assert ips[0] == "10.0.0.3"  # same zone
    assert ips[1] == "10.0.0.4"  # free capacity
    assert set(ips[2:]) == {"10.0.0.2", "10.0.0.5"}
    assert "10.0.0.1" not in ips  # never yourself


def test_seeds_get_no_seeds_and_counts() -> None:
    tracker = tr.Tracker()
    tracker.allow(HASH)
    announce(tracker, "10.0.0.1", left=0)
    announce(tracker, "10.0.0.2", left=5)
    reply = announce(tracker, "10.0.0.3", left=0, event="completed")
    assert [ip for ip, _, _ in reply.peers] == ["10.0.0.2"]
    assert (reply.complete, reply.incomplete) == (2, 1)
    assert tracker.scrape(tr.Scrape((HASH,)), now=0) == {HASH: (2, 1, 1)}
    announce(tracker, "10.0.0.2", event="stopped")
    assert tracker.scrape(tr.Scrape(()), now=0) == {HASH: (2, 1, 0)}


def test_silent_peers_expire() -> None:
    tracker = tr.Tracker(interval=10)
    tracker.allow(HASH)
    announce(tracker, "10.0.0.1")
    assert tracker.expire(now=29) == 0
    assert tracker.expire(now=31) == 1
    assert tracker.statistics()["peers"] == 0


def test_encode_compact_and_dict() -> None:
    request = tr.parse_announce(query(), "10.0.0.9")
    reply = tr.AnnounceReply(30, 15, 1, 2, [("10.0.0.1", 6881, b"p" * 20), ("::1", 7, b"q" * 20)])
    body = fastbencode.bdecode(tr.encode_announce(reply, request))
    assert body[b"interval"] == 30
    assert body[b"peers"] == bytes([10, 0, 0, 1]) + struct.pack("!H", 6881)
    assert body[b"peers6"] == bytes(15) + b"\x01" + struct.pack("!H", 7)
    plain = tr.parse_announce(query(compact=0), "10.0.0.9")
    body = fastbencode.bdecode(tr.encode_announce(reply, plain))
    assert body[b"peers"][0] == {b"ip": b"10.0.0.1", b"port": 6881, b"peer id": b"p" * 20}
    failure = fastbencode.bdecode(tr.encode_failure("nope"))
    assert failure == {b"failure reason": b"nope"}


def test_parse_scrape() -> None:
    raw = f"info_hash={quote_from_bytes(HASH)}&info_hash={quote_from_bytes(OTHER)}"
    assert tr.parse_scrape(raw).info_hashes == (HASH, OTHER)
    with pytest.raises(TrackerError):
        tr.parse_scrape("info_hash=abc")


@given(raw=st.text(max_size=600), ip=st.sampled_from(["10.0.0.1", "::1"]))
def test_parsers_raise_only_tracker_error(raw: str, ip: str) -> None:
    for parse in (lambda: tr.parse_announce(raw, ip), lambda: tr.parse_scrape(raw)):
        with contextlib.suppress(TrackerError):
            parse()


@given(
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=20, max_size=20),
    st.integers(1, 65535),
    st.integers(0, 2**40),
)
def test_announce_round_trips_binary_hashes(
    info_hash: bytes, peer_id: bytes, port: int, left: int
) -> None:
    parsed = tr.parse_announce(query(info_hash, peer_id, port=port, left=left), "10.0.0.1")
    assert (parsed.info_hash, parsed.peer_id, parsed.port, parsed.left) == (
        info_hash,
        peer_id,
        port,
        left,
    )
