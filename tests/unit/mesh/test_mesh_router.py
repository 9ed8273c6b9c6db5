"""The sans-IO router: delivery, proxies learned from heartbeats, broadcast, retries."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from smartget.mesh.datapack import Datapack
from smartget.mesh.router import NET_APP, Deliver, Dial, Dropped, Router, Transmit


def linked(*pairs: tuple[str, str]) -> dict[str, Router]:
    """Routers joined by the given links, heartbeats exchanged until tables settle."""
    routers: dict[str, Router] = {}
    for a, b in pairs:
        for name in (a, b):
            routers.setdefault(name, Router(name, dial_learned=False, retry_interval=1.0))
        routers[a].link_up(b, 0.0)
        routers[b].link_up(a, 0.0)
    for _ in range(len(routers)):
        for name, router in routers.items():
            for peer in list(router.peers):
                routers[peer].route(router.heartbeat_for(peer), 0.0, sender=name)
    return routers


def carry(routers: dict[str, Router], origin: str, dp: Datapack) -> list[tuple[str, Datapack]]:
    """Route dp from origin through the network; return (node, packet) local deliveries."""
    delivered = []
    work = [(origin, routers[origin].route(dp, 0.0))]
    while work:
        node, actions = work.pop(0)
        for action in actions:
            if isinstance(action, Transmit):
                copy = Datapack(
                    action.datapack.method,
                    action.datapack.app,
                    dict(action.datapack.head),
                    action.datapack.body,
                )
                work.append((action.peer, routers[action.peer].route(copy, 0.0, sender=node)))
            elif isinstance(action, Deliver):
                delivered.append((node, action.datapack))
    return delivered


def test_local_delivery_sets_flag_and_id() -> None:
    router = Router("a")
    [action] = router.route(Datapack("post", "logger", {}, b"x"), 0.0)
    assert isinstance(action, Deliver)
    assert action.sender is None
    assert action.datapack.head["id"] == "a"
    assert len(action.datapack.head["flag"]) == 16


def test_line_delivers_through_proxies() -> None:
    routers = linked(("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"))
    assert routers["a"].routes["e"] == ("b", 4)
    [(node, dp)] = carry(routers, "a", Datapack("post", "logger", {"to": "e"}, b"hi"))
    assert node == "e"
    assert dp.head["id"] == "a"
    assert dp.head["hops"] == "4"
    assert "to" not in dp.head


def test_hop_list_visits_each_hop() -> None:
    routers = linked(("a", "b"), ("b", "c"), ("c", "d"))
    [(node, _)] = carry(routers, "a", Datapack("post", "x", {"to": "c&b&d"}))
    assert node == "d"
    [(node, _)] = carry(routers, "a", Datapack("post", "x", {"to": "b&a"}))
    assert node == "a"


def test_broadcast_reaches_each_direct_peer_once() -> None:
    routers = linked(("a", "b"), ("a", "c"), ("b", "c"), ("c", "d"))
    got = carry(routers, "a", Datapack("post", "x", {"to": "*"}))
    assert sorted(node for node, _ in got) == ["b", "c"]


def test_duplicate_flag_is_dropped() -> None:
    router = Router("b")
    router.link_up("a", 0.0)
    dp = Datapack("post", "x", {"flag": "f1", "id": "a"})
    assert isinstance(router.route(dp, 0.0, sender="a")[0], Deliver)
    again = Datapack("post", "x", {"flag": "f1", "id": "a"})
    assert isinstance(router.route(again, 1.0, sender="a")[0], Dropped)
    # Remembered flags expire.
    later = Datapack("post", "x", {"flag": "f1", "id": "a"})
    assert isinstance(router.route(later, 10_000.0, sender="a")[0], Deliver)


def test_hop_limit() -> None:
    router = Router("b", max_hops=3)
    router.link_up("a", 0.0)
    [action] = router.route(Datapack("post", "x", {"hops": "4"}), 0.0, sender="a")
    assert isinstance(action, Dropped)
    assert "hop limit" in action.reason


def test_retry_then_drop_after_count() -> None:
    router = Router("a", retry_count=3, retry_interval=3.9)
    assert router.route(Datapack("post", "x", {"to": "z"}), 0.0) == []
    assert router.get_timer() == 3.9
    assert router.handle_timer(3.9) == []
    assert router.handle_timer(7.8) == []
    [dropped] = router.handle_timer(11.7)
    assert isinstance(dropped, Dropped)
    assert "after 3 tries" in dropped.reason
    assert router.get_timer() is None


def test_link_up_flushes_waiting_packets_at_once() -> None:
    router = Router("a")
    router.route(Datapack("post", "x", {"to": "z"}, b"1"), 0.0)
    router.route(Datapack("post", "x", {"to": "y"}, b"2"), 0.0)
    actions = router.link_up("z", 1.0)
    assert [type(a) for a in actions] == [Transmit]
    assert router.waiting == 1
    assert router.handle_timer(100.0) == []  # the flushed one is not sent twice


def test_link_down_forgets_routes_through_it() -> None:
    routers = linked(("a", "b"), ("b", "c"))
    assert routers["a"].next_hop("c") == "b"
    routers["a"].link_down("b", 1.0)
    assert routers["a"].next_hop("c") is None


def test_heartbeat_learns_addresses_and_dials() -> None:
    router = Router("a")
    router.link_up("b", 0.0)
    beat = Datapack(
        "post",
        NET_APP,
        {},
        b'{"listen": "0.0.0.0:7000", "peers": {"c": "127.0.2.3:7003", "a": "x:1"}, "routes": {}}',
    )
    actions = router.route(beat, 0.0, sender="b", peer_host="127.0.2.2")
    assert actions == [Dial("c", "127.0.2.3", 7003)]
    assert router.peers["b"] == "127.0.2.2:7000"
    assert router.next_hop("c") == "b"


def test_malformed_heartbeat_is_dropped() -> None:
    router = Router("a")
    router.link_up("b", 0.0)
    [action] = router.route(Datapack("post", NET_APP, {}, b"[1, 2]"), 0.0, sender="b")
    assert isinstance(action, Dropped)


def test_bad_to_is_dropped() -> None:
    [action] = Router("a").route(Datapack("post", "x", {"to": "*&b"}), 0.0)
    assert isinstance(action, Dropped)


@given(st.binary(max_size=300))
def test_arbitrary_heartbeat_bodies_never_raise(body: bytes) -> None:
    router = Router("a")
    router.link_up("b", 0.0)
    router.route(Datapack("post", NET_APP, {}, body), 0.0, sender="b")


@given(st.dictionaries(st.sampled_from(["flag", "hops", "to", "id"]), st.text(max_size=20)))
def test_arbitrary_heads_never_raise(head: dict[str, str]) -> None:
    router = Router("a")
    router.link_up("b", 0.0)
    router.route(Datapack("post", "x", head), 0.0, sender="b")


def test_reroute_after_link_loss() -> None:
    routers = linked(("a", "b"), ("b", "c"), ("a", "d"), ("d", "c"))
    a = routers["a"]
    dp = Datapack("post", "x", {"to": "c", "flag": "f"})
    [first] = a.route(dp, 0.0)
    assert isinstance(first, Transmit)
    a.link_down(first.peer, 1.0)
    [again] = a.reroute(dp, 1.0)
    assert isinstance(again, Transmit)
    assert again.peer != first.peer  # the other proxy
    a.link_down(again.peer, 2.0)
    assert a.reroute(dp, 2.0) == []  # no way left: the retry queue
    assert a.waiting == 1
    [dropped] = a.reroute(Datapack("post", "x", {"flag": "g"}), 2.0)
    assert isinstance(dropped, Dropped)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.text(max_size=30),
    st.dictionaries(st.text(max_size=10), st.text(max_size=30) | _json, max_size=5),
    st.dictionaries(st.text(max_size=10), _json, max_size=5),
)
def test_structured_heartbeats_never_raise(listen: str, peers: dict, routes: dict) -> None:
    import json

    router = Router("a")
    router.link_up("b", 0.0)
    body = json.dumps({"listen": listen, "peers": peers, "routes": routes}).encode()
    router.route(Datapack("post", NET_APP, {}, body), 0.0, sender="b", peer_host="127.0.2.9")
    router.heartbeat_for("b")


def test_reply_goes_back_the_way_the_request_came_before_any_heartbeat() -> None:
    router = Router("e")
    router.link_up("d", 0.0)
    router.route(Datapack("post", "x", {"id": "ops", "flag": "q1"}), 0.0, sender="d")
    [action] = router.route(Datapack("reply", "send", {"to": "ops"}), 0.1)
    assert isinstance(action, Transmit)
    assert action.peer == "d"
    router.link_down("d", 1.0)
    assert router.next_hop("ops") is None


def test_rerouted_packet_counts_each_link_once() -> None:
    routers = linked(("a", "b"), ("b", "c"), ("a", "d"), ("d", "c"))
    a = routers["a"]
    [first] = a.route(Datapack("post", "x", {"to": "c", "flag": "h"}), 0.0)
    assert isinstance(first, Transmit)
    assert first.datapack.head["hops"] == "1"
    a.link_down(first.peer, 1.0)
    [again] = a.reroute(first.datapack, 1.0)  # handed back unsent by the dead link
    assert isinstance(again, Transmit)
    assert again.datapack.head["hops"] == "1"  # the dead link was never crossed
    a.link_down(again.peer, 2.0)
    assert a.reroute(again.datapack, 2.0) == []  # no way left: the retry queue
    [flushed] = a.link_up("c", 3.0)  # a direct link to c appears
    assert isinstance(flushed, Transmit)
    assert flushed.datapack.head["hops"] == "1"


def test_routing_never_changes_the_callers_packet() -> None:
    routers = linked(("a", "b"), ("b", "c"))
    dp = Datapack("post", "x", {"to": "b&c"}, b"body")
    [sent] = routers["a"].route(dp, 0.0)
    assert isinstance(sent, Transmit)
    assert dict(dp.head) == {"to": "b&c"}
    assert sent.datapack.head["hops"] == "1"
    [relayed] = routers["b"].route(sent.datapack, 0.0, sender="a")
    assert isinstance(relayed, Transmit)
    assert (sent.datapack.head["to"], relayed.datapack.head["to"]) == ("b&c", "c")


def test_retry_queue_is_capped_in_packets_and_bytes() -> None:
    """Issue 12, item 7: packets for an unknown node cannot grow the queue without bound."""
    router = Router("a", retry_max_packets=3, retry_max_bytes=10_000, retry_interval=1.0)
    big = Datapack("post", "x", {"to": "nowhere"}, b"x" * 4000)
    assert router.route(big, 0.0) == []
    assert router.route(big, 0.0) == []
    [dropped] = router.route(big, 0.0)  # a third 4000-byte body is over 10,000 bytes
    assert isinstance(dropped, Dropped)
    assert "retry queue is full" in dropped.reason
    assert dropped.level == "warning"
    small = Datapack("post", "x", {"to": "nowhere"}, b"")
    assert router.route(small, 0.0) == []
    [dropped] = router.route(small, 0.0)  # a fourth packet
    assert "3 packets" in dropped.reason
    assert router.statistics()["waiting"] == 3
    router.link_up("nowhere", 0.5)  # sent: room again
    assert router.statistics()["waiting"] == 0
    assert router.statistics()["waiting_bytes"] == 0
    assert router.route(big, 1.0)[0].__class__ is Transmit


def test_learned_addresses_are_bounded_and_age_out() -> None:
    router = Router("a", max_addresses=100, address_ttl=60.0, dial_learned=False)
    router.link_up("b", 0.0)
    for round_ in range(5):
        peers = {f"n{round_}x{i}": f"10.0.{round_}.{i % 250}:1000" for i in range(80)}
        body = json.dumps({"listen": "", "peers": peers, "routes": {}}).encode()
        router.route(Datapack("post", NET_APP, {}, body), float(round_), sender="b")
    assert len(router.addresses) == 100
    assert "n4x79" in router.addresses  # the newest stay
    assert "n0x0" not in router.addresses
    quiet = json.dumps({"listen": "", "peers": {}, "routes": {}}).encode()
    router.route(Datapack("post", NET_APP, {}, quiet), 100.0, sender="b")
    assert not router.addresses  # not advertised for over address_ttl
