from __future__ import annotations

import ipaddress
import os

import pytest
from fastbencode import bdecode, bencode
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.dht import krpc
from smartget.dht.core import BTDHT_IGNORED_NET, AnnounceDone, DHTCore, LookupDone, PeersFound
from tests.unit.dht.dht_memnet import MemNet

ME = ("127.0.1.1", 7000)
THEM = ("127.0.1.2", 7001)
NID = b"\x11" * 20


def _core(**kw: object) -> DHTCore:
    return DHTCore(b"\x22" * 20, now=0.0, bind_ip="127.0.1.1", **kw)  # type: ignore[arg-type]


def _ask(core: DHTCore, msg: dict[bytes, object], src: tuple[str, int] = THEM) -> dict:  # type: ignore[type-arg]
    core.receive_datagram(bencode(msg), src, 1.0)
    [(data, dst)] = core.datagrams_to_send(1.0)
    assert dst == src
    return bdecode(data)  # type: ignore[no-any-return]


def test_ping_answered_with_id_and_ip_echo_and_sender_added() -> None:
    core = _core()
    reply = _ask(core, {b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": NID}})
    assert reply[b"r"][b"id"] == core.myid
    assert reply[b"ip"] == krpc.compact_addr(THEM)  # BEP 42
    assert core.root.get_node(NID) is not None


def test_read_only_sender_not_added() -> None:
    core = _core()
    _ask(core, {b"t": b"aa", b"y": b"q", b"q": b"ping", b"ro": 1, b"a": {b"id": NID}})
    assert core.root.get_node(NID) is None  # BEP 43


def test_unknown_method_is_204_and_malformed_is_203() -> None:
    core = _core()
    reply = _ask(core, {b"t": b"ab", b"y": b"q", b"q": b"vote", b"a": {b"id": NID}})
    assert reply[b"e"][0] == 204
    reply = _ask(core, {b"t": b"ac", b"y": b"q", b"q": b"find_node", b"a": {b"id": NID}})
    assert reply[b"e"][0] == 203
    reply = _ask(core, {b"t": b"ad", b"y": b"q", b"q": b"ping", b"a": {b"id": b"short"}})
    assert reply[b"e"][0] == 203
    stats = core.statistics(1.0)
    assert stats["malformed"] == 1
    assert stats["bad_queries"] == 2


def test_get_peers_always_gives_nodes_and_token_then_announce_needs_it() -> None:
    core = _core()
    ih = b"\x33" * 20
    base = {b"t": b"g1", b"y": b"q", b"q": b"get_peers"}
    reply = _ask(core, {**base, b"a": {b"id": NID, b"info_hash": ih, b"bs": 1}})
    token = reply[b"r"][b"token"]
    assert b"nodes" in reply[b"r"]
    assert b"values" not in reply[b"r"]
    ann = {b"t": b"a1", b"y": b"q", b"q": b"announce_peer"}
    bad = _ask(core, {**ann, b"a": {b"id": NID, b"info_hash": ih, b"port": 1, b"token": b"no"}})
    assert bad[b"e"][0] == 203
    args = {b"id": NID, b"info_hash": ih, b"port": 9, b"implied_port": 1, b"token": token}
    ok = _ask(core, {**ann, b"a": args})
    assert b"r" in ok
    reply = _ask(core, {**base, b"a": {b"id": NID, b"info_hash": ih}})
    assert reply[b"r"][b"values"] == [krpc.compact_addr(THEM)]  # implied_port: source port
    # the token is per IP: another IP cannot use it
    other = ("127.0.1.3", 7001)
    bad = _ask(
        core, {**ann, b"a": {b"id": NID, b"info_hash": ih, b"port": 9, b"token": token}}, other
    )
    assert bad[b"e"][0] == 203


def test_rate_limit_drops_floods_from_one_ip() -> None:
    core = _core(rate_limit=10.0, rate_burst=20.0)
    ping = bencode({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": NID}})
    for _ in range(100):
        core.receive_datagram(ping, THEM, 1.0)
    assert len(core.datagrams_to_send(1.0)) == 20
    assert core.statistics(1.0)["rate_limited"] == 80
    core.receive_datagram(ping, ("127.0.1.9", 1), 1.0)  # others unaffected
    assert len(core.datagrams_to_send(1.0)) == 1


def test_ignored_networks_default_only_for_public_binds() -> None:
    public = DHTCore(now=0.0, bind_ip="8.8.8.8")
    public.receive_datagram(b"garbage", ("192.168.1.1", 5), 0.0)
    assert public.statistics(0.0)["ignored"] == 1
    # a fleet on loopback or a private network keeps its ranges; never-unicast ones go
    assert not any(ipaddress.ip_address("127.0.1.9") in n for n in _core().ignored_net)
    assert not any(ipaddress.ip_address("10.1.2.3") in n for n in _core().ignored_net)
    assert any(ipaddress.ip_address("224.0.0.1") in n for n in _core().ignored_net)


@pytest.mark.parametrize("bind", ["0.0.0.0", "8.8.8.8"])
def test_a_dht_bound_to_any_address_ignores_btdhts_ranges(bind: str) -> None:
    """Issue 17: btdht's ``DHT_BASE.ignored_net`` is the default of a DHT on 0.0.0.0."""
    core = DHTCore(now=0.0, bind_ip=bind)
    assert [str(n) for n in core.ignored_net] == list(BTDHT_IGNORED_NET)
    ping = bencode({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": NID}})
    for ip in ("10.0.0.1", "127.0.0.1", "192.168.1.1", "198.51.100.7", "100.64.0.1"):
        core.receive_datagram(ping, (ip, 6881), 0.0)
    assert core.datagrams_to_send(0.0) == []
    core.receive_datagram(ping, ("8.8.4.4", 6881), 0.0)
    assert len(core.datagrams_to_send(0.0)) == 1
    assert DHTCore(now=0.0, bind_ip=bind, ignored_net=[]).ignored_net == []  # --no-ignore-net


def test_timeout_retries_once_then_counts_a_failure() -> None:
    core = _core(query_timeout=1.0)
    core.add_node(NID, THEM, 0.0)
    core.find_node(os.urandom(20), 0.0)
    assert len(core.datagrams_to_send(0.0)) == 1
    core.handle_timer(1.0)
    assert len(core.datagrams_to_send(1.0)) == 1  # the retry
    core.handle_timer(2.0)
    node = core.root.get_node(NID)
    assert node is not None
    assert node.failed == 1
    done = core.next_event()
    assert isinstance(done, LookupDone)
    assert done.nodes == []


def _network(size: int) -> MemNet:
    net = MemNet()
    addrs = [(f"127.0.1.{1 + i % 4}", 7000 + i) for i in range(size)]
    for addr in addrs:
        net.add(addr)
    first = net.cores[addrs[0]]
    for addr in addrs[1:]:
        net.cores[addr].bootstrap([addrs[0]], net.now)
        net.flush()
    # Bootstrapping only looks up one's own id, so a node that joined late may know
    # nobody in the far half of the id space until its buckets refresh (15 minutes in
    # a real network): then lookups from its corner can stall short of the target.
    # build_table is that refresh, done at once (1 in ~150 runs failed without it).
    for core in net.cores.values():
        core.build_table(net.now)
        net.flush()
    assert len(first.root) > 8
    return net


def test_announce_then_get_peers_in_a_network_of_60() -> None:
    net = _network(60)
    addrs = list(net.cores)
    ih = os.urandom(20)
    announcer, seeker = net.cores[addrs[10]], net.cores[addrs[50]]
    lid = announcer.announce_peer(ih, 5555, net.now)
    net.flush()
    [done] = [e for e in net.events[addrs[10]] if isinstance(e, AnnounceDone)]
    assert done.lookup_id == lid
    assert done.accepted >= 6
    lid = seeker.get_peers(ih, net.now)
    net.flush()
    found = [e for e in net.events[addrs[50]] if isinstance(e, PeersFound)]
    assert found[0].peers == [(addrs[10][0], 5555)]
    [end] = [e for e in net.events[addrs[50]] if isinstance(e, LookupDone) and e.lookup_id == lid]
    assert end.queries < 40
    # the lookup's hash registration was released and merged away later
    net.advance(6)
    assert not seeker.root.need_merge


def test_get_peers_limit_stops_early() -> None:
    net = _network(30)
    addrs = list(net.cores)
    ih = os.urandom(20)
    for addr in addrs[1:4]:
        net.cores[addr].announce_peer(ih, 1000 + addr[1], net.now)
    net.flush()
    seeker = net.cores[addrs[20]]
    lid = seeker.get_peers(ih, net.now, limit=1)
    net.flush()
    [end] = [e for e in net.events[addrs[20]] if isinstance(e, LookupDone) and e.lookup_id == lid]
    assert len(end.peers) >= 1
    assert seeker.lookups() == 0


def test_dead_nodes_become_bad_and_are_replaced() -> None:
    net = _network(40)
    addrs = list(net.cores)
    victim_addr = addrs[5]
    net.down.add(victim_addr)
    victim_id = net.cores[victim_addr].myid
    holders = [c for c in net.cores.values() if c.root.get_node(victim_id) is not None]
    assert holders
    for _ in range(3):
        for core in holders:
            core.find_node(victim_id, net.now)
        net.flush()
        net.advance(5, step=1.0)
    assert all(c.root.get_node(victim_id) is None for c in holders if c.myid != victim_id)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_core_survives_arbitrary_datagrams(data: bytes) -> None:
    core = _core()
    core.receive_datagram(data, THEM, 1.0)
    for reply, dst in core.datagrams_to_send(1.0):
        assert dst == THEM
        assert krpc.decode(reply)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"ping", b"find_node", b"get_peers", b"announce_peer", b"x"]),
    st.dictionaries(
        st.sampled_from([b"id", b"target", b"info_hash", b"port", b"token", b"implied_port"]),
        st.integers(-5, 70000) | st.binary(max_size=24) | st.just(NID),
    ),
)
def test_core_answers_every_query_shape(method: bytes, args: dict[bytes, object]) -> None:
    core = _core()
    core.receive_datagram(bencode({b"t": b"z", b"y": b"q", b"q": method, b"a": args}), THEM, 1.0)
    out = core.datagrams_to_send(1.0)
    assert len(out) == 1
    reply = krpc.decode(out[0][0])
    assert isinstance(reply, krpc.Response | krpc.Error)


@pytest.mark.parametrize("size", [0, 1])
def test_lookups_on_an_empty_table_finish_at_once(size: int) -> None:
    core = _core()
    if size:
        core.add_node(NID, THEM, 0.0)
        core.root.get_node(NID).failed = 3  # type: ignore[union-attr]
    lid = core.announce_peer(os.urandom(20), 1, 0.0)
    events = [core.next_event(), core.next_event()]
    assert any(isinstance(e, AnnounceDone) and e.lookup_id == lid for e in events)


def test_token_cache_follows_rotation() -> None:
    from smartget.dht.tokens import TOKEN_ROTATE, TOKEN_VALID, TokenManager

    now = 10_000.0
    tokens = TokenManager(now)
    first = tokens.get("127.0.1.7", now)
    assert tokens.get("127.0.1.7", now + 1) == first  # cached
    assert tokens.get("127.0.1.8", now + 1) != first
    later = now + TOKEN_ROTATE + 1
    second = tokens.get("127.0.1.7", later)
    assert second != first  # a new secret, a new token
    assert tokens.check(first, "127.0.1.7", later)  # the old one still holds
    assert not tokens.check(first, "127.0.1.7", now + TOKEN_ROTATE + TOKEN_VALID + 2)
    assert tokens.check(second, "127.0.1.7", later + 60)


def test_get_peers_replies_carry_the_closest_nodes_from_a_big_table() -> None:
    from smartget.dht.routing import Node

    core = _core(rate_limit=0, reply_rate=0)  # 100 replies to one unverified source
    for i in range(200):
        core.root.add(Node(os.urandom(20), "127.0.1.9", 1000 + i, last_response=1.0), 1.0)
    for i in range(100):
        ih = os.urandom(20)
        q = {b"t": b"%d" % i, b"y": b"q", b"q": b"get_peers", b"a": {b"id": NID, b"info_hash": ih}}
        reply = _ask(core, q)
        assert reply[b"t"] == b"%d" % i
        nodes = reply[b"r"][b"nodes"]
        got = {nodes[j : j + 26] for j in range(0, len(nodes), 26)}
        assert got == {n.compact_info() for n in core.root.get_closest_nodes(ih)}
        assert len(got) == 8
