"""The registry core: the seed's operations, handing out nodes, liveness, changes."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.errors import NodeExistsError, NodeNotFoundError, NotPermittedError, RegistryError
from smartget.hub.registry import STATUS_ZOMBIE, Registry


def make(n: int = 3, status: int = 0, zone: str = "") -> Registry:
    registry = Registry(node_ttl=60, zombie_grace=120)
    for i in range(n):
        node = registry.register(f"10.0.0.{i + 1}", 1000, now=0.0, zone=zone)
        if status:
            registry.set_node_status(node.node_id, status, now=0.0)
    return registry


def test_ids_start_at_one_and_are_never_reused() -> None:
    registry = make(3)
    assert sorted(registry.get_nodes()) == [1, 2, 3]
    registry.rm_node(3)
    assert registry.register("10.0.0.9", 1, now=0).node_id == 4
    with pytest.raises(NodeExistsError):
        registry.register("10.0.0.9", 1, now=0)
    # A refused duplicate does not use up an id.
    assert registry.register("10.0.0.9", 2, now=0).node_id == 5


def test_seed_lookups() -> None:
    registry = make(2)
    registry.register("10.0.0.1", 2000, now=0)
    assert registry.get_node_ids_by_addr("10.0.0.1") == [1, 3]
    assert registry.get_node_ids_by_addr_port("10.0.0.1", 2000) == [3]
    assert registry.get_node_ids_by_addr_port("10.0.0.1", 9) == []
    registry.set_node_status(2, 4, now=0)
    assert registry.get_node_status(2) == 4
    assert registry.get_node_ids_by_status(0) == [1, 3]
    assert registry.get_available_node_ids() == [2]
    assert registry.get_idle_node_ids() == [1, 3]
    assert registry.get_n_idle_nodes() == 2
    node = registry.get_node_by_id(2)
    assert node is not None
    assert (node.addr, node.port) == ("10.0.0.2", 1000)
    assert registry.get_node_by_id(99) is None
    registry.decrease_node_status(2, 3)
    assert registry.get_node_status(2) == 1
    registry.decrease_node_status(2, 5)
    assert registry.get_node_status(2) == 0  # never below 0
    with pytest.raises(NodeNotFoundError):
        registry.get_node_status(99)
    with pytest.raises(RegistryError):
        registry.set_node_status(1, -2, now=0)  # -1 is a zombie (seed 000)


def test_make_and_add_node() -> None:
    registry = Registry()
    node = registry.make_node("10.1.1.1", 80, name="edge")
    assert registry.add_node(node, now=0) == node.node_id == 1
    with pytest.raises(NodeExistsError):
        registry.add_node(node, now=0)


def test_request_nodes_most_free_first_and_decrements() -> None:
    registry = make(3)
    registry.set_node_status(1, 1, now=0)
    registry.set_node_status(2, 3, now=0)
    registry.set_node_status(3, 2, now=0)
    got = registry.request_nodes(2)
    assert [n.node_id for n in got] == [2, 3]
    assert [registry.get_node_status(i) for i in (1, 2, 3)] == [1, 2, 1]


def test_ties_rotate() -> None:
    registry = make(3, status=5)
    order = [registry.request_nodes(1)[0].node_id for _ in range(6)]
    assert order == [1, 2, 3, 1, 2, 3]


def test_only_free_nodes_never_the_requester() -> None:
    registry = make(3, status=1)
    registry.set_node_status(2, 0, now=0)
    got = registry.request_nodes(5, exclude_addr="10.0.0.1")
    assert [n.node_id for n in got] == [3]
    assert registry.request_nodes(5, exclude_addr="10.0.0.1") == []
    assert [n.node_id for n in registry.request_nodes(5, exclude_ids=[3])] == [1]


def test_zone_preference() -> None:
    registry = Registry()
    for i, zone in enumerate(["a", "b", "b", "a"], start=1):
        registry.register(f"10.0.0.{i}", 1, now=0, zone=zone)
        registry.set_node_status(i, 10 - i, now=0)
    got = registry.request_nodes(3, zone="b")
    assert [n.node_id for n in got] == [2, 3, 1]
    assert registry.zone_of_addr("10.0.0.4") == "a"
    assert registry.zone_of_addr("10.9.9.9") is None


def test_liveness_zombie_then_removed_and_heartbeat_revives() -> None:
    registry = make(3, status=2)
    registry.set_node_status(1, 2, now=50)  # node 1 keeps talking
    zombies, removed = registry.expire(now=61)
    assert sorted(n.node_id for n in zombies) == [2, 3]
    assert removed == []
    assert registry.get_node_status(2) == STATUS_ZOMBIE
    assert [n.node_id for n in registry.request_nodes(5)] == [1]
    registry.set_node_status(3, 4, now=150)  # a zombie that speaks is back
    assert registry.get_node_status(3) == 4
    zombies, removed = registry.expire(now=61 + 120)
    assert [n.node_id for n in removed] == [2]
    assert 2 not in registry
    assert sorted(n.node_id for n in zombies) == [1]
    assert registry.next_expiry() == pytest.approx(150 + 60)


def test_check_owner() -> None:
    registry = make(1)
    assert registry.check_owner(1, "10.0.0.1").node_id == 1
    with pytest.raises(NotPermittedError):
        registry.check_owner(1, "10.0.0.2")


def test_changes_and_restore() -> None:
    registry = make(2, status=1)
    registry.rm_node(2)
    changes = registry.drain_changes()
    assert [n.node_id for n in changes.upserts] == [1]
    assert changes.deletes == [2]
    assert changes.next_id == 3
    assert not registry.drain_changes()
    restored = Registry()
    restored.restore(changes.upserts, changes.next_id, now=0)
    assert restored.get_node_status(1) == 1
    assert restored.register("10.0.0.7", 1, now=0).node_id == 3


def test_request_cost_does_not_grow_with_the_fleet() -> None:
    registry = Registry()
    for i in range(20_000):
        registry.register(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 1, now=0)
    registry.set_node_status(20_000, 1, now=0)  # one free node among 20,000 busy ones
    got = registry.request_nodes(3)
    assert [n.node_id for n in got] == [20_000]
    assert registry.statistics()["available"] == 0


def test_update_info_moves_zone() -> None:
    registry = make(1, status=3, zone="a")
    registry.update_info(1, zone="b")
    assert [n.node_id for n in registry.request_nodes(1, zone="b")] == [1]
    with pytest.raises(RegistryError):
        registry.update_info(1, status=3)


def test_set_node_status_checks_the_owner_when_given_an_addr() -> None:
    registry = make(2)
    with pytest.raises(
        NotPermittedError, match=r"node 1 belongs to 10\.0\.0\.1, not to 10\.0\.0\.2"
    ):
        registry.set_node_status(1, 5, now=1, addr="10.0.0.2")
    assert registry.get_node_status(1) == 0  # refused: nothing changed
    with pytest.raises(NodeNotFoundError, match="no node has id 9"):
        registry.set_node_status(9, 5, now=1, addr="10.0.0.1")
    assert registry.set_node_status(1, 5, now=1, addr="10.0.0.1").status == 5


def test_change_count_moves_only_with_a_durable_change() -> None:
    """A heartbeat repeating the status changes nothing the store keeps: no commit."""
    registry = make(2, status=3)
    registry.drain_changes()
    before = registry.change_count
    registry.set_node_status(1, 3, now=10)  # the heartbeat: only liveness moves
    assert registry.change_count == before
    assert not registry.has_changes
    registry.set_node_status(1, 4, now=11)
    assert registry.change_count == before + 1
    registry.request_nodes(1, exclude_addr="10.0.0.2")  # lowers node 1 to 3
    assert registry.change_count == before + 2
    assert [n.status for n in registry.drain_changes().upserts] == [3]


def test_heartbeat_keeps_liveness_order_and_revives_zombies() -> None:
    registry = make(3, status=2)  # all seen at 0; ttl 60
    registry.set_node_status(1, 2, now=30)  # 1 is now the freshest
    zombies, _ = registry.expire(now=61)
    assert sorted(n.node_id for n in zombies) == [2, 3]
    assert registry.next_expiry() == 90  # node 1's ttl, not the zombies' grace (181)
    before = registry.change_count
    registry.set_node_status(2, 2, now=70)  # same number, but a zombie comes back: a change
    assert registry.get_node_status(2) == 2
    assert registry.change_count == before + 1
    zombies, removed = registry.expire(now=200)
    assert sorted(n.node_id for n in zombies) == [1, 2]
    assert [n.node_id for n in removed] == [3]


def assert_indexes_consistent(registry: Registry) -> None:
    """White box: every index agrees with the nodes themselves (no pass is skipped)."""
    nodes = registry.get_nodes()
    indexes = [(registry._status, set(nodes))] + [
        (index, {i for i, n in nodes.items() if n.zone == zone})
        for zone, index in registry._zones.items()
    ]
    assert {n.zone for n in nodes.values() if n.zone} == set(registry._zones)
    for index, members in indexes:
        assert all(index.buckets.values())  # no empty bucket is kept
        assert index.free == sorted(s for s in index.buckets if s > 0)
        listed = {i: s for s, bucket in index.buckets.items() for i in bucket}
        assert listed == {i: nodes[i].status for i in members}
    assert set(registry._zombies) == {i for i, n in nodes.items() if n.status == STATUS_ZOMBIE}
    assert set(registry._alive) == {i for i, n in nodes.items() if n.status != STATUS_ZOMBIE}
    seen = list(registry._alive.values())
    assert seen == sorted(seen)  # oldest heartbeat first: expire looks only at the front


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["register", "status", "request", "decrease", "rm", "expire", "zone"]),
            st.integers(1, 12),
            st.integers(0, 4),
        ),
        max_size=60,
    )
)
def test_indexes_stay_consistent_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    registry = Registry(node_ttl=10, zombie_grace=10)
    now = 0.0
    for op, a, b in ops:
        now += 1
        node_id = a if a in registry else None
        if op == "register":
            with contextlib.suppress(NodeExistsError):
                registry.register(f"10.0.0.{a % 4}", 1000 + a, now, zone="z" * (b % 3))
        elif op == "status" and node_id is not None:
            registry.set_node_status(node_id, b, now, addr=registry._nodes[node_id].addr)
        elif op == "request":
            registry.request_nodes(b + 1, zone="z" if a % 2 else None, exclude_addr="10.0.0.1")
        elif op == "decrease" and node_id is not None:
            registry.decrease_node_status(node_id, b)
        elif op == "rm" and node_id is not None:
            registry.rm_node(node_id)
        elif op == "expire":
            registry.expire(now + 5 * b)
        elif op == "zone" and node_id is not None:
            registry.update_info(node_id, zone="zz" * (b % 2))
        assert_indexes_consistent(registry)


def test_a_node_that_declares_itself_a_zombie_is_not_handed_out_and_can_return() -> None:
    registry = Registry(node_ttl=60, zombie_grace=30)
    node = registry.register("10.0.0.1", 80, now=0)
    registry.set_node_status(node.node_id, 3, now=1)
    registry.set_node_status(node.node_id, -1, now=2, addr="10.0.0.1")
    assert node.status == -1
    assert registry.request_nodes(5) == []
    assert registry.statistics()["zombies"] == 1
    assert registry.expire(now=31) == ([], [])  # the grace counts from the declaration
    registry.set_node_status(node.node_id, 2, now=10)  # back with its next status
    assert registry.statistics()["zombies"] == 0
    assert [n.node_id for n in registry.request_nodes(1)] == [node.node_id]
    registry.set_node_status(node.node_id, -1, now=40)
    assert registry.expire(now=71) == ([], [node])
