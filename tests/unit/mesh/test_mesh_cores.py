"""The mesh's sans-IO cores beside the router: packets, policy, link session, registry."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import pytest

from smartget.errors import AuthError
from smartget.mesh import session as ss
from smartget.mesh.datapack import Datapack, Received, encode, encode_head
from smartget.mesh.policy import Policy, final_destination
from smartget.mesh.registry import DialBook, LinkRegistry
from smartget.mesh.replay import ReplayCache, parse_record


def test_datapack_is_immutable_and_copies_its_head() -> None:
    head = {"to": "b"}
    dp = Datapack("post", "x", head, b"1")
    head["to"] = "c"
    assert dp.head["to"] == "b"
    with pytest.raises(TypeError):
        dp.head["to"] = "c"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        dp.body = b"2"  # type: ignore[misc]
    changed = dp.with_head({"hops": "1"}, drop=("to",))
    assert (dict(dp.head), dict(changed.head)) == ({"to": "b"}, {"hops": "1"})
    assert dp.with_defaults({"to": "z"}) is dp


def test_received_reads_through_to_its_packet() -> None:
    dp = Datapack("post", "x", {"id": "a", "flag": "f", "from": "app"}, b"hi")
    got = Received(dp, origin="a", via="a")
    assert (got.method, got.app, got.body, got.flag, got.file) == ("post", "x", b"hi", "f", None)
    assert got.reply(b"ok").head == {"from": "x", "to": "a", "re": "f"}


def test_policy_closed_apps_ruled_apps_and_signing() -> None:
    policy = Policy("e", {"shell": ["a"]})
    signed = Datapack("post", "shell", {"id": "a", "sig": "s", "dest": "e"})
    assert policy.authorize(signed, "d", app_verifies=False, verify=lambda dp, age: "a") == "a"
    with pytest.raises(AuthError, match="may not use"):
        policy.authorize(signed, "d", app_verifies=False, verify=lambda dp, age: "b")
    # Signed for another node (or for nothing): a replay, refused by every app.
    for dest in ("f", "", "*", "c&*"):
        elsewhere = Datapack("post", "logger", {"id": "a", "sig": "s", "dest": dest})
        with pytest.raises(AuthError, match="refused as a replay"):
            policy.authorize(elsewhere, "d", app_verifies=False, verify=lambda dp, age: "a")
    broadcast = Datapack("post", "logger", {"id": "a", "sig": "s", "dest": "d&*"})
    assert policy.authorize(broadcast, "d", app_verifies=False, verify=lambda dp, a: "a") == "a"
    with pytest.raises(AuthError, match="needs a proven sender"):
        policy.authorize(Datapack("post", "update", {"id": "a"}), "d", app_verifies=False,
                         verify=lambda dp, age: "a")  # fmt: skip
    open_app = Datapack("post", "logger", {"id": "a"})
    assert policy.authorize(open_app, "d", app_verifies=True, verify=lambda dp, age: "a") is None
    assert policy.authorize(open_app, "a", app_verifies=False, verify=lambda dp, age: "x") == "a"
    assert policy.must_sign(Datapack("post", "x", {"to": "b&c"}), {"b"})
    assert not policy.must_sign(Datapack("post", "x", {"to": "b"}), {"b"})
    assert policy.must_sign(Datapack("post", "shell", {"to": "b"}), {"b"})


def test_final_destination_is_what_the_signature_names() -> None:
    assert final_destination("b") == "b"
    assert final_destination("a&b&c") == "c"
    assert final_destination("*") == "*"
    assert final_destination("a&b&*") == "b&*"
    assert final_destination("") == ""


def test_replay_cache_admits_once_per_window_and_bounds_each_signer() -> None:
    cache = ReplayCache(600, max_entries=5, per_signer=3)
    line = cache.admit("ops", "f1", stamp=1000, now=1000)
    assert parse_record(line) == (1600.0, "ops", "f1")
    with pytest.raises(AuthError, match="replay"):
        cache.admit("ops", "f1", stamp=1000, now=1500)
    cache.admit("ops", "f2", 1000, 1000)
    cache.admit("ops", "f3", 1000, 1000)
    with pytest.raises(AuthError, match="more than 3"):
        cache.admit("ops", "f4", 1000, 1000)  # ops is over its share; others are not
    cache.admit("beta", "f1", 1000, 1000)
    cache.admit("beta", "f2", 1000, 1000)
    with pytest.raises(AuthError, match="full"):
        cache.admit("gamma", "f1", 1000, 1000)
    with pytest.raises(AuthError, match="flag"):
        cache.admit("gamma", "a b", 1000, 1000)
    cache.admit("ops", "f1", stamp=1700, now=1700)  # expired: the signature is checked by age
    assert len(cache) == 1
    again = ReplayCache(600)
    again.load([(1600.0, "ops", "f1"), (2300.0, "ops", "f1"), (900.0, "x", "y")], now=1000)
    assert again.seen("ops", "f1", 1500)
    assert not again.seen("x", "y", 1000)
    assert parse_record("12 a b c") is None
    assert parse_record("x ops f") is None


def test_session_holds_packets_behind_a_file_until_it_is_checked() -> None:
    session = ss.LinkSession()
    body = b"0123456789"
    head = {"filename": "a/b.bin", "sha256": hashlib.sha256(body).hexdigest()}
    wire = (
        encode(Datapack("post", "x", {}, b"first"))
        + encode_head(Datapack("file", "x", head), len(body))
        + body
        + encode(Datapack("post", "x", {}, b"after"))
    )
    events = session.receive_data(wire)
    kinds = [type(e) for e in events]
    assert kinds == [ss.LinkUp, ss.Packet, ss.FileBegun, ss.FileData, ss.FileEnded]
    assert session.receive_data(encode(Datapack("post", ss.BYE_APP))) == []  # held
    later = session.file_checked()
    assert [type(e) for e in later] == [ss.Packet, ss.PeerRetired]
    assert isinstance(later[0], ss.Packet)
    assert later[0].datapack.body == b"after"


def test_session_refuses_a_file_leading_outside_and_skips_its_bytes() -> None:
    session = ss.LinkSession()
    head = {"filename": "../x", "sha256": "0" * 64}
    wire = encode_head(Datapack("file", "x", head), 3) + b"abc" + encode(Datapack("post", "x"))
    events = session.receive_data(wire)
    assert [type(e) for e in events] == [ss.FileRefused, ss.LinkUp, ss.Packet]


def test_session_outbox_batches_small_packets_and_hands_out_files() -> None:
    session = ss.LinkSession()
    for i in range(3):
        session.queue(Datapack("post", "x", {"n": str(i)}))
    session.queue(Datapack("file", "x", {}, file="/f"))
    session.queue(Datapack("post", "x"))
    data, count = session.next_batch()
    assert count == 3
    assert data.count(b"post x msw/0.1") == 3
    assert session.next_batch() == (b"", 0)
    assert session.next_file() is not None
    assert session.queued == 1


@dataclass(eq=False)
class FakeLink:
    peer_id: str
    dialed: bool
    up: bool = True
    retiring: bool = False


def test_registry_keeps_the_link_dialed_by_the_smaller_id_on_both_ends() -> None:
    for me, peer in (("a", "b"), ("b", "a")):
        registry: LinkRegistry[FakeLink] = LinkRegistry(me)
        mine, theirs = FakeLink(peer, dialed=True), FakeLink(peer, dialed=False)
        for link in (mine, theirs):
            registry.made(link)
        assert registry.up(mine).new
        outcome = registry.up(theirs)
        kept = mine if me < peer else theirs  # the one "a" dialed, seen from either end
        assert not outcome.new
        assert outcome.retire is (theirs if kept is mine else mine)
        assert registry.links[peer] is kept


def test_registry_moves_to_the_other_link_when_the_peer_retires_one() -> None:
    registry: LinkRegistry[FakeLink] = LinkRegistry("a")
    one, two = FakeLink("b", dialed=True), FakeLink("b", dialed=False)
    for link in (one, two):
        registry.made(link)
    registry.up(one)
    assert not registry.retired_by_peer(one)
    assert registry.links["b"] is two
    assert registry.lost(two)
    assert "b" not in registry.links


def test_dial_book_limits_dials_and_skips_ourselves() -> None:
    book = DialBook("me", max_dialing=1)
    assert book.start("h", 1)
    assert not book.start("h", 1)
    assert not book.start("h", 2)
    book.learned("h", 1, "me")
    book.finished("h", 1)
    book.learned("h", 2, "p")
    assert book.to_redial([("h", 1), ("h", 2), ("h", 3)], ["p"]) == [("h", 3)]
