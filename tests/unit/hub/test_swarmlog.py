"""The swarm log (issue 13): the batch format, and one tracker's changes applied to another.

Two in-memory trackers stand for two hubs; the wire in between is swarmlog's text.
"""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.errors import TrackerError
from smartget.hub.state import swarmlog as sl
from smartget.hub.tracker import Announce, Scrape, SharedChanges, SharedPeer, Tracker

H = bytes(range(20))
H2 = b"\x02" * 20
PID = b"-LT0001-000000000001"
WALL = 1_700_000_000.0


def hub_tracker(**kw: object) -> Tracker:
    tracker = Tracker(**kw)  # type: ignore[arg-type]
    tracker.allow(H)
    tracker.share(30.0)
    return tracker


def announce(ip: str, port: int = 6881, left: int = 0, event: str = "", **kw: object) -> Announce:
    pid = kw.pop("peer_id", PID)
    return Announce(H, pid, ip, port, left=left, event=event, source=ip, **kw)  # type: ignore[arg-type]


def carry(src: Tracker, dst: Tracker, now: float, lag: float = 0.0) -> set[bytes]:
    """src's outbox, encoded, decoded and merged into dst (``lag`` seconds on the wire)."""
    touched: set[bytes] = set()
    for text in sl.encode_changes(src.drain_shared(), now, WALL):
        changes, _ = sl.decode_changes(text, now + lag, WALL + lag, dst.peer_ttl + 1)
        touched |= dst.merge_shared(changes, now + lag)
    return touched


# -- the format --------------------------------------------------------------------------


peers = st.builds(
    sl.WirePeer,
    ip=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str),
    port=st.integers(1, 65535),
    gone=st.just(False),
    peer_id=st.binary(min_size=20, max_size=20),
    left=st.integers(0, 2**63),
    age_ms=st.integers(0, 2**32 - 1),
    key=st.one_of(st.none(), st.binary(min_size=1, max_size=64)),
    source=st.one_of(st.just(""), st.ip_addresses().map(str)),
)
gone = st.builds(
    sl.WirePeer,
    ip=st.ip_addresses().map(str),
    port=st.integers(1, 65535),
    gone=st.just(True),
)
batches = st.builds(
    sl.Batch,
    wall_ms=st.integers(0, 2**63),
    tracked=st.lists(st.binary(min_size=20, max_size=20), max_size=5).map(tuple),
    swarms=st.lists(
        st.tuples(
            st.binary(min_size=20, max_size=20),
            st.integers(0, 2**32 - 1),
            st.lists(st.one_of(peers, gone), max_size=5).map(tuple),
        ),
        max_size=4,
    ).map(tuple),
)


def _canonical(batch: sl.Batch) -> sl.Batch:
    """What decoding gives back: a source equal to the ip travels as none."""
    swarms = tuple(
        (
            h,
            n,
            tuple(
                sl.WirePeer(p.ip, p.port, True)
                if p.gone
                else sl.WirePeer(
                    p.ip,
                    p.port,
                    False,
                    p.peer_id,
                    p.left,
                    p.age_ms,
                    p.key,
                    "" if p.source == p.ip else p.source,
                )
                for p in ps
            ),
        )
        for h, n, ps in batch.swarms
    )
    return sl.Batch(batch.wall_ms, batch.tracked, swarms)


@given(batches)
def test_a_batch_decodes_to_what_was_encoded(batch: sl.Batch) -> None:
    assert sl.decode(sl.encode(batch)) == _canonical(batch)


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_any_bytes_decode_to_a_batch_or_a_clear_error(data: bytes) -> None:
    for text in (data, base64.b64encode(data)):
        batch = _decoded(text)
        if batch is not None:
            assert sl.decode(sl.encode(batch)) == batch


def _decoded(text: str | bytes) -> sl.Batch | None:
    """The batch, or None for a BatchError (a TrackerError with a message): any other
    exception fails the test."""
    try:
        return sl.decode(text)
    except sl.BatchError as error:
        failure: TrackerError = error
    assert str(failure)
    return None


@given(batches, st.data())
def test_a_damaged_batch_decodes_to_a_batch_or_a_clear_error(
    batch: sl.Batch, data: st.DataObject
) -> None:
    raw = bytearray(base64.b64decode(sl.encode(batch)))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for damaged in (bytes(raw), bytes(raw[:cut])):
        _decoded(base64.b64encode(damaged))


@given(st.text(max_size=200))
def test_any_text_decodes_to_a_batch_or_a_clear_error(text: str) -> None:
    _decoded(text)


def test_the_bounds_are_checked_before_anything_is_built() -> None:
    with pytest.raises(sl.BatchError, match="at most"):
        sl.decode("A" * (sl.MAX_TEXT + 4))
    head = struct.pack("!BQH", sl.VERSION, 0, 0)
    many = head + struct.pack("!H", 1) + struct.pack("!20sIH", H, 0, 65535)
    with pytest.raises(sl.BatchError, match="peers"):
        sl.decode(base64.b64encode(many))
    with pytest.raises(sl.BatchError, match="version"):
        sl.decode(base64.b64encode(struct.pack("!BQH", 9, 0, 0) + b"\0\0"))
    with pytest.raises(sl.BatchError, match="after the batch"):
        sl.decode(base64.b64encode(head + b"\0\0" + b"x"))
    with pytest.raises(sl.BatchError, match="base64"):
        sl.decode("not base64!")


def test_large_changes_are_split_into_batches_within_the_bounds() -> None:
    count = sl.MAX_PEERS + 5
    peers = [SharedPeer(H, f"10.0.{i >> 8}.{i & 255}", 6881, PID, 0, 0.0) for i in range(count)]
    tracked = [bytes([i % 256]) * 20 for i in range(sl.MAX_TRACKED + 1)]
    texts = sl.encode_changes(SharedChanges(tracked, peers, {H: 3}), 1.0, WALL)
    decoded = [sl.decode(t) for t in texts]
    assert len(decoded) == 2
    assert sum(len(p) for b in decoded for _, _, p in b.swarms) == len(peers)
    assert sum(len(b.tracked) for b in decoded) == len(tracked)
    assert sum(n for b in decoded for _, n, _ in b.swarms) == 3  # counted once
    assert sl.encode_changes(SharedChanges([], [], {}), 1.0, WALL) == []


# -- one tracker's changes in another ------------------------------------------------------


def test_peers_announced_to_one_hub_are_in_the_others_replies_and_scrapes() -> None:
    one, two, three = hub_tracker(), hub_tracker(), hub_tracker()
    one.announce(announce("10.0.0.1", left=0), 100.0)
    two.announce(announce("10.0.0.2", left=500, peer_id=b"-LT0001-000000000002"), 100.0)
    carry(one, three, 100.0, lag=0.2)
    carry(two, three, 100.0, lag=0.2)
    reply = three.announce(announce("10.0.0.3", left=100, peer_id=b"-LT0001-000000000003"), 100.5)
    assert sorted(p.ip for p in reply.peers) == ["10.0.0.1", "10.0.0.2"]
    assert three.scrape(Scrape((H,)), 100.5)[H] == (1, 0, 2)
    # hub 3's own announce went to its outbox, not the others' peers
    assert [p.ip for p in three.drain_shared().peers] == ["10.0.0.3"]


def test_a_stop_on_one_hub_removes_the_peer_everywhere() -> None:
    one, two = hub_tracker(), hub_tracker()
    one.announce(announce("10.0.0.1", key=b"k1"), 100.0)
    carry(one, two, 100.0)
    # the peer moves to hub 2 and stops there: hub 2 knows it is the same client
    two.announce(announce("10.0.0.1", event="stopped", key=b"k1"), 101.0)
    assert two.swarm(H) == []
    carry(two, one, 101.0)
    assert one.swarm(H) == []
    assert one.statistics()["peers"] == 0


def test_a_peer_keeps_its_age_and_expires_on_every_hub() -> None:
    one, two = hub_tracker(), hub_tracker()
    one.announce(announce("10.0.0.1"), 100.0)
    carry(one, two, 160.0, lag=5.0)  # flushed 60 s after, 5 s on the wire
    (peer,) = two._swarms[H].peers.values()
    assert peer.last_seen == pytest.approx(100.0)  # one clock for both hubs here
    two.expire(100.0 + two.peer_ttl - 1)
    assert len(two.swarm(H)) == 1
    two.expire(100.0 + two.peer_ttl + 1)
    assert two.swarm(H) == []


def test_unchanged_re_announces_are_shared_once_per_refresh() -> None:
    one = hub_tracker()
    one.announce(announce("10.0.0.1", left=10), 100.0)
    assert one.pending_shared == 1
    one.drain_shared()
    one.announce(announce("10.0.0.1", left=10), 110.0)
    assert one.pending_shared == 0  # nothing changed, shared 10 s ago
    one.announce(announce("10.0.0.1", left=0), 111.0)  # finished: shared at once
    changes = one.drain_shared()
    assert [p.left for p in changes.peers] == [0]
    assert changes.downloaded == {H: 1}
    one.announce(announce("10.0.0.1", left=0), 142.0)  # 31 s later: refreshed
    assert one.pending_shared == 1


def test_tracked_torrents_and_downloads_travel_and_are_not_sent_back() -> None:
    one, two = hub_tracker(), hub_tracker()
    one.allow(H2)
    one.announce(announce("10.0.0.1", left=5), 100.0)
    one.announce(announce("10.0.0.1", left=0), 101.0)
    carry(one, two, 101.0)
    assert two.is_tracked(H2)
    assert two.scrape(Scrape((H,)), 101.0)[H] == (1, 1, 0)
    assert two.pending_shared == 0
    assert two.own_peers(H, 10) == []
    assert [p.ip for p in one.own_peers(H, 10)] == ["10.0.0.1"]


def test_merges_keep_the_receivers_caps_and_skip_untracked_or_stale_peers() -> None:
    one = hub_tracker(max_peers_per_ip=100)
    two = hub_tracker(max_peers_per_swarm=3)
    for port in range(1, 10):
        one.announce(announce("10.0.0.1", port=port, peer_id=b"%020d" % port), 100.0)
    carry(one, two, 100.0)
    assert len(two.swarm(H)) == 3
    stranger = SharedPeer(b"\x09" * 20, "10.0.0.9", 1, PID, 0, 100.0)
    stale = SharedPeer(H2, "10.0.0.9", 1, PID, 0, 100.0 - two.peer_ttl - 1)
    two.allow(H2)
    two.merge_shared(SharedChanges([], [stranger, stale], {}), 100.0)
    assert two.scrape(Scrape((H2,)), 100.0)[H2] == (0, 0, 0)
    assert b"\x09" * 20 not in two._swarms


def test_an_older_entry_changes_nothing_and_a_takeover_is_reported() -> None:
    one, two = hub_tracker(), hub_tracker()
    two.announce(announce("10.0.0.1", left=7), 100.0)
    older = SharedPeer(H, "10.0.0.1", 6881, PID, 0, 90.0)
    assert two.merge_shared(SharedChanges([], [older], {}), 100.0) == set()
    assert two.swarm(H)[0]["left"] == 7
    one.announce(announce("10.0.0.1", left=0), 105.0)
    assert carry(one, two, 105.0) == {H}  # hub 2's own peer is now hub 1's
    assert two.swarm(H)[0]["left"] == 0
    assert two.own_peers(H, 10) == []


def test_without_sharing_the_tracker_keeps_no_outbox() -> None:
    tracker = Tracker()
    tracker.allow(H)
    tracker.announce(announce("10.0.0.1"), 100.0)
    assert tracker.pending_shared == 0
    assert tracker.drain_shared() == SharedChanges([], [], {})
