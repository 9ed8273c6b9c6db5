from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.dht.routing import GOOD_FOR, AddResult, Bucket, Node, RoutingTable

NOW = 10_000.0


class _Owner:
    def __init__(self, myid: bytes) -> None:
        self.myid = myid


def _node(prefix: int | None = None, port: int = 6881, **kw: float) -> Node:
    raw = bytearray(os.urandom(20))
    if prefix is not None:
        raw[0] = prefix
    return Node(bytes(raw), "127.0.1.2", port, **kw)


def test_node_good_and_bad_as_the_seed_defines() -> None:
    node = _node()
    assert not node.is_good(NOW)  # never answered
    node.last_response = NOW - 10
    assert node.is_good(NOW)
    node.last_response = NOW - GOOD_FOR - 1
    assert not node.is_good(NOW)
    node.last_query = NOW - 5  # answered once and queried us recently
    assert node.is_good(NOW)
    node.failed = 3
    assert node.bad
    assert not node.is_good(NOW)


def test_compact_info_roundtrip() -> None:
    a, b = _node(port=1), _node(port=65535)
    [a2, b2] = Node.from_compact_infos(a.compact_info() + b.compact_info())
    assert (a2.id, a2.ip, a2.port, b2.port) == (a.id, a.ip, 1, 65535)
    with pytest.raises(ValueError, match="26"):
        Node.from_compact_info(b"x" * 25)


def test_bucket_full_then_cache_then_replace_bad() -> None:
    bucket = Bucket()
    nodes = [_node(last_response=NOW) for _ in range(8)]
    assert all(bucket.add(n, NOW) is AddResult.ADDED for n in nodes)
    extra = _node()
    assert bucket.add(extra, NOW) is AddResult.CACHED
    assert extra.id_int in bucket.replacements
    nodes[0].failed = 3
    bucket.remove(nodes[0])
    assert extra.id_int in bucket.nodes
    assert bucket.add(nodes[1], NOW) is AddResult.UPDATED


def test_bucket_own_random_id_split_merge() -> None:
    bucket = Bucket(0b101, 3)
    for _ in range(20):
        assert bucket.own(bucket.random_id())
    assert not bucket.own(b"\x00" * 20)
    low, high = bucket.split()
    assert (low.id, high.id, low.id_length) == (0b1010, 0b1011, 4)
    assert low.merge(high).id == 0b101
    with pytest.raises(ValueError, match="siblings"):
        low.merge(Bucket(0b1100, 4))


def test_table_splits_only_around_registered_ids() -> None:
    table = RoutingTable()
    owner = _Owner(b"\x00" * 20)
    table.register_dht(owner)
    for _ in range(400):
        table.add(_node(last_response=NOW), NOW)
    # far half never splits (holds 8), the near side gets deep
    assert table.height() >= 4
    assert table.heigth() == table.height()
    far = table.find(b"\xff" * 20)
    assert far.id_length == 1
    assert len(far) == 8
    assert len(table) == sum(len(b) for b in table.buckets)


def test_torrent_registration_splits_then_merges_back() -> None:
    table = RoutingTable()
    table.register_dht(_Owner(b"\x00" * 20))
    for _ in range(300):
        table.add(_node(last_response=NOW), NOW)
    before = len(table.buckets)
    target = b"\xf0" + os.urandom(19)
    table.register_torrent(target)
    for _ in range(300):
        table.add(_node(prefix=0xF0, last_response=NOW), NOW)
    assert len(table.buckets) > before
    table.release_torrent(target)
    assert table.need_merge
    assert table.merge() > 0
    assert len(table.buckets) <= before + 1
    assert len(table) == sum(len(b) for b in table.buckets)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.binary(min_size=20, max_size=20))
def test_closest_nodes_are_exact(count: int, target: bytes) -> None:
    table = RoutingTable()
    table.register_dht(_Owner(os.urandom(20)))
    for _ in range(count):
        table.add(_node(last_response=NOW), NOW)
    known = sorted(table, key=lambda n: n.id_int ^ int.from_bytes(target, "big"))
    assert table.get_closest_nodes(target) == known[:8]


def test_bad_nodes_excluded_unless_asked() -> None:
    table = RoutingTable()
    node = _node(last_response=NOW)
    table.add(node, NOW)
    node.failed = 3
    assert table.get_closest_nodes(node.id) == []
    assert table.get_closest_nodes(node.id, bad=True) == [node]
    stats = table.stats(NOW)
    assert (stats.nodes, stats.bad) == (1, 1)
    table.empty()
    assert len(table) == 0


def _table_with(owner_id: bytes, nodes: list[Node]) -> RoutingTable:
    table = RoutingTable()
    table.register_dht(_Owner(owner_id))
    for node in nodes:
        table.add(node, NOW)
    return table


def _same_set(table: RoutingTable, target: bytes) -> None:
    blob = table.compact_closest(target)
    records = {blob[i : i + 26] for i in range(0, len(blob), 26)}
    assert records == {n.compact_info() for n in table.get_closest_nodes(target)}
    assert len(blob) == 26 * len(records)


def test_compact_closest_follows_every_change_of_the_table() -> None:
    nodes = [_node(last_response=NOW) for _ in range(200)]
    table = _table_with(os.urandom(20), nodes)
    targets = [os.urandom(20) for _ in range(50)]
    for target in targets:
        _same_set(table, target)
        _same_set(table, target)  # a cached answer, the same
    # a node goes bad (set from outside, as tests and users may): it leaves replies
    victim = table.get_closest_nodes(targets[0])[0]
    victim.failed = 3
    assert victim.compact_info() not in table.compact_closest(targets[0])
    _same_set(table, targets[0])
    victim.failed = 0  # and comes back
    assert victim.compact_info() in table.compact_closest(targets[0])
    # removed: its replacement answers instead
    table.remove(victim)
    _same_set(table, targets[0])
    # a node moves (answers from a new port): the cached records follow
    mover = table.get_closest_nodes(targets[1])[0]
    table.add(Node(mover.id, mover.ip, 7000, last_response=NOW + 1), NOW + 1)
    assert Node(mover.id, mover.ip, 7000).compact_info() in table.compact_closest(targets[1])
    for target in targets:
        _same_set(table, target)


def test_tables_keep_their_caches_apart() -> None:
    """A node going bad in one table stales that table's cached replies only."""
    target = bytes(20)
    first = _table_with(b"\xff" * 20, [_node(prefix=0, last_response=NOW) for _ in range(8)])
    second = _table_with(b"\xff" * 20, [_node(prefix=0, last_response=NOW) for _ in range(8)])
    cached = second.compact_closest(target)
    assert second.compact_closest(target) is cached  # served from the bucket's cache
    victim = first.get_closest_nodes(target)[0]
    first.compact_closest(target)
    victim.failed = 3
    assert victim.compact_info() not in first.compact_closest(target)
    assert second.compact_closest(target) is cached  # untouched by the other table
    _same_set(first, target)
    _same_set(second, target)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(1, 3), st.booleans(), st.floats(0, 100)),
        max_size=120,
    )
)
def test_heard_is_add_without_building_a_node(events: list[tuple[int, int, bool, float]]) -> None:
    """Two tables fed the same events, one by heard() and one by add(Node(...)), agree."""
    ids = [bytes([i * 6]) + bytes(19) for i in range(41)]
    owner = os.urandom(20)
    fast, slow = _table_with(owner, []), _table_with(owner, [])
    for who, port, responded, at in events:
        now = NOW + at
        fast.heard(ids[who], "127.0.1.3", port, now, responded=responded)
        kw = {"last_response": now} if responded else {"last_query": now}
        slow.add(Node(ids[who], "127.0.1.3", port, **kw), now)

    def state(table: RoutingTable) -> list[tuple[object, ...]]:
        return [
            (
                b.id,
                b.id_length,
                b.last_changed,
                sorted(b.replacements),
                sorted(
                    (n.id, n.addr, n.last_response, n.last_query, n.failed)
                    for n in b.nodes.values()
                ),
            )
            for b in table.buckets
        ]

    assert state(fast) == state(slow)
    assert len(fast) == len(slow)
