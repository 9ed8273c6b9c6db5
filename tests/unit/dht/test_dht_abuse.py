"""Issue 12, item 9, on the sans-IO core: one IP cannot own a swarm, replies to sources
that never proved their address are bounded, and many source addresses cannot wipe the
per-IP rate table. A fake ``now``; no sockets."""

from __future__ import annotations

import itertools

from fastbencode import bdecode, bencode

from smartget.dht import krpc
from smartget.dht.core import DHTConfig, DHTCore
from smartget.dht.peers import PeerStore

IH = b"\x33" * 20
ATTACKER = "127.0.9.66"
REAL = ("127.0.9.7", 6881)
ASKER = ("127.0.9.8", 7000)
VICTIM = ("127.0.9.99", 9999)


def _core(**kw: object) -> DHTCore:
    return DHTCore(b"\x22" * 20, now=0.0, bind_ip="127.0.9.1", **kw)  # type: ignore[arg-type]


def _query(method: bytes, tid: bytes = b"aa", **args: object) -> bytes:
    a: dict[bytes, object] = {b"id": b"\x11" * 20}
    a.update({k.encode(): v for k, v in args.items()})
    return bencode({b"t": tid, b"y": b"q", b"q": method, b"a": a})


def _replies(core: DHTCore, now: float) -> list[dict]:  # type: ignore[type-arg]
    return [bdecode(data) for data, _ in core.datagrams_to_send(now)]


def _token(core: DHTCore, addr: tuple[str, int], now: float) -> bytes:
    core.receive_datagram(_query(b"get_peers", info_hash=IH), addr, now)
    [reply] = _replies(core, now)
    return reply[b"r"][b"token"]  # type: ignore[no-any-return]


def _verify(core: DHTCore, addr: tuple[str, int], now: float) -> None:
    """``addr`` answers a ping of ours: it proved it receives at that address."""
    core.ping(addr, now)
    [(data, dst)] = core.datagrams_to_send(now)
    assert dst == addr
    tid = bdecode(data)[b"t"]
    reply = bencode({b"t": tid, b"y": b"r", b"r": {b"id": b"\x44" * 20}})
    core.receive_datagram(reply, addr, now)


def test_one_ip_with_one_token_holds_one_entry_per_info_hash() -> None:
    core = _core(rate_limit=0)
    token = _token(core, (ATTACKER, 5000), 1.0)
    for port in range(1, 2001):  # the issue: 2,000 announces filled every slot
        core.receive_datagram(
            _query(b"announce_peer", info_hash=IH, port=port, token=token), (ATTACKER, 5000), 1.0
        )
    assert all(b"r" in r for r in _replies(core, 1.0))  # answered, as libtorrent does
    real_token = _token(core, REAL, 2.0)
    core.receive_datagram(
        _query(b"announce_peer", info_hash=IH, port=REAL[1], token=real_token), REAL, 2.0
    )
    _replies(core, 2.0)
    peers = core.peers.get(IH, 3.0)
    assert REAL in peers
    assert [p for p in peers if p[0] == ATTACKER] == [(ATTACKER, 2000)]  # the latest port
    assert len(peers) == 2


def test_one_ip_cannot_fill_the_store_across_info_hashes() -> None:
    store = PeerStore(max_per_ip=10)
    for i in range(50):
        store.add(i.to_bytes(20, "big"), (ATTACKER, 1), 0.0)
    assert len(store) == 10
    store.add(IH, REAL, 0.0)  # others still get in
    assert store.get(IH, 1.0) == [REAL]
    store.add((3).to_bytes(20, "big"), (ATTACKER, 2), 0.0)  # a known pair: a new port is fine
    assert store.get((3).to_bytes(20, "big"), 1.0) == [(ATTACKER, 2)]


def _swarm(core: DHTCore, size: int) -> None:
    for i in range(size):
        core.peers.add(IH, (f"10.1.{i // 250}.{i % 250 + 1}", 6881), 0.0)


def test_get_peers_replies_to_an_unverified_source_are_small() -> None:
    core = _core(rate_limit=0)
    _swarm(core, 200)
    query = _query(b"get_peers", info_hash=IH)
    core.receive_datagram(query, VICTIM, 1.0)
    [(data, _)] = core.datagrams_to_send(1.0)
    # the issue: 95 B answered with 1,105 B; BEP 5 always sends 8 nodes and a token,
    # so the bound is on what we add: a few peers, not a hundred
    assert len(data) <= 5 * len(query), (len(query), len(data))
    assert 0 < len(bdecode(data)[b"r"][b"values"]) <= 16
    # a source that answered one of our queries gets the whole sample
    _verify(core, ASKER, 1.0)
    core.receive_datagram(query, ASKER, 1.0)
    [reply] = _replies(core, 1.0)
    assert len(reply[b"r"][b"values"]) == 100


def test_an_unverified_source_gets_a_bounded_number_of_bytes() -> None:
    config = DHTConfig()
    core = _core()  # the defaults, rate limit included
    _swarm(core, 200)
    query = _query(b"get_peers", info_hash=IH)
    received = 0
    now = 1.0
    for i in range(2000):  # 2 s of a spoofed flood at 1,000 queries/s
        now = 1.0 + i / 1000
        core.receive_datagram(query, VICTIM, now)
        received += sum(len(d) for d, _ in core.datagrams_to_send(now))
    # the issue: 862 KiB in 2 s; now the byte budget's burst plus 2 s of its rate
    assert received <= config.reply_burst + 2 * config.reply_rate + 2048, received
    assert core.statistics(now)["reply_budget_exceeded"] > 0
    # a verified source is not held to that budget (only to the query rate)
    _verify(core, ASKER, now)
    got = 0
    for _ in range(100):
        core.receive_datagram(query, ASKER, now)
        got += len(core.datagrams_to_send(now))
    assert got == 100


def test_a_valid_token_verifies_its_ip() -> None:
    core = _core(rate_limit=0)
    _swarm(core, 200)
    token = _token(core, ASKER, 1.0)
    core.receive_datagram(_query(b"announce_peer", info_hash=IH, port=1, token=token), ASKER, 1.0)
    _replies(core, 1.0)
    core.receive_datagram(_query(b"get_peers", info_hash=IH), ASKER, 1.0)
    [reply] = _replies(core, 1.0)
    assert len(reply[b"r"][b"values"]) == 100


def test_many_source_addresses_do_not_wipe_the_rate_table() -> None:
    core = _core(rate_limit=10.0, rate_burst=20.0)
    ping = _query(b"ping")
    for _ in range(25):
        core.receive_datagram(ping, VICTIM, 1.0)
    assert len(core.datagrams_to_send(1.0)) == 20  # the victim's bucket is empty
    # a spoofer sends from more addresses than the table holds, in the same instant
    table = 50_000  # DHTConfig().max_sources, checked below
    for i in range(table + 10):
        core.receive_datagram(ping, (f"11.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1), 1.0)
        if i % 4096 == 0:
            core.datagrams_to_send(1.0)
    core.datagrams_to_send(1.0)
    core.receive_datagram(ping, VICTIM, 1.0)
    assert core.datagrams_to_send(1.0) == []  # still limited: its entry was not forgotten
    assert core.statistics(1.0)["source_table_full"] > 0
    assert DHTConfig().max_sources == table


def test_transaction_ids_are_not_predictable() -> None:
    core = _core()
    tids = []
    for i in range(64):
        core.ping((f"127.0.9.{i + 10}", 1), 1.0)
        [(data, _)] = core.datagrams_to_send(1.0)
        tids.append(int.from_bytes(bdecode(data)[b"t"], "big"))
    steps = {(b - a) & 0xFFFF for a, b in itertools.pairwise(tids)}
    assert len(steps) > 8  # not a counter: a spoofer cannot guess the next one


def test_compact_peers_roundtrip_still_hold() -> None:
    assert krpc.decode_peers([krpc.compact_addr(REAL)]) == [REAL]
