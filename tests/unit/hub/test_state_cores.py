"""The Redis engine's pure logic: key layout, rotation order, --state, the lease."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import ConfigError, NodeExistsError, NodeNotFoundError, RegistryError
from smartget.hub import textproto as tp
from smartget.hub.registry import Node
from smartget.hub.state.functions import LIBRARY
from smartget.hub.state.keys import Keys, member_id, node_from_record, parse_state, rotation_member
from smartget.hub.state.lease import Lease
from smartget.hub.state.redisengine import check_durability, redis_password
from smartget.hub.textserver import remote_reply


def test_every_key_carries_the_fleet_hash_tag() -> None:
    keys = Keys()
    names = [keys.next_id, keys.node(7), keys.all, keys.free, keys.free_zone("eu"), keys.alive]
    names += [keys.zombies, keys.stat, keys.log, keys.hubs, keys.sweep_lease]
    # Redis Cluster hashes only what is between the first { and the next }.
    assert all(name.split("{", 1)[1].split("}", 1)[0] == "fleet" for name in names)
    assert Keys("other").node(1) == "sg:{other}:n:1"


@given(st.integers(0, 10**15), st.integers(0, 10**15), st.integers(1, 10**9))
def test_rotation_members_sort_by_their_counter(a: int, b: int, node_id: int) -> None:
    ma, mb = rotation_member(a, node_id), rotation_member(b, node_id + 1)
    assert (ma < mb) == (a < b) or a == b
    assert member_id(ma) == node_id


def test_the_lua_member_format_matches() -> None:
    # functions.py writes string.format('%016.0f', seq) .. ':' .. id
    assert "string.format('%016.0f', seq) .. ':' .. id" in LIBRARY
    assert rotation_member(42, 7) == "0000000000000042:7"


def test_node_records() -> None:
    node = node_from_record(["3", "10.0.0.1", "80", "", "2", "eu", "6881", "", ""])
    assert node == Node(3, "10.0.0.1", 80, "", 2, "eu", 6881, "", "")


@pytest.mark.parametrize(
    ("value", "url", "tls"),
    [
        ("redis://127.0.0.1:6380/2", "redis://127.0.0.1:6380/2", False),
        ("redis://cache.example", "redis://cache.example:6379/0", False),
        ("rediss://user@cache.example:6390/1", "rediss://user@cache.example:6390/1", True),
    ],
)
def test_parse_state(value: str, url: str, tls: bool) -> None:
    parsed = parse_state(value)
    assert parsed.is_redis
    assert parsed.url == url
    assert parsed.tls is tls
    assert not parse_state("sqlite").is_redis


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("redis://:pw@h:1/0", "SMARTGET_REDIS_PASSWORD"),
        ("mysql://h/0", "sqlite or redis://"),
        ("redis://h:1/x", "database is a number"),
        ("redis://h:99999/0", "--state"),
        ("redis:///0", "needs a host"),
    ],
)
def test_parse_state_refuses(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_state(value)


def test_durability_check() -> None:
    assert check_durability({"appendonly": "yes", "appendfsync": "always"}) == []
    (everysec,) = check_durability({"appendonly": "yes", "appendfsync": "everysec"})
    assert "up to a second" in everysec
    (off,) = check_durability({"appendonly": "no", "appendfsync": "always"})
    assert "appendonly yes" in off


def test_password_from_file_or_environment(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert redis_password(secret, {"SMARTGET_REDIS_PASSWORD": "env"}) == "s3cret"
    assert redis_password(None, {"SMARTGET_REDIS_PASSWORD": "env"}) == "env"
    assert redis_password(None, {}) is None
    with pytest.raises(ConfigError, match="--redis-password-file"):
        redis_password(tmp_path / "missing", {})


def test_the_lease_is_counted_from_when_the_try_was_sent() -> None:
    lease = Lease(ttl=5.0, margin=1.0)
    assert not lease.holds(0.0)
    assert lease.answered(sent=10.0, granted=True, now=10.3)  # taken over
    assert lease.holds(13.9)
    assert not lease.holds(14.0)  # sent + ttl - margin: never longer than Redis's view
    assert not lease.answered(sent=11.6, granted=True, now=11.7)  # a renewal
    assert lease.holds(15.5)
    assert lease.takeovers == 1


def test_a_refused_or_unanswered_try_stops_the_sweeps_at_once() -> None:
    lease = Lease(ttl=5.0, margin=1.0)
    lease.answered(0.0, True, 0.1)
    lease.answered(1.0, False, 1.1)  # another hub holds it now
    assert not lease.holds(1.2)
    lease.answered(2.0, True, 2.1)
    lease.failed()  # Redis did not answer: it may have lapsed
    assert not lease.holds(2.2)
    assert lease.next_try(3.0) == pytest.approx(3.0 + 5.0 / 3)


def test_a_lease_needs_a_margin_below_its_time() -> None:
    with pytest.raises(ValueError, match="margin"):
        Lease(ttl=1.0, margin=1.0)


def test_remote_replies_are_the_same_bytes() -> None:
    node = Node(4, "10.0.0.1", 80)
    assert remote_reply(tp.Register(80), node) == b"200 OK\r\n4\r\n"
    exists = NodeExistsError("x")
    assert remote_reply(tp.Register(80), exists) == b"400 BAD REQUEST\r\nNode already exists!\r\n"
    missing = NodeNotFoundError("no node is registered at 10.0.0.1:80")
    assert remote_reply(tp.Deregister(80), missing) == b"404 NOT FOUND\r\n"
    assert remote_reply(tp.Deregister(80), node) == b"200 OK\r\n"
    assert remote_reply(tp.RequestNodes(2), []) == b"404 NOT FOUND\r\n"
    assert remote_reply(tp.RequestNodes(2), [node]) == b"200 OK\r\n10.0.0.1 80\r\n"
    assert remote_reply(tp.SetStatus(4, 2), None) == b"200 OK\r\n"
    assert remote_reply(tp.SetStatus(4, -7), None) == (
        b"400 BAD REQUEST\r\nstatus must be from -1 to 1000000, got -7\r\n"
    )
    assert remote_reply(tp.SetStatus(9, 1), RegistryError("no node has id 9")) == (
        b"400 BAD REQUEST\r\nno node has id 9\r\n"
    )
    assert remote_reply(tp.StartSession(), None) == b"200 OK\r\n"
