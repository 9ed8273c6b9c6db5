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
    assert tracker.scrape(tr.Scrape((HASH,)), now=0) == {HASH: (2, 1, 0)}


def test_silent_peers_expire() -> None:
    tracker = tr.Tracker(interval=10, peer_lifetime=30)
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


# -- issue 18: swarms that stay true, at O(numwant) ---------------------------------------


def announce_at(
    tracker: tr.Tracker, ip: str, now: float, left: int = 100, event: str = "", **kw: object
) -> tr.AnnounceReply:
    return tracker.announce(tr.parse_announce(query(left=left, event=event, **kw), ip), now=now)


def test_default_lifetime_outlasts_libtorrents_real_announce_rounds() -> None:
    """The demo asks for 5 s; libtorrent still announces every 300 s (its floor)."""
    tracker = tr.Tracker(interval=5)
    tracker.allow(HASH)
    assert tracker.peer_ttl == 2 * tr.CLIENT_MIN_INTERVAL + tr.LIFETIME_GRACE
    announce_at(tracker, "10.0.0.1", now=0, left=0)  # a seed, announcing as libtorrent does
    for now in range(300, 3001, 300):  # ten minutes and more of re-announces
        reply = announce_at(tracker, "10.0.0.2", now=now - 1)
        assert reply.complete == 1, f"the seed vanished at {now} s"
        announce_at(tracker, "10.0.0.1", now=now, left=0)
    # One round lost is forgiven; gone for good, it leaves after the lifetime.
    assert tracker.expire(now=3000 + 600) == 0  # a round and a half of silence
    assert tracker.expire(now=2999 + tracker.peer_ttl + 0.5) == 1  # the leecher
    assert tracker.scrape(tr.Scrape((HASH,)), now=2999 + tracker.peer_ttl + 0.5)[HASH][0] == 1
    assert tracker.expire(now=3000 + tracker.peer_ttl + 1) == 1
    assert tracker.statistics()["peers"] == 0


def test_downloaded_survives_an_emptied_swarm() -> None:
    tracker = tr.Tracker(peer_lifetime=10)
    tracker.allow(HASH)
    announce_at(tracker, "10.0.0.1", now=0, left=5, event="started")
    announce_at(tracker, "10.0.0.1", now=1, left=0, event="completed")
    announce_at(tracker, "10.0.0.1", now=2, left=0, event="completed")  # a repeat counts once
    announce_at(tracker, "10.0.0.2", now=2, left=0)  # a seed from the start is no download
    announce_at(tracker, "10.0.0.3", now=2, left=0, event="completed")  # unseen: counts
    assert tracker.scrape(tr.Scrape((HASH,)), now=3) == {HASH: (3, 2, 0)}
    assert tracker.expire(now=100) == 3
    assert tracker.scrape(tr.Scrape((HASH,)), now=100) == {HASH: (0, 2, 0)}


def test_announce_cost_does_not_grow_with_the_swarm() -> None:
    """50,000 peers: numwant peers come back, each rank in order, no peer twice."""
    zones = {f"10.1.{i // 250}.{i % 250}": "a" for i in range(30)}
    tracker = tr.Tracker(zone_of=zones.get, rng=random.Random(1), is_fleet=zones.__contains__)
    tracker.allow(HASH)
    for i in range(50_000):
        announce_at(tracker, f"10.1.{i // 250}.{i % 250}", now=0, numwant=0)
    reply = announce_at(tracker, "10.1.0.0", now=1, numwant=50)
    ips = [p.ip for p in reply.peers]  # type: ignore[union-attr]
    assert len(ips) == len(set(ips)) == 50
    assert "10.1.0.0" not in ips
    assert set(ips[:29]) == set(zones) - {"10.1.0.0"}  # the whole zone first
    assert all(zones.get(ip) is None for ip in ips[29:])
    assert tracker.statistics()["peers"] == 50_000


def test_capacity_ranks_within_the_sample() -> None:
    capacity = {f"10.2.0.{i}" for i in range(0, 200, 2)}
    tracker = tr.Tracker(has_capacity=capacity.__contains__, rng=random.Random(2))
    tracker.allow(HASH)
    for i in range(200):
        announce_at(tracker, f"10.2.0.{i}", now=0, numwant=0)
    reply = announce_at(tracker, "10.3.0.1", now=0, numwant=10)
    assert all(p.ip in capacity for p in reply.peers)  # type: ignore[union-attr]


def test_swarms_are_bounded() -> None:
    tracker = tr.Tracker(open_tracker=True, max_swarms=2, max_peers_per_swarm=2, max_peers=3)
    announce_at(tracker, "10.0.0.1", now=0)
    announce_at(tracker, "10.0.0.2", now=0)
    with pytest.raises(TrackerError, match="holds 2 peers"):
        announce_at(tracker, "10.0.0.3", now=0)
    tracker.announce(tr.parse_announce(query(info_hash=OTHER), "10.0.0.1"), now=0)
    with pytest.raises(TrackerError, match="3 peers already"):
        tracker.announce(tr.parse_announce(query(info_hash=OTHER), "10.0.0.2"), now=0)
    with pytest.raises(TrackerError, match="2 swarms already"):
        tracker.announce(tr.parse_announce(query(info_hash=b"\x01" * 20), "10.0.0.2"), now=0)


def test_changes_drain_and_restore_with_their_age() -> None:
    tracker = tr.Tracker(peer_lifetime=100)
    tracker.allow(HASH)
    announce_at(tracker, "10.0.0.1", now=0, left=0)
    announce_at(tracker, "10.0.0.2", now=10, left=5, event="started")
    announce_at(tracker, "10.0.0.2", now=20, left=0, event="completed")
    changes = tracker.drain_changes(now=20)
    assert {(p.ip, p.left, p.last_seen) for p in changes.peers} == {
        ("10.0.0.1", 0, 0),
        ("10.0.0.2", 0, 20),
    }
    assert changes.downloaded == {HASH: 1}
    announce_at(tracker, "10.0.0.1", now=30, left=0)  # nothing new worth a write
    assert not tracker.has_changes
    announce_at(tracker, "10.0.0.2", now=31, event="stopped")
    assert tracker.drain_changes(now=31).gone == [(HASH, "10.0.0.2", 6881)]

    again = tr.Tracker(peer_lifetime=100)
    again.allow(HASH)
    assert again.restore(changes.peers, changes.downloaded, now=110) == 1  # .1 is too old
    assert again.scrape(tr.Scrape((HASH,)), now=110) == {HASH: (1, 1, 0)}
    reply = announce_at(again, "10.0.0.3", now=111)
    assert [p.ip for p in reply.peers] == ["10.0.0.2"]  # type: ignore[union-attr]
    assert again.expire(now=121) == 1  # its age came back with it: seen at 20


def test_announce_urls_list_udp_first() -> None:
    assert tr.announce_urls("http://10.0.0.1:8200/", 6969) == [
        "udp://10.0.0.1:6969/announce",
        "http://10.0.0.1:8200/announce",
    ]
    assert tr.announce_urls("http://[::1]:8200", 7) == [
        "udp://[::1]:7/announce",
        "http://[::1]:8200/announce",
    ]
    assert tr.announce_urls("http://hub:8200", None) == ["http://hub:8200/announce"]


def test_changes_drain_in_bounded_parts() -> None:
    tracker = tr.Tracker(peer_lifetime=100)
    tracker.allow(HASH)
    for i in range(25):
        announce_at(tracker, f"10.0.1.{i}", now=0)
    parts = []
    while tracker.has_changes:
        parts.append(len(tracker.drain_changes(now=0, limit=10).peers))
    assert parts == [10, 10, 5]


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.booleans()), max_size=120),
    st.integers(0, 45),
    st.integers(-1, 45),
    st.integers(0, 2**32),
)
def test_a_bag_keeps_its_compact_forms_beside_its_peers(
    steps: list[tuple[bool, int, bool]], k: int, skip: int, seed: int
) -> None:
    """Adds and removes (IPv4 and IPv6) keep ``packed`` in step with ``items``; a window
    taken is k distinct peers (all but the skipped one, if fewer), never the skipped one,
    with exactly their compact forms."""
    bag = tr._Bag(0)
    inside: dict[int, tr.Peer] = {}
    for add, n, wide in steps:
        if add and n not in inside:
            peer = tr.Peer(f"2001:db8::{n}" if wide else f"10.9.0.{n}", 1000 + n, b"x" * 20)
            bag.add(peer)
            inside[n] = peer
        elif not add and n in inside:
            bag.remove(inside.pop(n))
    assert {id(p) for p in bag.items} == {id(p) for p in inside.values()}
    assert bag.wide == sum(len(p.compact) != 6 for p in bag.items)
    assert bytes(bag.packed) == b"".join(
        p.compact if len(p.compact) == 6 else bytes(6) for p in bag.items
    )
    skip = skip if skip < len(bag.items) else -1
    peers, packed = bag.take(random.Random(seed), k, skip)
    others = len(bag.items) - (skip >= 0)
    assert len(peers) == min(k, others) == len({id(p) for p in peers})
    assert skip < 0 or all(p is not bag.items[skip] for p in peers)
    assert bytes(packed) == b"".join(bag.packed[6 * p.pos[0] : 6 * p.pos[0] + 6] for p in peers)


@pytest.mark.parametrize(("leechers", "seeds"), [(0, 0), (3, 0), (0, 3), (30, 70), (200, 5)])
@pytest.mark.parametrize("seeding", [False, True])
@pytest.mark.parametrize("numwant", [0, 1, 50])
def test_a_swarm_of_strangers_is_answered_with_its_compact_forms(
    leechers: int, seeds: int, seeding: bool, numwant: int
) -> None:
    """Nothing to rank (no fleet peer, no zone): the reply carries the peers' compact
    forms, in their order; never the announcer, no seeds for a seed, no peer twice,
    as many as asked for while there are."""
    tracker = tr.Tracker(open_tracker=True, is_fleet=lambda ip: False, rng=random.Random(3))
    for i in range(leechers + seeds):
        announce_at(tracker, f"10.8.{i // 250}.{i % 250 + 1}", now=0, left=0 if i < seeds else 9)
    me = announce_at(tracker, "10.7.0.1", now=1, left=0 if seeding else 9, numwant=0)
    assert me.compact == b""
    reply = announce_at(tracker, "10.7.0.1", now=1, left=0 if seeding else 9, numwant=numwant)
    peers = list(reply.peers)
    assert reply.compact == b"".join(p.compact for p in peers)  # type: ignore[union-attr]
    ips = [p.ip for p in peers]  # type: ignore[union-attr]
    assert "10.7.0.1" not in ips
    assert len(ips) == len(set(ips))
    assert len(ips) == min(numwant, leechers + (0 if seeding else seeds))
    if seeding:
        assert all(p.left > 0 for p in peers)  # type: ignore[union-attr]
    assert (
        tr.encode_announce(reply, tr.parse_announce(query(compact=1), "10.7.0.1")).count(
            b"5:peers%d:" % (6 * len(ips))
        )
        == 1
    )


def test_fleet_swarms_and_ipv6_peers_are_ranked_the_long_way() -> None:
    """A fleet peer (capacity ranks) or an IPv6 one in the swarm: no compact shortcut."""
    fleet = tr.Tracker(open_tracker=True)  # is_fleet: everyone
    announce_at(fleet, "10.0.0.1", now=0)
    assert announce_at(fleet, "10.0.0.2", now=0).compact is None
    mixed = tr.Tracker(open_tracker=True, is_fleet=lambda ip: False)
    announce_at(mixed, "2001:db8::1", now=0)
    reply = announce_at(mixed, "10.0.0.2", now=0)
    assert reply.compact is None
    assert [p.ip for p in reply.peers] == ["2001:db8::1"]  # type: ignore[union-attr]
